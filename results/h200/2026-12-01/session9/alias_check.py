"""Does Inductor's on-disk cache serve one pinned SDPA backend's graph to another (pytorch/pytorch#185449)?

    TORCHINDUCTOR_CACHE_DIR=DIR python alias_check.py BACKEND   (flash, cudnn, math, efficient)

Compiles attention fwd+bwd at the suite's seq-196 kernel shape, bf16, CUDA, in two ways, and
prints the SDPA aten ops that ran (torch profiler) and the cache counters:
- "outside": `sdpa_kernel` around the compiled call, as in the pytorch issue's repro;
- "suite": the suite's own adapter (attn_impls/sdpa.py), with `sdpa_kernel` inside the compiled function.
Run it once per backend, one process after another, with one shared cache folder: a later
backend that prints an earlier backend's op was served the earlier compiled graph.
"""
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from attn_impls import AttnShape, get_impl

BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "math": SDPBackend.MATH, "efficient": SDPBackend.EFFICIENT_ATTENTION}


def ops_run(fn, q) -> list[str]:
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn(q, q, q).float().sum().backward()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    c = torch._dynamo.utils.counters
    names = sorted({e.name for e in prof.events() if "scaled_dot_product" in e.name or e.name == "aten::bmm"})
    return names, {k: v for k, v in {**c["inductor"], **c["aot_autograd"]}.items() if "cache" in k}


def main(name: str) -> None:
    backend = BACKENDS[name]
    device = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: a dry run of the script (flash, math)
    batch = 128 if device == "cuda" else 2
    q = torch.randn(batch, 16, 196, 64, device=device, dtype=torch.bfloat16, requires_grad=True)

    compiled = torch.compile(lambda a, b, c: F.scaled_dot_product_attention(a, b, c))

    def outside(a, b, c):
        with sdpa_kernel([backend]):
            return compiled(a, b, c)

    suite_fn = torch.compile(get_impl(f"sdpa_{name}").factory("plain", AttnShape(16, 64, 196, device)))
    for how, fn in (("outside", outside), ("suite", suite_fn)):
        ops, cache = ops_run(fn, q)
        print(f"{name:9s} {how:8s} ops={ops} cache={cache}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
