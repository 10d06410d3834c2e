"""Why sdpa_math/plain/3136/compiled ran 14.6 % slower in the suite than in the study's loop.

Same process, same attention callable, seq 3136 full config. Times and profiles:
  suite-regional  the suite's model, each block compiled (the timed cell), TrainStep rounds of 3
  suite-whole     the suite's model compiled whole, run by the study's loop
  study-whole     the study's model compiled whole, run by the study's loop (the yardstick)
and lists the attention-like kernels each ran, to see whether a compiler rewrite took place.
Run: PYTHONPATH=. python3 results/h200/2026-12-01/matrix/math_compile_diag.py [impl]
"""
import statistics
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from attn_bench.kernels import ATTENTION_LIKE
from attn_bench.model import TrainStep, build_model, compile_blocks, get_config, synchronize, synthetic_batch
from attn_bench.study import study_model, study_train_loop
from attn_impls import REGISTRY, AttnShape

import os
DEVICE = os.environ.get("DIAG_DEVICE", "cuda")
impl = REGISTRY[sys.argv[1] if len(sys.argv) > 1 else "sdpa_math"]
cfg = get_config(os.environ.get("DIAG_PROFILE", "full"), 3136)
attention = impl.factory("plain", AttnShape(cfg.heads, cfg.head_dim, cfg.seq_len, DEVICE))
images, labels = synthetic_batch(cfg, DEVICE)


def names_of(fn):
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEVICE == "cuda" else [])) as prof:
        fn()
        synchronize(DEVICE)
    by_name = {}
    for e in prof.events():
        if ATTENTION_LIKE.search(e.name) or "mm" in e.name.lower():
            by_name[e.name[:90]] = by_name.get(e.name[:90], 0) + 1
    return sorted(by_name.items(), key=lambda kv: -kv[1])[:12]


def suite_regional():
    torch._dynamo.reset()
    model = build_model(cfg, attention, impl.layout, DEVICE)
    compile_blocks(model)
    step = TrainStep(model, images, labels, DEVICE)
    for _ in range(6):
        step()
    step.sync_every = 3
    times = []
    for _ in range(10):
        start = time.perf_counter()
        for _ in range(3):
            step()
        times.append((time.perf_counter() - start) / 3 * 1e3)
    return statistics.median(times), names_of(step)


def by_study_loop(model):
    torch._dynamo.reset()
    result = study_train_loop(model, images, labels, DEVICE, steps=30, compile=True, warmup=6)
    names = names_of(lambda: study_train_loop(model, images, labels, DEVICE, steps=1, compile=True, warmup=0))
    return result["median_ms"], names


rows = [("suite-regional", *suite_regional()),
        ("suite-whole", *by_study_loop(build_model(cfg, attention, impl.layout, DEVICE))),
        ("study-whole", *by_study_loop(study_model(cfg, attention, impl.layout, DEVICE)))]
for name, ms, names in rows:
    print(f"\n{impl.id} {name}: median {ms:.2f} ms")
    for n, count in names:
        print(f"    {count:4d}  {n}")
print("\nsummary: " + "; ".join(f"{name} {ms:.2f} ms" for name, ms, _ in rows))
