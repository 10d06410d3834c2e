"""Hand-written attention, `softmax(q·kᵀ·scale)·v` in plain PyTorch ops (the baseline).

Layout: bhsd (batch, heads, seq, head_dim). It materialises the S×S scores, so
it computes every variant and serves as the reference for parity checks (run on
fp32 inputs, it is the fp32 reference; on bf16 inputs, the same-dtype baseline).
"""
from __future__ import annotations

import torch

from .registry import VARIANTS, AttnImpl, AttnShape, neighborhood_mask, register, softcap_scores


def attention_math(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, variant: str,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """Reference attention on bhsd tensors; `mask` is the (S, S) bool neighborhood mask."""
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    if variant == "softcap":
        scores = softcap_scores(scores)
    elif variant == "neighborhood":
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1) @ v


def _factory(variant: str, shape: AttnShape):
    mask = neighborhood_mask(shape.seq_len, shape.device) if variant == "neighborhood" else None

    def native_attention(q_bhsd, k_bhsd, v_bhsd):
        return attention_math(q_bhsd, k_bhsd, v_bhsd, variant, mask)

    return native_attention


NATIVE = register(AttnImpl(
    id="native",
    library="torch",
    layout="bhsd",
    variants=VARIANTS,
    backward=True,
    compile=True,
    kernel_fwd="",
    kernel_bwd="",
    probe=lambda device: "",
    factory=_factory,
    description="hand-written softmax(q·kᵀ·scale)·v",
    compiler_may_rewrite=True,
))
