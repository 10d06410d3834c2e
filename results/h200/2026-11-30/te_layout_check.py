"""TE fused vs unfused attention outputs on the three memory forms of scripts/te_backend_diag.py,
against fp32 math: shows which forms TE's fused backend reads correctly."""
import torch

from attn_impls import te

base = torch.randn(2, 196, 3, 16, 64, device="cuda", dtype=torch.bfloat16)
q, k, v = base.unbind(2)
ref = torch.nn.functional.scaled_dot_product_attention(
    *(t.float().transpose(1, 2) for t in (q, k, v))).transpose(1, 2)
forms = {
    "packed bs3hd views": (q, k, v),
    "contiguous bshd": tuple(t.contiguous() for t in (q, k, v)),
    "bhsd transposed to bshd": tuple(t.transpose(1, 2).contiguous().transpose(1, 2) for t in (q, k, v)),
}
te.TE_FUSED.probe("cuda")  # TE loads torch's cuDNN
from transformer_engine.pytorch import DotProductAttention  # noqa: E402

module = DotProductAttention(16, 64, qkv_format="bshd", attn_mask_type="no_mask", attention_dropout=0.0)
for backend in ("fused", "unfused"):
    te._select(backend)  # TE directly, without the adapter's stride fix
    for name, (a, b, c) in forms.items():
        err = (module(a, b, c).view(2, 196, 16, 64).float() - ref).abs().max().item()
        print(f"LAYOUT te_{backend:8s} {name:26s} max |out - fp32 math| = {err:.3e}")
