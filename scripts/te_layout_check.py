"""TE fused vs unfused attention outputs on the three memory forms of scripts/te_backend_diag.py,
against fp32 math: shows which forms TE's fused backend reads correctly."""
import torch

from attn_impls import te
from attn_impls.registry import AttnShape

shape = AttnShape(16, 64, 196, "cuda")
base = torch.randn(2, 196, 3, 16, 64, device="cuda", dtype=torch.bfloat16)
q, k, v = base.unbind(2)
ref = torch.nn.functional.scaled_dot_product_attention(
    *(t.float().transpose(1, 2) for t in (q, k, v))).transpose(1, 2)
forms = {
    "packed bs3hd views": (q, k, v),
    "contiguous bshd": tuple(t.contiguous() for t in (q, k, v)),
    "bhsd transposed to bshd": tuple(t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v)),
}
for impl in (te.TE_FUSED, te.TE_UNFUSED):
    fn = impl.factory("plain", shape)
    for name, (a, b, c) in forms.items():
        err = (fn(a, b, c).float() - ref).abs().max().item()
        print(f"LAYOUT {impl.id:10s} {name:26s} max |out - fp32 math| = {err:.3e}")
