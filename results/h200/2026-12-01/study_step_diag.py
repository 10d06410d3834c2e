"""Diagnose the suite's training step against the study's, on a GPU (results/h200/2026-12-01/study-step-diag.txt).

1. The residual add in both operand orders (bf16 + fp32 as the study writes it, fp32 + bf16
   as the suite did), forward and backward at (128, 196, 1024): CUDA time per kernel.
2. Whole training steps, same process, same attention callable: the suite's step
   (model.TrainStep, regional compile), the suite's previous block order, and the study's own
   model and loop (study.py, whole-model torch.compile), eager and compiled.

    PYTHONPATH=. python results/h200/2026-12-01/study_step_diag.py [--impls native,sdpa_cudnn] [--seq-lens 196,3136] [--steps 15]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

import attn_bench.model as model_module
from attn_bench.model import (
    CONFIGS,
    AttentionBlock,
    TrainStep,
    build_model,
    compile_blocks,
    merge_heads,
    split_qkv,
    synthetic_batch,
)
from attn_bench.study import study_model, study_train_loop
from attn_impls import REGISTRY, AttnShape


class PreviousOrderBlock(AttentionBlock):
    """The suite's block before 2026-12-01: `x_in + proj(x)` (fp32 + bf16)."""

    def forward(self, x_in):
        B, S, C = x_in.shape
        qkv_bs3hd = self.qkv(self.norm1(x_in)).reshape(B, S, 3, self.heads, C // self.heads)
        x = merge_heads(self.attention(*split_qkv(qkv_bs3hd, self.layout)), self.layout)
        x = x_in + self.proj(x)
        return x + self.mlp(self.norm2(x))


def add_order_kernels():
    dev = "cuda"
    x_in = torch.randn(128, 196, 1024, device=dev, requires_grad=True)
    lin = torch.nn.Linear(1024, 1024, device=dev)
    h = torch.randn(128, 196, 1024, device=dev)
    for order in ("proj(x) + x_in (study)", "x_in + proj(x) (previous suite)"):
        def run(order=order):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                y = lin(h)
                out = y + x_in if order.startswith("proj") else x_in + y
            out.backward(torch.ones_like(out))
        for _ in range(3):
            run()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                run()
            torch.cuda.synchronize()
        print(f"\n== {order}: kernels, CUDA us per call (10 calls)")
        rows = [(e.key, e.device_time_total / 10, e.count / 10) for e in prof.key_averages()
                if e.device_time_total > 0 and not e.key.startswith("aten::")]
        for key, us, count in sorted(rows, key=lambda r: -r[1])[:12]:
            print(f"  {us:9.1f} us  x{count:.0f}  {key[:150]}")


def time_suite(model, cfg, steps, warmup):
    images, labels = synthetic_batch(cfg, "cuda")
    step = TrainStep(model, images, labels, "cuda")
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--impls", default="native,sdpa_cudnn")
    p.add_argument("--seq-lens", default="196,3136")
    p.add_argument("--compiled-impls", default="sdpa_cudnn")
    p.add_argument("--steps", type=int, default=15)
    args = p.parse_args()
    add_order_kernels()
    rows = []
    for seq_len in map(int, args.seq_lens.split(",")):
        cfg = CONFIGS["full"][seq_len]
        for impl_id in args.impls.split(","):
            impl = REGISTRY[impl_id]
            attention = impl.factory("plain", AttnShape(cfg.heads, cfg.head_dim, seq_len, "cuda"))
            modes = ("eager", "compiled") if impl_id in args.compiled_impls.split(",") else ("eager",)
            for mode in modes:
                torch._dynamo.reset()
                model = build_model(cfg, attention, impl.layout, "cuda")
                if mode == "compiled":
                    compile_blocks(model)
                suite_ms = time_suite(model, cfg, args.steps, 5)
                del model
                previous_ms = float("nan")
                if mode == "eager":
                    model_module.AttentionBlock = PreviousOrderBlock  # build_model reads it at call time
                    try:
                        model = build_model(cfg, attention, impl.layout, "cuda")
                    finally:
                        model_module.AttentionBlock = AttentionBlock
                    assert isinstance(model.blocks[0], PreviousOrderBlock)
                    previous_ms = time_suite(model, cfg, args.steps, 5)
                    del model
                torch._dynamo.reset()
                model = study_model(cfg, attention, impl.layout, "cuda")
                images, labels = synthetic_batch(cfg, "cuda")
                t = time.perf_counter()
                res = study_train_loop(model, images, labels, "cuda", steps=args.steps,
                                       compile=mode == "compiled", warmup=5)
                del model
                torch.cuda.empty_cache()
                rows.append((seq_len, impl_id, mode, suite_ms, previous_ms, res["median_ms"], res["mean_ms"],
                             time.perf_counter() - t))
                print(rows[-1], flush=True)
    print("\nseq  impl        mode      suite_ms  prev_order_ms  study_median  study_mean  suite/study-1")
    for seq_len, impl_id, mode, s, prev, sm, mean, _ in rows:
        print(f"{seq_len:<4} {impl_id:<11} {mode:<9} {s:8.2f}  {prev:13.2f}  {sm:12.2f}  {mean:10.2f}  "
              f"{(s / sm - 1) * 100:+6.2f}%")


if __name__ == "__main__":
    main()
