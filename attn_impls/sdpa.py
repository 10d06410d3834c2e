"""PyTorch `scaled_dot_product_attention` with exactly one backend allowed.

Layout: bhsd. Each entry pins its backend with `sdpa_kernel([backend])`; with a
single backend allowed SDPA raises instead of falling back to another one. The
neighborhood variant is passed as a dense (S, S) boolean mask.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from .registry import AttnImpl, AttnShape, needs_cuda, needs_sm, neighborhood_mask, register


def _make_factory(backend: SDPBackend):
    def factory(variant: str, shape: AttnShape):
        mask = neighborhood_mask(shape.seq_len, shape.device) if variant == "neighborhood" else None

        def sdpa_attention(q_bhsd, k_bhsd, v_bhsd):
            with sdpa_kernel([backend]):
                return F.scaled_dot_product_attention(q_bhsd, k_bhsd, v_bhsd, attn_mask=mask)

        return sdpa_attention

    return factory


def _entry(impl_id, backend, variants, kernel, probe, description):
    return register(AttnImpl(
        id=impl_id, library="torch", layout="bhsd", variants=variants, backward=True,
        compile=True, kernel=kernel, probe=probe, factory=_make_factory(backend),
        description=description,
    ))


SDPA_FLASH = _entry(
    "sdpa_flash", SDPBackend.FLASH_ATTENTION, ("plain",),
    r"_scaled_dot_product_flash_attention", lambda device: "",
    "SDPA flash backend (PyTorch's FlashAttention-2 build; CPU has its own flash kernel)")
SDPA_EFFICIENT = _entry(
    "sdpa_efficient", SDPBackend.EFFICIENT_ATTENTION, ("plain", "neighborhood"),
    r"_scaled_dot_product_efficient_attention", needs_cuda,
    "SDPA memory-efficient backend (xFormers-derived cutlass kernel)")
SDPA_MATH = _entry(
    "sdpa_math", SDPBackend.MATH, ("plain", "neighborhood"),
    "", lambda device: "",
    "SDPA math backend (composite of matmul and softmax)")
SDPA_CUDNN = _entry(
    "sdpa_cudnn", SDPBackend.CUDNN_ATTENTION, ("plain", "neighborhood"),
    r"_scaled_dot_product_cudnn_attention", lambda device: needs_sm(device, 8),
    "SDPA cuDNN backend")
