"""xFormers `memory_efficient_attention`, with its own dispatch and with pinned operators.

Layout: bshd (xFormers calls it BMHK). `xformers` lets xFormers choose the
operator; `xformers_cutlass`, `xformers_flash` and `xformers_flash3` pin one
forward/backward pair. `fmha.flash3` runs FlashAttention-3 through the torch ops
`flash_attn_3::fwd`/`bwd` of the `flash_attn_3` package (xFormers checks their
schema on import and otherwise reports why it cannot use them).
neighborhood is a dense additive bias (-inf outside the window), which only
operators that accept a tensor bias take; the probe reports xFormers' own
`not_supported_reasons`. Under torch.compile the call runs outside the graph.
"""
from __future__ import annotations

import functools
import inspect

import torch

from .registry import (
    CUTLASS_FMHA_BWD,
    CUTLASS_FMHA_FWD,
    FA3_BWD,
    FA3_FWD,
    AttnImpl,
    AttnShape,
    SeqLayout,
    VarlenAttention,
    VarlenImpl,
    import_reason,
    needs_cuda,
    neighborhood_mask,
    register,
    register_varlen,
)

INSTALL = "pip install 'attn-bench[xformers]'"
CLASH_HINT = ("; flash-attn-4 makes `flash_attn` a namespace package without flash-attn 2's "
              "`flash_attn_interface`, which breaks `import xformers.ops`: install flash-attn 2 "
              "or uninstall flash-attn-4 to use xFormers")


def _ops(name: str):
    """(forward op, backward op) for a pinned operator name, None for xFormers' dispatch."""
    if name == "auto":
        return None
    from xformers.ops import fmha
    module = {"cutlass": fmha.cutlass, "flash": fmha.flash, "flash3": fmha.flash3}[name]
    return (module.FwOp, module.BwOp)


@functools.cache
def _probe(op_name: str, device: str) -> str:
    reason = needs_cuda(device) or import_reason("xformers.ops", INSTALL)
    if reason:
        if "flash_attn" in reason:
            reason += CLASH_HINT
        return reason
    ops = _ops(op_name)
    if ops is None:
        return ""
    from xformers.ops import fmha
    q = torch.empty(1, 128, 2, 64, device=device, dtype=torch.bfloat16)
    inputs = fmha.Inputs(query=q, key=q, value=q)
    reasons = [r for op in ops for r in op.not_supported_reasons(inputs)]
    return f"xFormers {op_name} operator: {'; '.join(reasons)}" if reasons else ""


def _make_factory(op_name: str):
    def factory(variant: str, shape: AttnShape):
        from xformers.ops import memory_efficient_attention
        op = _ops(op_name)
        biases: dict[tuple, torch.Tensor] = {}

        def bias_for(q_bshd):
            # (B, H, S, S) view of storage padded to a multiple of 8 columns, as
            # xFormers requires for tensor biases.
            key = (q_bshd.shape[0], q_bshd.dtype)
            if key not in biases:
                B, S, H, _ = q_bshd.shape
                padded = (S + 7) // 8 * 8
                storage = torch.zeros(B, H, S, padded, device=q_bshd.device, dtype=q_bshd.dtype)
                bias = storage[..., :S]
                bias.masked_fill_(~neighborhood_mask(S, q_bshd.device), float("-inf"))
                biases[key] = bias
            return biases[key]

        # Outside torch.compile graphs: Dynamo cannot trace the cutlass operator's
        # backward (fake-tensor device propagation fails, seen with xFormers 0.0.35).
        @torch.compiler.disable
        def xformers_attention(q_bshd, k_bshd, v_bshd):
            attn_bias = bias_for(q_bshd) if variant == "neighborhood" else None
            return memory_efficient_attention(q_bshd, k_bshd, v_bshd, attn_bias=attn_bias, op=op)

        return xformers_attention

    return factory


NO_SOFTCAP = "xFormers' memory_efficient_attention has no soft-capping argument"
NO_TENSOR_BIAS = ("the {op} operator accepts only xFormers' structured masks (causal, block-diagonal, "
                  "local), not the dense tensor bias a 2-D neighborhood needs")


def _entry(impl_id, op_name, variants, kernel_fwd, kernel_bwd, description):
    limits = {"softcap": NO_SOFTCAP}
    if "neighborhood" not in variants:
        limits["neighborhood"] = NO_TENSOR_BIAS.format(op=op_name)
    return register(AttnImpl(
        id=impl_id, library="xformers", layout="bshd", variants=variants, backward=True,
        compile=True, kernel_fwd=kernel_fwd, kernel_bwd=kernel_bwd, probe=functools.partial(_probe, op_name),
        factory=_make_factory(op_name), description=description, install=INSTALL,
        variant_limits=limits,
    ))


XFORMERS_FLASH_FWD = r"xformers_flash::flash_fwd"
XFORMERS_FLASH_BWD = r"xformers_flash::flash_bwd"
# fmha.flash3's ops wrap FA3's own ops and kernels, which the fa3 entry claims too.
XFORMERS_FLASH3_FWD = rf"xformers_flash3::flash_fwd|{FA3_FWD}"
XFORMERS_FLASH3_BWD = rf"xformers_flash3::flash_bwd|{FA3_BWD}"
XFORMERS = _entry("xformers", "auto", ("plain", "neighborhood"),
                  f"{CUTLASS_FMHA_FWD}|{XFORMERS_FLASH_FWD}|{XFORMERS_FLASH3_FWD}",
                  f"{CUTLASS_FMHA_BWD}|{XFORMERS_FLASH_BWD}|{XFORMERS_FLASH3_BWD}",
                  "xFormers memory_efficient_attention, operator chosen by xFormers")
XFORMERS_CUTLASS = _entry("xformers_cutlass", "cutlass", ("plain", "neighborhood"),
                          CUTLASS_FMHA_FWD, CUTLASS_FMHA_BWD, "xFormers cutlass operator (fmha.cutlass)")
XFORMERS_FLASH = _entry("xformers_flash", "flash", ("plain",), XFORMERS_FLASH_FWD, XFORMERS_FLASH_BWD,
                        "xFormers flash operator (fmha.flash: flash-attn 2 or PyTorch's FA2)")
XFORMERS_FLASH3 = _entry("xformers_flash3", "flash3", ("plain",), XFORMERS_FLASH3_FWD, XFORMERS_FLASH3_BWD,
                         "xFormers FlashAttention-3 operator (fmha.flash3, needs the flash_attn_3 package)")


# --- variable-size images (attn_bench/varlen.py) ----------------------------------------------
# `fmha.BlockDiagonalMask.from_seqlens(seqlens)` over every segment of the packed rows, with q, k, v
# as one batch-1 sequence (1, total_tokens, H, D); xFormers chooses the operator.

def _varlen_factory(shape: AttnShape) -> VarlenAttention:
    from xformers.ops import fmha, memory_efficient_attention
    # Newer xFormers take the device of the mask's sequence-start tensors; older ones have no such argument.
    on_device = ({"device": shape.device}
                 if "device" in inspect.signature(fmha.BlockDiagonalMask.from_seqlens).parameters else {})

    def prepare(layout: SeqLayout):
        return fmha.BlockDiagonalMask.from_seqlens(list(layout.seqlens), **on_device)

    # Outside torch.compile graphs, as the dense entries (see _make_factory).
    @torch.compiler.disable
    def xformers_varlen_attention(q_bshd, k_bshd, v_bshd, attn_bias):
        rows, row_len, heads, head_dim = q_bshd.shape
        q, k, v = (t.reshape(1, rows * row_len, heads, head_dim) for t in (q_bshd, k_bshd, v_bshd))
        return memory_efficient_attention(q, k, v, attn_bias=attn_bias).view(rows, row_len, heads, head_dim)

    return VarlenAttention(prepare, xformers_varlen_attention)


VARLEN_XFORMERS = register_varlen(VarlenImpl(
    id="xformers", library="xformers", packing="packed", kernel_fwd=XFORMERS.kernel_fwd,
    kernel_bwd=XFORMERS.kernel_bwd, probe=XFORMERS.probe, factory=_varlen_factory, install=INSTALL,
    description="xFormers memory_efficient_attention with fmha.BlockDiagonalMask.from_seqlens, operator chosen "
                "by xFormers (outside torch.compile graphs)",
))
