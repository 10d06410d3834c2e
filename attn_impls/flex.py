"""FlexAttention (`torch.nn.attention.flex_attention`), compiled in every mode.

Layout: bhsd. Flex is only fast when compiled, so the callable is always
`torch.compile(flex_attention)`, in the suite's eager mode too. softcap is a
`score_mod`; neighborhood is a `block_mask` built from a `mask_mod` on the patch
grid. On CPU, flex has no backward pass (training cells skip; forward parity runs).
"""
from __future__ import annotations

import functools

import torch

from .registry import (
    NEIGHBORHOOD_RADIUS,
    VARIANTS,
    AttnImpl,
    AttnShape,
    SeqLayout,
    VarlenAttention,
    VarlenImpl,
    import_reason,
    register,
    register_varlen,
    softcap_scores,
)


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention
    return torch.compile(flex_attention, dynamic=False)


def _softcap_score_mod(score, b, h, q_idx, kv_idx):
    return softcap_scores(score)


def neighborhood_block_mask(shape: AttnShape):
    """BlockMask of the neighborhood variant for a square patch grid."""
    from torch.nn.attention.flex_attention import create_block_mask
    side = shape.grid

    def neighborhood(b, h, q_idx, kv_idx):
        near_row = (q_idx // side - kv_idx // side).abs() < NEIGHBORHOOD_RADIUS
        near_col = (q_idx % side - kv_idx % side).abs() < NEIGHBORHOOD_RADIUS
        return near_row & near_col

    return create_block_mask(neighborhood, None, None, shape.seq_len, shape.seq_len,
                             device=shape.device)


def _factory(variant: str, shape: AttnShape):
    flex = _compiled_flex()
    score_mod = _softcap_score_mod if variant == "softcap" else None
    block_mask = neighborhood_block_mask(shape) if variant == "neighborhood" else None

    def flex_attention(q_bhsd, k_bhsd, v_bhsd):
        return flex(q_bhsd, k_bhsd, v_bhsd, score_mod=score_mod, block_mask=block_mask)

    return flex_attention


FLEX = register(AttnImpl(
    id="flex",
    library="torch",
    layout="bhsd",
    variants=VARIANTS,
    backward=True,
    compile=True,
    # Inductor names its Triton templates after the fused ops: ..._flex_attention_N and
    # ..._flex_attention_backward_N.
    kernel_fwd=r"flex_attention(?!_backward)",
    kernel_bwd=r"flex_attention_backward",
    probe=lambda device: import_reason("torch.nn.attention.flex_attention", "needs torch>=2.5"),
    factory=_factory,
    description="FlexAttention, torch.compile'd (score_mod softcap, block_mask neighborhood)",
    cpu_backward=False,
))


# --- variable-size images (attn_bench/varlen.py) ----------------------------------------------
# The suite's fix for the recompilation hazard (README, "Variable-size images"): every step has
# the same shapes (rows of the fixed token budget, padding a document of its own), the document
# ids are a tensor the mask_mod reads, and the BlockMask is rebuilt per step by create_block_mask
# outside the compiled function. Compiled flex then sees new tensors of the same shapes each step
# and does not recompile (attn_bench.varlen.FlexLengthHazard measures it).

def document_block_mask(layout: SeqLayout, device):
    """BlockMask letting each token of the layout's rows attend only to tokens of its own segment."""
    from torch.nn.attention.flex_attention import create_block_mask
    document_ids = layout.document_ids(device)

    def same_document(b, h, q_idx, kv_idx):
        return document_ids[b, q_idx] == document_ids[b, kv_idx]

    return create_block_mask(same_document, layout.rows, None, layout.row_len, layout.row_len, device=device)


def _varlen_factory(shape: AttnShape) -> VarlenAttention:
    flex = _compiled_flex()

    def prepare(layout: SeqLayout):
        return document_block_mask(layout, shape.device)

    def flex_document_attention(q_bshd, k_bshd, v_bshd, block_mask):
        out_bhsd = flex(q_bshd.transpose(1, 2), k_bshd.transpose(1, 2), v_bshd.transpose(1, 2),
                        block_mask=block_mask)
        return out_bhsd.transpose(1, 2)

    return VarlenAttention(prepare, flex_document_attention)


VARLEN_FLEX = register_varlen(VarlenImpl(
    id="flex", library="torch", packing="packed", kernel_fwd=FLEX.kernel_fwd, kernel_bwd=FLEX.kernel_bwd,
    probe=FLEX.probe, factory=_varlen_factory, cpu_backward=False,
    description="FlexAttention, torch.compile'd, document block_mask built per step from document ids",
))
