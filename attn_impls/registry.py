"""The registry: one `AttnImpl` entry per attention implementation.

An entry is data. Adapter modules (`native.py`, `sdpa.py`, ...) build entries
and `register()` them; nothing else needs editing to add an implementation.
"""
from __future__ import annotations

import importlib.metadata
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

VARIANTS = ("plain", "softcap", "neighborhood")
LAYOUTS = ("bhsd", "bshd")
SOFTCAP = 30.0
# neighborhood: a patch token sees tokens with |Δrow| < NEIGHBORHOOD_RADIUS and
# |Δcol| < NEIGHBORHOOD_RADIUS on the 2-D patch grid.
NEIGHBORHOOD_RADIUS = 5
# Kernels that two libraries share, so both entries' patterns must claim them:
# cuDNN's attention (SDPA's cuDNN backend and TE's fused backend) and PyTorch's
# cutlass memory-efficient attention (SDPA's efficient backend and xFormers' cutlass op).
CUDNN_SDPA_FWD = r"cudnn_generated_fort_native_sdpa\w*_fprop|sm\d+_flash_fprop"
CUDNN_SDPA_BWD = r"cudnn_generated_fort_native_sdpa\w*_bprop|sm\d+_flash_bprop"
CUTLASS_FMHA_FWD = r"aten::_efficient_attention_forward|fmha_cutlassF"
CUTLASS_FMHA_BWD = r"aten::_efficient_attention_backward|fmha_cutlassB"
# FlashAttention's own kernels, which Transformer Engine's flash backend and xFormers' flash
# operators also run: FA2's custom ops, FA3's custom ops and Hopper kernels
# (cutlass::device_kernel<flash::FlashAttn{Fwd,Bwd}Sm90<...>>), FA4's CuTe DSL kernels.
FA2_FWD = r"flash_attn::_flash_attn_(varlen_)?forward"
FA2_BWD = r"flash_attn::_flash_attn_(varlen_)?backward"
FA3_FWD = r"flash_attn_3::fwd|flash::FlashAttnFwdSm90"
FA3_BWD = r"flash_attn_3::bwd|flash::FlashAttnBwdSm90"
FA4_FWD = r"flash_attncuteflash_fwd"
FA4_BWD = r"flash_attncuteflash_bwd"

# An attention callable takes q, k, v in the entry's layout and returns the
# output in the same layout: (B, H, S, D) for "bhsd", (B, S, H, D) for "bshd".
AttnFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class AttnShape:
    """What a factory needs to know about the attention it builds."""

    heads: int
    head_dim: int
    seq_len: int
    device: str

    @property
    def grid(self) -> int:
        side = round(self.seq_len**0.5)
        if side * side != self.seq_len:
            raise ValueError(f"seq_len {self.seq_len} is not a square patch grid")
        return side


@dataclass(frozen=True)
class AttnImpl:
    """One attention implementation.

    id: stable name used in test ids and results.
    library: the distribution whose version is recorded ("torch", "flash-attn-4", ...).
    layout: "bhsd" or "bshd", the layout the factory's callable takes and returns.
    variants: the attention variants it can compute (subset of VARIANTS).
    backward: whether it has a backward pass (on CUDA).
    compile: whether it runs under torch.compile (possibly with graph breaks).
    kernel_fwd, kernel_bwd: regexes over profiler op/kernel names. A training step
        must show a name matching each: the forward and the backward of this
        implementation. Both "" means no fused attention kernel may run in either
        direction (hand-written attention, SDPA math).
    probe: device -> "" if usable on that device, else the reason it is not.
    factory: (variant, shape) -> attention callable.
    install: how a user gets the library (shown in skip reasons).
    proven_on_hardware: False for adapters written to the documented API that
        have not yet run on a GPU here.
    cpu_backward: whether the backward pass also exists on CPU.
    compiler_may_rewrite: torch.compile may legitimately turn it into another
        kernel (Inductor's attention pattern matcher on hand-written attention);
        the cell then reports what it became instead of failing.
    kernel_variants: variant -> regex that a profiled name must match when that
        variant runs, for libraries whose names show the variant. A variant not
        listed cannot be told apart by name (KernelCheck.variant_proof says so).
    variant_limits: variant -> why the library cannot express it, for variants
        not in `variants` (shown as the skip reason instead of a bare "cannot").
    """

    id: str
    library: str
    layout: str
    variants: tuple[str, ...]
    backward: bool
    compile: bool
    kernel_fwd: str
    kernel_bwd: str
    probe: Callable[[str], str]
    factory: Callable[[str, AttnShape], AttnFn]
    description: str = ""
    install: str = ""
    proven_on_hardware: bool = True
    cpu_backward: bool = True
    compiler_may_rewrite: bool = False
    kernel_variants: Mapping[str, str] = field(default_factory=dict, hash=False)
    variant_limits: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"{self.id}: layout must be one of {LAYOUTS}, got {self.layout!r}")
        unknown = set(self.variants) - set(VARIANTS)
        if unknown:
            raise ValueError(f"{self.id}: unknown variants {sorted(unknown)}; valid: {VARIANTS}")
        if bool(self.kernel_fwd) != bool(self.kernel_bwd):
            raise ValueError(f"{self.id}: kernel_fwd and kernel_bwd must both be set or both be empty")
        if set(self.kernel_variants) - set(self.variants):
            raise ValueError(f"{self.id}: kernel_variants names variants it does not support")
        if set(self.variant_limits) & set(self.variants):
            raise ValueError(f"{self.id}: variant_limits names variants it supports")

    def unsupported_reason(self, variant: str, device: str, backward: bool = True) -> str:
        """Why this implementation cannot run `variant` on `device` ("" if it can)."""
        reason = self.probe(device)
        if reason:
            return reason
        if variant not in self.variants:
            why = self.variant_limits.get(variant)
            return (f"{self.id} cannot express variant {variant!r} (supports: {', '.join(self.variants)})"
                    + (f": {why}" if why else ""))
        if backward and device == "cpu" and not self.cpu_backward:
            return f"{self.id} has no backward pass on CPU"
        if backward and not self.backward:
            return f"{self.id} has no backward pass"
        return ""


class Unsupported(RuntimeError):
    """Raised by an adapter when its library refuses these inputs; the cell skips with the message."""


REGISTRY: dict[str, AttnImpl] = {}


def _add(registry: dict, impl, noun: str):
    if impl.id in registry:
        raise ValueError(f"duplicate {noun} id {impl.id!r}")
    registry[impl.id] = impl
    return impl


def _get(registry: dict, impl_id: str, noun: str):
    try:
        return registry[impl_id]
    except KeyError:
        raise ValueError(f"unknown {noun} {impl_id!r}; valid: {', '.join(registry)}") from None


def register(impl: AttnImpl) -> AttnImpl:
    return _add(REGISTRY, impl, "attention implementation")


def get_impl(impl_id: str) -> AttnImpl:
    """Return the entry named `impl_id`; ValueError listing valid ids if unknown."""
    return _get(REGISTRY, impl_id, "attention implementation")


def library_version(dist: str) -> str:
    """Installed version of distribution `dist`, or "not installed"."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def needs_cuda(device: str) -> str:
    """Probe helper: reason string when `device` is not a CUDA device."""
    if not device.startswith("cuda"):
        return f"needs a CUDA GPU, found {device.upper()}"
    if not torch.cuda.is_available():
        return "needs a CUDA GPU, torch.cuda.is_available() is False"
    return ""


def needs_sm(device: str, major_min: int, major_max: int | None = None) -> str:
    """Probe helper: reason when the GPU's compute capability is out of range."""
    reason = needs_cuda(device)
    if reason:
        return reason
    major, minor = torch.cuda.get_device_capability(device)
    if major < major_min or (major_max is not None and major > major_max):
        want = f"sm_{major_min}0" + (f"..sm_{major_max}x" if major_max else "+")
        return f"needs {want}, found sm_{major}{minor} ({torch.cuda.get_device_name(device)})"
    return ""


def import_reason(module: str, install: str) -> str:
    """Probe helper: "" if `module` imports, else a reason a user can act on."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as e:
        missing = e.name or module
        if module == missing or module.startswith(missing + "."):
            return f"{missing} not installed ({install})"
        return f"import {module} failed: {e}"
    except Exception as e:  # a broken install raises anything: report it, never crash collection
        return f"import {module} failed: {type(e).__name__}: {e}"
    return ""


def neighborhood_mask(seq_len: int, device: str | torch.device, radius: int = NEIGHBORHOOD_RADIUS) -> torch.Tensor:
    """(S, S) bool mask, True where query token i may attend to key token j.

    Tokens are patches in row-major order on a square grid; i sees j when both
    |Δrow| and |Δcol| are below `radius` (the variant's NEIGHBORHOOD_RADIUS; parity's
    negative control uses a smaller one).
    """
    side = AttnShape(1, 1, seq_len, "cpu").grid
    idx = torch.arange(seq_len, device=device)
    row, col = idx // side, idx % side
    near_row = (row[:, None] - row[None, :]).abs() < radius
    near_col = (col[:, None] - col[None, :]).abs() < radius
    return near_row & near_col


def softcap_scores(scores: torch.Tensor) -> torch.Tensor:
    """The soft-capping of the softcap variant: SOFTCAP * tanh(scores / SOFTCAP)."""
    return SOFTCAP * torch.tanh(scores / SOFTCAP)


# --- variable-size images: packed sequences (attn_bench/varlen.py) ---------------------------

# "packed": images back to back in rows of a fixed token budget, the rest of a row one padding
# segment; "padded": one image per row, padded to the longest image of the batch.
PACKINGS = ("packed", "padded")


@dataclass(frozen=True)
class SeqLayout:
    """Where the sequences of a varlen batch sit in its (rows, row_len) token grid.

    The segments tile the flattened grid in order, `seqlens[i]` tokens each: an image's
    patches (`is_image[i]`) or padding. A segment never crosses a row; every token attends
    only to the tokens of its own segment (padding tokens form segments of their own).
    """

    rows: int
    row_len: int
    seqlens: tuple[int, ...]
    is_image: tuple[bool, ...]

    def __post_init__(self):
        if len(self.seqlens) != len(self.is_image) or min(self.seqlens, default=0) < 1:
            raise ValueError("one positive length and one is_image flag per segment")
        ends = set(itertools.accumulate(self.seqlens))
        row_ends = {self.row_len * (r + 1) for r in range(self.rows)}
        if max(ends) != self.rows * self.row_len or not row_ends <= ends:
            raise ValueError(f"segments {self.seqlens} do not tile {self.rows} rows of {self.row_len} tokens")

    @property
    def max_seqlen(self) -> int:
        return max(self.seqlens)

    def cu_seqlens(self, device) -> torch.Tensor:
        """(segments + 1,) int32 offsets of the segments in the flattened grid (FlashAttention's cu_seqlens)."""
        return torch.tensor([0, *itertools.accumulate(self.seqlens)], dtype=torch.int32, device=device)

    def document_ids(self, device) -> torch.Tensor:
        """(rows, row_len) int64: the index of each token's segment."""
        lengths = torch.tensor(self.seqlens, device=device)
        ids = torch.repeat_interleave(torch.arange(len(self.seqlens), device=device), lengths)
        return ids.view(self.rows, self.row_len)

    def image_tokens(self, device) -> torch.Tensor:
        """(rows, row_len) bool: True on image tokens, False on padding."""
        flags = torch.tensor(self.is_image, device=device)
        return flags[self.document_ids(device)]


@dataclass(frozen=True)
class VarlenAttention:
    """What a varlen factory returns.

    prepare(layout) runs once per training step, outside compiled regions, and builds what
    the kernel needs from the step's `SeqLayout` (cu_seqlens, a BlockMask, a mask, ...).
    attend(q_bshd, k_bshd, v_bshd, prepared) takes views of shape (rows, row_len, H, D) and
    returns the output in the same shape; every block calls it with the step's `prepared`.
    """

    prepare: Callable[[SeqLayout], object]
    attend: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, object], torch.Tensor]


@dataclass(frozen=True)
class VarlenImpl:
    """One attention implementation over variable-size images (a cell of test_varlen_train_step).

    The fields mean what they mean in `AttnImpl`; in addition `packing` ("packed" or
    "padded", see PACKINGS) is how the batch's images are laid out in rows, and the factory
    takes an `AttnShape` (seq_len = the row length) and returns a `VarlenAttention`.
    `compile_limit`, when set, says why the entry cannot run under torch.compile.
    """

    id: str
    library: str
    packing: str
    kernel_fwd: str
    kernel_bwd: str
    probe: Callable[[str], str]
    factory: Callable[[AttnShape], VarlenAttention]
    description: str = ""
    install: str = ""
    proven_on_hardware: bool = True
    cpu_backward: bool = True
    compile_limit: str = ""
    # What attn_bench.kernels.check_kernels reads besides the patterns (as on AttnImpl).
    compiler_may_rewrite: bool = False
    kernel_variants: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self):
        if self.packing not in PACKINGS:
            raise ValueError(f"{self.id}: packing must be one of {PACKINGS}, got {self.packing!r}")
        if bool(self.kernel_fwd) != bool(self.kernel_bwd):
            raise ValueError(f"{self.id}: kernel_fwd and kernel_bwd must both be set or both be empty")

    def unsupported_reason(self, device: str, backward: bool = True, compiled: bool = False) -> str:
        """Why this implementation cannot run on `device` ("" if it can)."""
        reason = self.probe(device)
        if not reason and backward and device == "cpu" and not self.cpu_backward:
            reason = f"{self.id} has no backward pass on CPU"
        if not reason and compiled and self.compile_limit:
            reason = f"{self.id} does not run under torch.compile: {self.compile_limit}"
        return reason


VARLEN_REGISTRY: dict[str, VarlenImpl] = {}


def register_varlen(impl: VarlenImpl) -> VarlenImpl:
    return _add(VARLEN_REGISTRY, impl, "varlen implementation")


def get_varlen_impl(impl_id: str) -> VarlenImpl:
    """Return the varlen entry named `impl_id`; ValueError listing valid ids if unknown."""
    return _get(VARLEN_REGISTRY, impl_id, "varlen implementation")
