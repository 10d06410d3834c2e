"""The study's own model and training loop, transcribed: the yardstick the suite is measured against.

The study ("Increasing Transformer Model Efficiency Through Attention Layer Optimization",
C. Rand, 2024) defines a ViT block that takes an attention function, a timm
`VisionTransformer` built with that block, and a training loop: bf16 autocast,
`nn.CrossEntropyLoss`, `torch.optim.SGD(model.parameters())` with its default learning
rate, `torch.set_float32_matmul_precision("high")`, `torch.compile(model)` for the
compiled runs, and the mean step time after 20 warm-up steps, timed with
`time.perf_counter()` between steps with no synchronization inside the loop.

`StudyAttentionBlock` and `study_train_loop` follow that code statement for statement,
with two changes, both said where they happen:
- the batch is one fixed batch already on the device, instead of the study's DataLoader
  of random images copied to the GPU each step (no input pipeline is timed);
- the loop synchronizes the device once after it, outside the timing.
Without synchronization the host runs a few steps ahead of the device; in steady state each
host step waits for the device, so the per-step host times are the device's step times.

The suite's own model (`attn_bench.model`) must compute what this one computes:
`tests/test_study.py` checks outputs and gradients from the same weights, so the two
cannot drift apart, and `--attn-study` times this loop next to each PyTorch cell.
"""
from __future__ import annotations

import functools
import statistics
import time

import torch
import torch.nn as nn
from timm.layers import Mlp
from timm.models.vision_transformer import VisionTransformer

from .model import TIMED_MATMUL_PRECISION, VitConfig, float32_matmul_precision, synchronize

STUDY_WARMUP_STEPS = 20  # the study skips its first steps ("if step > 20")


class StudyAttentionBlock(nn.Module):
    """The study's block, as written there (its names, its statement order)."""

    def __init__(self, attn_fn, format=None, dim: int = 768, num_heads: int = 12, **kwargs) -> None:
        super().__init__()
        self.attn_fn = attn_fn
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.mlp = Mlp(in_features=dim, hidden_features=dim * 4)
        permute = (2, 0, 3, 1, 4)
        self.permute_attn = functools.partial(torch.transpose, dim0=1, dim1=2)
        if format == "bshd":
            permute = (2, 0, 1, 3, 4)
            self.permute_attn = nn.Identity()
        self.permute_qkv = functools.partial(torch.permute, dims=permute)

    def forward(self, x_in: torch.Tensor) -> torch.Tensor:
        # norm
        x = self.norm1(x_in)
        B, N, C = x.shape
        # qkv
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim)
        qkv = self.permute_qkv(qkv)
        q, k, v = qkv.unbind(0)
        # attention
        x = self.attn_fn(q, k, v)
        x = self.permute_attn(x).reshape(B, N, C)
        # projection and residual
        x = self.proj(x)
        x = x + x_in
        # mlp and residual
        x = x + self.mlp(self.norm2(x))
        return x


def study_model(cfg: VitConfig, attn_fn, layout: str, device: str, seed: int = 0) -> VisionTransformer:
    """The study's `VisionTransformer(..., block_fn=partial(MyAttentionBlock, ...))` for `cfg`."""
    torch.random.manual_seed(seed)
    block_fn = functools.partial(StudyAttentionBlock, attn_fn=attn_fn, format=layout)
    model = VisionTransformer(
        img_size=cfg.img_size,
        patch_size=cfg.patch_size,
        embed_dim=cfg.heads * cfg.head_dim,
        depth=cfg.depth,
        num_heads=cfg.heads,
        class_token=False,
        global_pool="avg",
        block_fn=block_fn,
    ).to(device)
    return model


def study_train_loop(model: nn.Module, inputs: torch.Tensor, label: torch.Tensor, device: str,
                     steps: int, compile: bool = False, warmup: int = STUDY_WARMUP_STEPS) -> dict:
    """The study's training loop on one fixed on-device batch (instead of its DataLoader).

    Returns the per-step times after `warmup` steps (`step_ms`), their mean (the study's
    statistic, `mean_ms`) and median (`median_ms`), and the loss of the last step.
    The float32 matmul precision is the study's "high" during the loop.
    """
    # The study sets this once, before building its model.
    with float32_matmul_precision(TIMED_MATMUL_PRECISION):
        if compile:
            model = torch.compile(model)
        criterion = torch.nn.CrossEntropyLoss()
        optimizer = torch.optim.SGD(model.parameters())
        model.train()
        device_type = device.split(":")[0]
        step_s = []
        t0 = time.perf_counter()
        for step in range(warmup + steps):
            with torch.amp.autocast(device_type, enabled=True, dtype=torch.bfloat16):
                outputs = model(inputs)
                loss = criterion(outputs, label)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            batch_time = time.perf_counter() - t0
            if step >= warmup:
                step_s.append(batch_time)
            t0 = time.perf_counter()
    synchronize(device)  # after the timing, as the study's loop has none
    return {"step_ms": [s * 1e3 for s in step_s], "mean_ms": statistics.fmean(step_s) * 1e3,
            "median_ms": statistics.median(step_s) * 1e3, "loss": float(loss.detach())}
