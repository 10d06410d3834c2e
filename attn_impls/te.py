"""Transformer Engine `DotProductAttention`, with exactly one backend enabled.

Layout: bshd (`qkv_format="bshd"`); TE returns (B, S, H*D), reshaped here to
(B, S, H, D). Backends are chosen by NVTE_FLASH_ATTN / NVTE_FUSED_ATTN /
NVTE_UNFUSED_ATTN. TE caches its choice in a module global keyed by the inputs,
not by those variables, so each call that changes them asks TE to select again,
and after each forward the adapter checks which backend TE recorded as used.
softcap uses TE's `softcap=`; neighborhood is an "arbitrary" boolean mask
(TE's convention: True = masked out). A refusal is reported with TE's own reasons from
its debug log. TE is pointed at torch's cuDNN (CUDNN_PATH), and bshd views of bhsd memory
are copied before the call: both were needed for the fused backend on the H200. TE's CUDA
library does not load on CPU.
"""
from __future__ import annotations

import functools
import os

from .registry import (
    CUDNN_SDPA_BWD,
    CUDNN_SDPA_FWD,
    FA2_BWD,
    FA2_FWD,
    FA3_BWD,
    FA3_FWD,
    FA4_BWD,
    FA4_FWD,
    SOFTCAP,
    AttnImpl,
    AttnShape,
    SeqLayout,
    Unsupported,
    VarlenAttention,
    VarlenImpl,
    import_reason,
    needs_sm,
    neighborhood_mask,
    register,
    register_varlen,
)

INSTALL = "pip install --no-build-isolation 'attn-bench[te]'"
# Seen on the H200 (TE 2.20.2, torch 2.11 with its bundled cuDNN 9.19, system cuDNN 9.14):
# TE's core library loaded the system cuDNN next to torch's ("undefined symbol ... libcudnn_graph").
CUDNN_CLASH_HINT = ("; TE loaded a different cuDNN than torch's bundled one: point TE and the loader at "
                    "torch's, e.g. CUDNN_PATH=$(python -c \"import nvidia.cudnn; print(nvidia.cudnn.__path__[0])\") "
                    "and LD_LIBRARY_PATH=$CUDNN_PATH/lib:$LD_LIBRARY_PATH")
BACKEND_ENV = {"flash": "NVTE_FLASH_ATTN", "fused": "NVTE_FUSED_ATTN", "unfused": "NVTE_UNFUSED_ATTN"}
BACKEND_LOG_NAME = {"flash": "FlashAttention", "fused": "FusedAttention", "unfused": "UnfusedDotProductAttention"}
BACKEND_USED = {"flash": "use_flash_attention", "fused": "use_fused_attention",
                "unfused": "use_unfused_attention"}


def _attention_backends() -> dict:
    from transformer_engine.pytorch.attention.dot_product_attention import _attention_backends
    return _attention_backends


def _use_torchs_cudnn() -> None:
    """Point TE's cuDNN loader at the cuDNN of torch's wheel, unless the user chose one.

    Without CUDNN_PATH, TE finds cuDNN through ldconfig. On the H200 that loaded the system
    cuDNN 9.14 next to torch's 9.19, and every fused cell failed with "No dot product
    attention backend is available" (TE's debug log: CUDNN_STATUS_SUBLIBRARY_LOADING_FAILED).
    """
    if os.environ.get("CUDNN_PATH") or os.environ.get("CUDNN_HOME"):
        return
    try:
        import nvidia.cudnn
    except ImportError:  # torch not from a pip wheel: leave TE's own search alone
        return
    os.environ["CUDNN_PATH"] = list(nvidia.cudnn.__path__)[0]


@functools.cache
def _probe(backend: str, device: str) -> str:
    if device.startswith("cuda"):
        _use_torchs_cudnn()
    reason = needs_sm(device, 8) or import_reason("transformer_engine.pytorch", INSTALL)
    if "libcudnn" in reason:
        reason += CUDNN_CLASH_HINT
    if reason:
        return reason
    if backend == "flash":
        return _flash_unavailable_reason()
    return ""


def _flash_unavailable_reason() -> str:
    """Why TE found no FlashAttention to run its flash backend with, by TE's own version checks.

    TE 2.x runs its flash backend with flash-attn 2 (versions it accepts), FlashAttention-3
    (distribution `flash-attn-3`, module `flash_attn_interface`; on sm90 preferred over FA4)
    or flash-attn-4 (`flash_attn.cute`), whichever its import-time checks found.
    """
    from transformer_engine.pytorch.attention.dot_product_attention import backends  # noqa: F401  (runs TE's checks)
    from transformer_engine.pytorch.attention.dot_product_attention.utils import FlashAttentionUtils as fa
    if fa.is_installed or fa.v3_is_installed or fa.v4_is_installed:
        return ""
    found = f"found flash-attn {fa.version}" if str(fa.version) != "0" else "flash-attn not installed"
    return (f"TE flash backend unavailable: Transformer Engine found no FlashAttention it accepts "
            f"(flash-attn {fa.version_required}..<{fa.max_version}: {found}; flash-attn-3: not installed; "
            f"flash-attn-4: not installed). TE's steps for FA3: {' '.join(fa.v3_installation_steps.split())}")


def _select(backend: str) -> None:
    """Enable only `backend`; ask TE to re-select if that changed the environment."""
    wanted = {env: "1" if name == backend else "0" for name, env in BACKEND_ENV.items()}
    if any(os.environ.get(env) != value for env, value in wanted.items()):
        os.environ.update(wanted)
        _attention_backends()["backend_selection_requires_update"] = True


def _disabling_reasons(backend: str, call) -> str:
    """TE's own reasons for disabling `backend`, from its backend-selection debug log.

    TE refuses with a generic "No dot product attention backend is available"; the reasons
    ("Disabling FusedAttention as it does not support softcap", ...) are logged at debug
    level only. This repeats the refused `call` with that log captured. Returns "" if TE
    logged no reason for `backend`.
    """
    import logging

    from transformer_engine.pytorch.attention.dot_product_attention.utils import AttentionLogging

    messages = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    logger, handler = logging.getLogger("DotProductAttention"), Collect()
    saved = AttentionLogging._log_level, logger.propagate
    AttentionLogging._log_level, logger.propagate = logging.DEBUG, False
    logger.addHandler(handler)
    try:
        _attention_backends()["backend_selection_requires_update"] = True
        call()
    except ValueError:
        pass
    finally:
        logger.removeHandler(handler)
        AttentionLogging._log_level, logger.propagate = saved
    prefix = f"Disabling {BACKEND_LOG_NAME[backend]}"
    return "; ".join(dict.fromkeys(m for m in messages if m.startswith(prefix) and "NVTE_" not in m))


def _make_factory(backend: str):
    def factory(variant: str, shape: AttnShape):
        from transformer_engine.pytorch import DotProductAttention
        kwargs = dict(qkv_format="bshd", attention_dropout=0.0)
        if variant == "softcap":
            kwargs["softcap"] = SOFTCAP
        mask = None
        if variant == "neighborhood":
            kwargs["attn_mask_type"] = "arbitrary"
            mask = ~neighborhood_mask(shape.seq_len, shape.device)[None, None]
        else:
            kwargs["attn_mask_type"] = "no_mask"
        module = DotProductAttention(shape.heads, shape.head_dim, **kwargs)

        def te_attention(q_bshd, k_bshd, v_bshd):
            _select(backend)
            # TE infers the memory layout from strides. A bshd view of bhsd memory (seq stride
            # below head stride) gave wrong fused results on the H200 (parity: max error ~1
            # vs 0.02 allowed); packed qkv views and contiguous bshd tensors are read correctly.
            q_bshd, k_bshd, v_bshd = (t if t.stride(1) >= t.stride(2) else t.contiguous()
                                      for t in (q_bshd, k_bshd, v_bshd))
            try:
                out = module(q_bshd, k_bshd, v_bshd, attention_mask=mask)
            except ValueError as e:  # TE: "No dot product attention backend is available ..."
                reasons = _disabling_reasons(backend, lambda: module(q_bshd, k_bshd, v_bshd, attention_mask=mask))
                raise Unsupported(f"Transformer Engine ({backend} backend only): {reasons or e}") from None
            used = {name for name, key in BACKEND_USED.items() if _attention_backends().get(key)}
            if used != {backend}:
                raise RuntimeError(f"TE ran backend(s) {sorted(used)} although only {backend} was enabled")
            B, S, H, D = q_bshd.shape
            return out.view(B, S, H, D)

        return te_attention

    return factory


def _entry(backend, kernel_fwd, kernel_bwd, description):
    return register(AttnImpl(
        id=f"te_{backend}", library="transformer-engine", layout="bshd",
        variants=("plain", "softcap", "neighborhood"), backward=True, compile=True,
        kernel_fwd=kernel_fwd, kernel_bwd=kernel_bwd,
        probe=functools.partial(_probe, backend), factory=_make_factory(backend),
        description=description, install=INSTALL,
    ))


# TE's flash backend runs whichever FlashAttention TE found; the kernel names say which.
TE_FLASH = _entry("flash", f"{FA2_FWD}|{FA3_FWD}|{FA4_FWD}", f"{FA2_BWD}|{FA3_BWD}|{FA4_BWD}",
                  "TE DotProductAttention, FlashAttention backend (FA2, FA3 or FA4, as TE finds them)")
TE_FUSED = _entry("fused", rf"^FusedAttnFunc$|{CUDNN_SDPA_FWD}", rf"^FusedAttnFuncBackward$|{CUDNN_SDPA_BWD}",
                  "TE DotProductAttention, FusedAttention (cuDNN) backend")
TE_UNFUSED = _entry("unfused", "", "", "TE DotProductAttention, UnfusedDotProductAttention (PyTorch ops)")


# --- variable-size images (attn_bench/varlen.py) ----------------------------------------------
# DotProductAttention(qkv_format="thd", attn_mask_type="padding") with cu_seqlens_q/kv and
# max_seqlen_q/kv (TE's "cu_seqlens note", option 2: no padding between sequences): q, k, v of
# shape (total_tokens, H, D), every segment of the packed rows one sequence; output (total, H*D).
# Only the fused (cuDNN) backend is enabled: TE's choice on sm90 (see _entry above).

def _varlen_factory(backend: str):
    def factory(shape: AttnShape) -> VarlenAttention:
        from transformer_engine.pytorch import DotProductAttention
        module = DotProductAttention(shape.heads, shape.head_dim, qkv_format="thd", attn_mask_type="padding",
                                     attention_dropout=0.0)

        def prepare(layout: SeqLayout) -> tuple:
            return layout.cu_seqlens(shape.device), layout.max_seqlen

        def te_varlen_attention(q_bshd, k_bshd, v_bshd, cu_seqlens_and_max):
            cu_seqlens, max_seqlen = cu_seqlens_and_max
            _select(backend)
            rows, row_len, heads, head_dim = q_bshd.shape
            # Views of the packed qkv projection, which TE reads correctly (see _make_factory).
            q_thd, k_thd, v_thd = (t.reshape(rows * row_len, heads, head_dim) for t in (q_bshd, k_bshd, v_bshd))

            def call():
                return module(q_thd, k_thd, v_thd, cu_seqlens_q=cu_seqlens, cu_seqlens_kv=cu_seqlens,
                              max_seqlen_q=max_seqlen, max_seqlen_kv=max_seqlen)

            try:
                out = call()
            except ValueError as e:  # TE: "No dot product attention backend is available ..."
                reasons = _disabling_reasons(backend, call)
                raise Unsupported(f"Transformer Engine ({backend} backend only, thd): {reasons or e}") from None
            used = {name for name, key in BACKEND_USED.items() if _attention_backends().get(key)}
            if used != {backend}:
                raise RuntimeError(f"TE ran backend(s) {sorted(used)} although only {backend} was enabled")
            return out.view(rows, row_len, heads, head_dim)

        return VarlenAttention(prepare, te_varlen_attention)

    return factory


VARLEN_TE_FUSED = register_varlen(VarlenImpl(
    id="te_fused", library="transformer-engine", packing="packed", kernel_fwd=TE_FUSED.kernel_fwd,
    kernel_bwd=TE_FUSED.kernel_bwd, probe=TE_FUSED.probe, factory=_varlen_factory("fused"), install=INSTALL,
    description='TE DotProductAttention, FusedAttention (cuDNN) backend, qkv_format="thd" with cu_seqlens',
))
