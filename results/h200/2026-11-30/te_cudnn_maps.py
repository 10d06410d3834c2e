"""Run TE's fused attention once and list the cuDNN libraries the process has loaded."""
import torch

from attn_impls import te
from attn_impls.registry import AttnShape

q, k, v = (torch.randn(2, 196, 16, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
print("MAPS probe:", te.TE_FUSED.probe("cuda") or "available")
try:
    te.TE_FUSED.factory("plain", AttnShape(16, 64, 196, "cuda"))(q, k, v)
    print("MAPS fused ran")
except Exception as e:  # noqa: BLE001
    print("MAPS fused failed:", str(e)[:100])
with open("/proc/self/maps") as maps:
    for path in sorted({line.split()[-1] for line in maps if "cudnn" in line}):
        print("MAPS", path)
