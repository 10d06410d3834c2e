"""Hand-written attention, `softmax((q·scale)·kᵀ)·v` in plain PyTorch ops (the baseline).

Layout: bhsd (batch, heads, seq, head_dim). It computes what the study's hand-written
functions compute, in their order: q is multiplied by `head_dim ** -0.5` first (B·H·S·D
elements), then `q @ kᵀ`, for softcap `30 * tanh(scores / 30)`, the softmax, `@ v`. Scaling
the S×S scores instead costs an extra pass over them in the forward and the backward: on an
H100 at seq 3136 that made native's step ~9 % slower eager and ~8 % faster compiled than the
study's (issue 27), and every speedup over native is relative to this.

It materialises the S×S scores, so it computes every variant and serves as the reference
for parity checks (run on fp32 inputs, it is the fp32 reference; on bf16 inputs, the
same-dtype baseline). The neighborhood variant, which the study's native function does not
have, masks the scores with the dense (S, S) neighborhood mask.
"""
from __future__ import annotations

import torch

from .registry import VARIANTS, AttnImpl, AttnShape, neighborhood_mask, register, softcap_scores


def attention_math(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, variant: str,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """Hand-written attention on bhsd tensors in the study's order (q scaled before `q @ kᵀ`);
    `mask` is the (S, S) bool neighborhood mask."""
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
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
    description="hand-written softmax((q·scale)·kᵀ)·v, the study's order (q scaled first)",
    compiler_may_rewrite=True,
))
