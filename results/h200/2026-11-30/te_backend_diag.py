"""Ask Transformer Engine which attention backend it picks for the suite's inputs, and why not.

Runs TE's DotProductAttention (through the suite's adapter) on bf16 q/k/v in the three
memory forms the suite produces: contiguous bshd, a bhsd tensor transposed to bshd (what
attention parity passes), and views of one packed qkv buffer (what the ViT block passes).
Run it with NVTE_DEBUG=1 NVTE_DEBUG_LEVEL=2 to get TE's own reasons in the log.

    python scripts/te_backend_diag.py [SEQ_LEN ...]
"""
import sys

import torch

from attn_impls import te
from attn_impls.registry import AttnShape, Unsupported

IMPLS = {"fused": te.TE_FUSED, "unfused": te.TE_UNFUSED}


def inputs(form: str, batch: int, seq: int, heads: int, dim: int):
    if form == "contiguous bshd":
        return [torch.randn(batch, seq, heads, dim, device="cuda", dtype=torch.bfloat16) for _ in range(3)]
    if form == "bhsd transposed to bshd":
        return [torch.randn(batch, heads, seq, dim, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
                for _ in range(3)]
    packed = torch.randn(batch, seq, 3, heads, dim, device="cuda", dtype=torch.bfloat16)
    return list(packed.unbind(2))


def main(seq_lens):
    for seq in seq_lens:
        heads, batch = (16, 4) if seq <= 1024 else (12, 2)
        shape = AttnShape(heads, 64, seq, "cuda")
        for backend in ("fused", "unfused"):
            for variant in ("plain", "softcap", "neighborhood"):
                for form in ("contiguous bshd", "bhsd transposed to bshd", "packed bs3hd views"):
                    q, k, v = (t.detach().requires_grad_() for t in inputs(form, batch, seq, heads, 64))
                    try:
                        out = IMPLS[backend].factory(variant, shape)(q, k, v)
                        out.float().sum().backward()
                        torch.cuda.synchronize()
                        verdict = "ran"
                    except Unsupported as e:
                        verdict = f"refused: {str(e)[:160]}"
                    except Exception as e:  # noqa: BLE001 - the point is to report it
                        verdict = f"{type(e).__name__}: {str(e)[:160]}"
                    print(f"DIAG seq={seq} te_{backend} {variant:12s} {form:26s} {verdict}", flush=True)


if __name__ == "__main__":
    main([int(s) for s in sys.argv[1:]] or [196, 3136])
