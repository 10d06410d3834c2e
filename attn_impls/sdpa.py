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
    SeqLayout,
    Unsupported,
    VarlenAttention,
    VarlenImpl,
    needs_cuda,
    needs_sm,
    neighborhood_mask,
    register,
    register_varlen,
)


def _let_aot_autograd_cache_pinned_graphs() -> None:
    """Inside a compiled function, Dynamo records `sdpa_kernel` as calls of two functions, and
    AOTAutograd's cache then bypasses the whole graph ("Unsupported call_function target"): each
    run traces the model's forward and backward again, 8-14 s per compiled SDPA cell at seq 196 on
    the H200 with a warm cache (2026-12-01). They are pure functions of their
    arguments, the backend names, which are constants of the graph and so part of its cache key:
    graphs pinned to different backends get different keys (tests/test_inductor_cache.py checks
    it, in one cache folder), as torch already allows for autocast's enter and exit. Keyed by the
    torch version. Called when an SDPA attention (plain or packed) is built, not at import: importing Inductor's
    config costs about 1.2 s, which collection and `python -m attn_impls` need not pay.
    """
    import torch._inductor.config

    for function in ("torch.nn.attention._backend_from_string", "torch.nn.attention._sdpa_kernel"):
        torch._inductor.config.unsafe_marked_cacheable_functions.setdefault(function, torch.__version__)


def _make_factory(backend: SDPBackend):
    def factory(variant: str, shape: AttnShape):
        mask = neighborhood_mask(shape.seq_len, shape.device) if variant == "neighborhood" else None
        refusal = _refusal(backend, shape, mask)
        if refusal:
            raise Unsupported(refusal)
        _let_aot_autograd_cache_pinned_graphs()

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


# --- variable-size images (attn_bench/varlen.py) ----------------------------------------------
# Layouts: the block passes (rows, row_len, H, D) views (bshd); SDPA takes bhsd. "dense" and
# "nested" entries run on packed rows; "padded" entries on one image per row, padded to the
# longest image. Each pins one backend, as the entries above do.

def block_diagonal_mask(layout: SeqLayout, device) -> torch.Tensor:
    """(rows, 1, S, S) bool: True where query and key tokens are in the same segment."""
    document_ids = layout.document_ids(device)
    return (document_ids[:, :, None] == document_ids[:, None, :])[:, None]


def key_padding_mask(layout: SeqLayout, device) -> torch.Tensor:
    """(rows, 1, 1, S) bool: True on a row's image tokens (every query of the row sees them)."""
    return layout.image_tokens(device)[:, None, None, :]


def _masked_varlen_factory(backend: SDPBackend, mask_for):
    """SDPA pinned to `backend`, with the boolean mask `mask_for(layout, device)` built once per step."""
    def factory(shape: AttnShape) -> VarlenAttention:
        _let_aot_autograd_cache_pinned_graphs()
        def prepare(layout: SeqLayout) -> torch.Tensor:
            return mask_for(layout, shape.device)

        def sdpa_masked_attention(q_bshd, k_bshd, v_bshd, mask):
            q_bhsd, k_bhsd, v_bhsd = (t.transpose(1, 2) for t in (q_bshd, k_bshd, v_bshd))
            with sdpa_kernel([backend]):
                out_bhsd = F.scaled_dot_product_attention(q_bhsd, k_bhsd, v_bhsd, attn_mask=mask)
            return out_bhsd.transpose(1, 2)

        return VarlenAttention(prepare, sdpa_masked_attention)

    return factory


def _nested_varlen_factory(backend: SDPBackend):
    """SDPA pinned to `backend` on nested jagged tensors: one sequence per segment of the rows."""
    def factory(shape: AttnShape) -> VarlenAttention:
        _let_aot_autograd_cache_pinned_graphs()
        def prepare(layout: SeqLayout) -> tuple[torch.Tensor, int]:
            return layout.cu_seqlens(shape.device).long(), layout.max_seqlen

        def sdpa_nested_attention(q_bshd, k_bshd, v_bshd, offsets_and_max):
            offsets, max_seqlen = offsets_and_max
            rows, row_len, heads, head_dim = q_bshd.shape

            def jagged_bhjd(t_bshd):
                # SDPA's jagged path wants contiguous values (torch/nested/_internal/sdpa.py,
                # "must be contiguous after transposing"): the copy is part of this entry's cost.
                values_thd = t_bshd.reshape(rows * row_len, heads, head_dim).contiguous()
                nested = torch.nested.nested_tensor_from_jagged(values_thd, offsets, max_seqlen=max_seqlen)
                return nested.transpose(1, 2)

            # Autocast off: the inputs already carry its dtype. Under CUDA autocast the jagged math
            # path (torch/nested/_internal/sdpa.py: _scaled_dot_product_attention_math on strided
            # nested tensors) gets its softmax cast to fp32, and its backward failed ("expected input
            # and grad types to match", H200, torch 2.11, 2026-12-01); with
            # autocast off it passed there, eager and compiled (a later run that day).
            with torch.autocast(q_bshd.device.type, enabled=False), sdpa_kernel([backend]):
                out = F.scaled_dot_product_attention(jagged_bhjd(q_bshd), jagged_bhjd(k_bshd), jagged_bhjd(v_bshd))
            return out.transpose(1, 2).values().view(rows, row_len, heads, head_dim)

        return VarlenAttention(prepare, sdpa_nested_attention)

    return factory


def _varlen_entry(impl_id, packing, factory, kernel_fwd, kernel_bwd, probe, description, proven=True,
                  compile_limit=""):
    return register_varlen(VarlenImpl(
        id=impl_id, library="torch", packing=packing, kernel_fwd=kernel_fwd, kernel_bwd=kernel_bwd,
        probe=probe, factory=factory, description=description, proven_on_hardware=proven,
        compile_limit=compile_limit,
    ))


# Seen on the H200 (torch 2.11, 2026-12-01) in the backward of the compiled
# parity check; upstream: pytorch/pytorch#155421 (open).
NESTED_COMPILE_LIMIT = ("AOTAutograd fails in the backward of SDPA's flash and efficient kernels on jagged "
                        "nested tensors (expected len(meta.attrs) == len(runtime_subclass_keys), got 3 != 4; "
                        "pytorch/pytorch#155421)")

# The jagged path calls the kernels' own ops, not the aten::_scaled_dot_product_* wrappers.
NESTED_FLASH_FWD = r"aten::_flash_attention_forward$"
NESTED_FLASH_BWD = r"aten::_flash_attention_backward$"
VARLEN_SDPA_DENSE_EFFICIENT = _varlen_entry(
    "sdpa_dense_efficient", "packed", _masked_varlen_factory(SDPBackend.EFFICIENT_ATTENTION, block_diagonal_mask),
    SDPA_EFFICIENT.kernel_fwd, SDPA_EFFICIENT.kernel_bwd, needs_cuda,
    "SDPA efficient backend, dense (rows, 1, S, S) block-diagonal boolean mask over each packed row")
VARLEN_SDPA_DENSE_MATH = _varlen_entry(
    "sdpa_dense_math", "packed", _masked_varlen_factory(SDPBackend.MATH, block_diagonal_mask),
    "", "", lambda device: "", "SDPA math backend, dense block-diagonal boolean mask over each packed row")
VARLEN_SDPA_NESTED_FLASH = _varlen_entry(
    "sdpa_nested_flash", "packed", _nested_varlen_factory(SDPBackend.FLASH_ATTENTION),
    NESTED_FLASH_FWD, NESTED_FLASH_BWD, lambda device: needs_sm(device, 8),
    "SDPA flash backend on nested jagged tensors (torch.nested.nested_tensor_from_jagged), one per segment",
    compile_limit=NESTED_COMPILE_LIMIT)
VARLEN_SDPA_NESTED_EFFICIENT = _varlen_entry(
    "sdpa_nested_efficient", "packed", _nested_varlen_factory(SDPBackend.EFFICIENT_ATTENTION),
    CUTLASS_FMHA_FWD, CUTLASS_FMHA_BWD, needs_cuda,
    "SDPA efficient backend on nested jagged tensors, one per segment", compile_limit=NESTED_COMPILE_LIMIT)
VARLEN_SDPA_NESTED_MATH = _varlen_entry(
    "sdpa_nested_math", "packed", _nested_varlen_factory(SDPBackend.MATH),
    "", "", lambda device: "", "SDPA math backend on nested jagged tensors (it loops over the sequences)")
VARLEN_PADDED_EFFICIENT = _varlen_entry(
    "padded_efficient", "padded", _masked_varlen_factory(SDPBackend.EFFICIENT_ATTENTION, key_padding_mask),
    SDPA_EFFICIENT.kernel_fwd, SDPA_EFFICIENT.kernel_bwd, needs_cuda,
    "baseline: every image padded to the longest, SDPA efficient backend with a key-padding mask")
VARLEN_PADDED_MATH = _varlen_entry(
    "padded_math", "padded", _masked_varlen_factory(SDPBackend.MATH, key_padding_mask),
    "", "", lambda device: "",
    "baseline: every image padded to the longest, SDPA math backend with a key-padding mask")
