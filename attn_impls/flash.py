"""FlashAttention 2, 3 and 4 (`flash_attn`, `flash_attn_interface`, `flash_attn.cute`).

Layout: bshd (batch, seq, heads, head_dim) for all three. softcap uses each
library's own `softcap=` argument. No masks: neighborhood is not expressible.

- FA2 registers custom ops, so it compiles without graph breaks.
- FA3 registers the custom ops `flash_attn_3::fwd`/`bwd` (kernels
  `cutlass::device_kernel<flash::FlashAttn{Fwd,Bwd}Sm90<...>>`), so torch.compile
  traces it; each cell records its `graph_breaks`. It returns `out` or `(out, lse)`
  depending on the release: both are handled.
- FA4 is JIT-compiled CuTe DSL and registers no custom op; under torch.compile
  it runs outside the graph (`torch.compiler.disable`), with a graph break around
  it (`graph_breaks` = 1 per compiled fa4/plain cell compiled per block, H200 runs
  of 2026-11-30; 5 per compiled fa4 cell compiled whole, H200 run train-fa4 of 2026-12-02).
- flash-attn 2 and flash-attn-4 share the `flash_attn` package name: with only
  FA4 installed, `flash_attn` is a namespace package without `flash_attn_func`.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util

import torch

from .registry import (
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
    VarlenAttention,
    VarlenImpl,
    import_reason,
    needs_sm,
    register,
    register_varlen,
)

NO_MASK = ("{name}'s flash_attn_func takes no mask, only `causal` and a 1-D `window_size` over the "
           "token sequence, which cannot express a 2-D window on the patch grid")


def _let_aot_autograd_cache_autograd_functions() -> None:
    """FA2's and FA3's `flash_attn_func` is a `torch.autograd.Function` around their custom ops.
    Dynamo traces its forward and backward into the graph, and AOTAutograd's cache then bypasses
    the whole graph unless `autograd_cache_allow_custom_autograd_functions` is set (off by default
    in torch 2.14, the CPU's), and each run traces the model's forward and backward again. On the H200,
    with Inductor's graphs served from a warm cache, the first step still took 12-14 s per compiled
    FA2/FA3 cell at seq 196, against 3-4 s for native's (H200 runs of 2026-12-02; the
    saving from this opt-in is not measured there yet). The traced subgraphs are part of the cache
    key, so graphs of other code or settings get other keys (pytorch/pytorch#149751 made the flag).
    Process-wide, like the SDPA adapters' marking: a later cell of the same worker whose graph holds
    another library's autograd.Function (xFormers', TE's) is cached too, which is as safe; only its
    compile time can change.
    """
    import torch._functorch.config

    torch._functorch.config.autograd_cache_allow_custom_autograd_functions = True


def _factory(module: str, outside_graph: bool = False):
    """Factory calling `module.flash_attn_func` with the variant's softcap.

    Unwraps `(out, lse)` returns; `outside_graph` keeps the call out of torch.compile
    graphs (for libraries without a registered custom op).
    """
    def factory(variant: str, shape: AttnShape):
        flash_attn_func = importlib.import_module(module).flash_attn_func
        softcap = SOFTCAP if variant == "softcap" else 0.0
        if not outside_graph:
            _let_aot_autograd_cache_autograd_functions()

        def flash_attention(q_bshd, k_bshd, v_bshd):
            result = flash_attn_func(q_bshd, k_bshd, v_bshd, softcap=softcap)
            return result[0] if isinstance(result, tuple) else result

        return torch.compiler.disable(flash_attention) if outside_graph else flash_attention

    return factory


# --- FA2 -------------------------------------------------------------------------
FA2_INSTALL = "pip install 'attn-bench[fa2]'"


@functools.cache
def _fa2_probe(device: str) -> str:
    reason = needs_sm(device, 8) or import_reason("flash_attn.flash_attn_interface", FA2_INSTALL)
    if reason and "flash_attn.flash_attn_interface" in reason:
        if importlib.util.find_spec("flash_attn.cute") is not None:
            return "flash-attn 2 not installed: `flash_attn` is flash-attn-4's namespace package"
    return reason


FA2 = register(AttnImpl(
    id="fa2", library="flash-attn", layout="bshd", variants=("plain", "softcap"),
    backward=True, compile=True, kernel_fwd=FA2_FWD, kernel_bwd=FA2_BWD,
    probe=_fa2_probe, factory=_factory("flash_attn"),
    description="flash-attn 2 flash_attn_func", install=FA2_INSTALL,
    variant_limits={"neighborhood": NO_MASK.format(name="flash-attn 2")},
))


# --- FA3 -------------------------------------------------------------------------
FA3_INSTALL = "build it from the flash-attention repo: cd hopper && python setup.py install"


@functools.cache
def _fa3_probe(device: str) -> str:
    return needs_sm(device, 9, 9) or import_reason("flash_attn_interface", FA3_INSTALL)


FA3 = register(AttnImpl(
    id="fa3", library="flash-attn-3", layout="bshd", variants=("plain", "softcap"),
    backward=True, compile=True, kernel_fwd=FA3_FWD, kernel_bwd=FA3_BWD,
    probe=_fa3_probe, factory=_factory("flash_attn_interface"),
    description="FlashAttention-3 (Hopper) flash_attn_interface.flash_attn_func",
    install=FA3_INSTALL, variant_limits={"neighborhood": NO_MASK.format(name="FlashAttention-3")},
))


# --- FA4 -------------------------------------------------------------------------
FA4_INSTALL = "pip install 'attn-bench[fa4]'"


@functools.cache
def _fa4_probe(device: str) -> str:
    return needs_sm(device, 8) or import_reason("flash_attn.cute", FA4_INSTALL)


FA4 = register(AttnImpl(
    id="fa4", library="flash-attn-4", layout="bshd", variants=("plain", "softcap"),
    # CuTe DSL kernels are named kernel_cutlass_kernel_flash_attncute<module><class>...
    backward=True, compile=True, kernel_fwd=FA4_FWD, kernel_bwd=FA4_BWD,
    probe=_fa4_probe, factory=_factory("flash_attn.cute", outside_graph=True),
    description="flash-attn-4 flash_attn.cute.flash_attn_func (CuTe DSL; outside torch.compile graphs)",
    install=FA4_INSTALL,
    variant_limits={"neighborhood": "flash-attn-4's flash_attn_func has a CuTe DSL `mask_mod`, which this "
                                    "adapter does not wire (not part of the study)"},
))


# --- variable-size images (attn_bench/varlen.py) ----------------------------------------------
# `flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)` with
# q, k, v of shape (total_tokens, H, D) ("thd"): every segment of the packed rows (images and
# padding) is one sequence. The keyword names are the same in FA2, FA3 and FA4; FA3 returns out
# or (out, lse) by release, FA4 (out, lse).

def _varlen_factory(module: str, outside_graph: bool = False):
    def factory(shape: AttnShape) -> VarlenAttention:
        flash_attn_varlen_func = importlib.import_module(module).flash_attn_varlen_func

        def prepare(layout: SeqLayout) -> tuple[torch.Tensor, int]:
            return layout.cu_seqlens(shape.device), layout.max_seqlen

        def flash_varlen_attention(q_bshd, k_bshd, v_bshd, cu_seqlens_and_max):
            cu_seqlens, max_seqlen = cu_seqlens_and_max
            rows, row_len, heads, head_dim = q_bshd.shape
            q_thd, k_thd, v_thd = (t.reshape(rows * row_len, heads, head_dim) for t in (q_bshd, k_bshd, v_bshd))
            result = flash_attn_varlen_func(q_thd, k_thd, v_thd, cu_seqlens_q=cu_seqlens, cu_seqlens_k=cu_seqlens,
                                            max_seqlen_q=max_seqlen, max_seqlen_k=max_seqlen)
            out_thd = result[0] if isinstance(result, tuple) else result
            return out_thd.view(rows, row_len, heads, head_dim)

        attend = torch.compiler.disable(flash_varlen_attention) if outside_graph else flash_varlen_attention
        return VarlenAttention(prepare, attend)

    return factory


def _varlen_entry(dense: AttnImpl, module: str, outside_graph: bool = False) -> VarlenImpl:
    return register_varlen(VarlenImpl(
        id=dense.id, library=dense.library, packing="packed", kernel_fwd=dense.kernel_fwd,
        kernel_bwd=dense.kernel_bwd, probe=dense.probe, factory=_varlen_factory(module, outside_graph),
        description=f"{module}.flash_attn_varlen_func with cu_seqlens over the packed rows",
        install=dense.install,
    ))


VARLEN_FA2 = _varlen_entry(FA2, "flash_attn")
VARLEN_FA3 = _varlen_entry(FA3, "flash_attn_interface")
VARLEN_FA4 = _varlen_entry(FA4, "flash_attn.cute", outside_graph=True)
