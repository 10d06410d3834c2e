"""PyTorch `scaled_dot_product_attention` with exactly one backend allowed.

Layout: bhsd. Each entry pins its backend with `sdpa_kernel([backend])`; with a
single backend allowed SDPA raises instead of falling back to another one. The
neighborhood variant is passed as a dense (S, S) boolean mask.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from .registry import (
    CUDNN_SDPA_BWD,
    CUDNN_SDPA_FWD,
    CUTLASS_FMHA_BWD,
    CUTLASS_FMHA_FWD,
    AttnImpl,
    AttnShape,
    Unsupported,
    needs_cuda,
    needs_sm,
    neighborhood_mask,
    register,
)


def _make_factory(backend: SDPBackend):
    def factory(variant: str, shape: AttnShape):
        mask = neighborhood_mask(shape.seq_len, shape.device) if variant == "neighborhood" else None
        refusal = _refusal(backend, shape, mask)
        if refusal:
            raise Unsupported(refusal)

        def sdpa_attention(q_bhsd, k_bhsd, v_bhsd):
            with sdpa_kernel([backend]):
                return F.scaled_dot_product_attention(q_bhsd, k_bhsd, v_bhsd, attn_mask=mask)

        return sdpa_attention

    return factory


def _refusal(backend: SDPBackend, shape: AttnShape, mask: torch.Tensor | None) -> str:
    """Empty if the pinned backend takes this shape and mask on this device, else SDPA's reasons."""
    q = torch.zeros(1, shape.heads, shape.seq_len, shape.head_dim, device=shape.device,
                    dtype=torch.bfloat16)
    with warnings.catch_warnings(record=True) as caught, sdpa_kernel([backend]):
        warnings.simplefilter("always")
        try:
            F.scaled_dot_product_attention(q, q, q, attn_mask=mask)
        except RuntimeError as e:
            return f"SDPA {backend.name} refused: {e}; " + "; ".join(str(w.message) for w in caught)
    return ""


NO_SOFTCAP = "scaled_dot_product_attention has no score modification (soft-capping needs FlexAttention)"


def _entry(impl_id, backend, variants, kernel_fwd, kernel_bwd, probe, description):
    limits = {"softcap": NO_SOFTCAP}
    if "neighborhood" not in variants:
        limits["neighborhood"] = f"SDPA's {backend.name} backend takes no attn_mask"
    return register(AttnImpl(
        id=impl_id, library="torch", layout="bhsd", variants=variants, backward=True,
        compile=True, kernel_fwd=kernel_fwd, kernel_bwd=kernel_bwd, probe=probe, factory=_make_factory(backend),
        description=description, variant_limits=limits,
    ))


SDPA_FLASH = _entry(
    "sdpa_flash", SDPBackend.FLASH_ATTENTION, ("plain",),
    # CUDA: aten::_scaled_dot_product_flash_attention; CPU: ..._for_cpu
    r"_scaled_dot_product_flash_attention(_for_cpu)?$",
    r"_scaled_dot_product_flash_attention(_for_cpu)?_backward$", lambda device: "",
    "SDPA flash backend (PyTorch's FlashAttention-2 build; CPU has its own flash kernel)")
SDPA_EFFICIENT = _entry(
    "sdpa_efficient", SDPBackend.EFFICIENT_ATTENTION, ("plain", "neighborhood"),
    rf"_scaled_dot_product_efficient_attention$|{CUTLASS_FMHA_FWD}",
    rf"_scaled_dot_product_efficient_attention_backward$|{CUTLASS_FMHA_BWD}", needs_cuda,
    "SDPA memory-efficient backend (xFormers-derived cutlass kernel)")
SDPA_MATH = _entry(
    "sdpa_math", SDPBackend.MATH, ("plain", "neighborhood"),
    "", "", lambda device: "",
    "SDPA math backend (composite of matmul and softmax)")
SDPA_CUDNN = _entry(
    "sdpa_cudnn", SDPBackend.CUDNN_ATTENTION, ("plain", "neighborhood"),
    rf"_scaled_dot_product_cudnn_attention$|{CUDNN_SDPA_FWD}",
    rf"_scaled_dot_product_cudnn_attention_backward$|{CUDNN_SDPA_BWD}", lambda device: needs_sm(device, 8),
    "SDPA cuDNN backend")
