"""Which attention kernel actually ran: profiler op and kernel names vs the registry."""
from __future__ import annotations

import re
from dataclasses import dataclass

from torch.profiler import ProfilerActivity, profile

from attn_impls import REGISTRY, AttnImpl
from attn_tools.runs import REWRITTEN, short_kernel_name

ATTENTION_LIKE = re.compile(r"(?i)attn|attention|fmha|flash|sdp|cudnn|softmax|flex|xformers|triton_tem")
# Implementations whose own kernels carry no name of theirs on CPU: Inductor compiles flex to a
# C++ template that the profiler shows as `graph_<n>_kernel` at best (with
# cpp.enable_kernel_profile) and otherwise not at all. There the check can only show that no
# other implementation's kernel ran.
UNNAMED_ON_CPU = frozenset({"flex"})


def profiled_names(step, device: str) -> set[str]:
    """Names of every op and device kernel recorded while `step()` runs once."""
    activities = [ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        step()
    return {e.name for e in prof.events()}


@dataclass(frozen=True)
class KernelCheck:
    """The outcome of matching profiled names against the implementation's kernel patterns.

    Names are split by direction: `own_fwd`/`own_bwd` match the implementation's
    `kernel_fwd`/`kernel_bwd`; `foreign_fwd`/`foreign_bwd` match only other entries'
    patterns (a fallback or a compiler rewrite). `variant_names` match the entry's
    `kernel_variants` pattern for the cell's variant, if it has one.
    """

    impl: AttnImpl
    own_fwd: tuple[str, ...]
    own_bwd: tuple[str, ...]
    foreign_fwd: tuple[str, ...]
    foreign_bwd: tuple[str, ...]
    foreign_ids: tuple[str, ...]
    backward: bool = True
    variant: str = ""
    variant_names: tuple[str, ...] = ()
    candidates: tuple[str, ...] = ()  # attention-looking names, shown when the check fails
    own_names_visible: bool = True  # False: own names are not required (see UNNAMED_ON_CPU)

    @property
    def own(self) -> tuple[str, ...]:
        """The implementation's own names, both directions."""
        return tuple(sorted({*self.own_fwd, *self.own_bwd}))

    @property
    def foreign(self) -> tuple[str, ...]:
        """Other implementations' names, both directions."""
        return tuple(sorted({*self.foreign_fwd, *self.foreign_bwd}))

    @property
    def problems(self) -> tuple[str, ...]:
        """Why the check fails, one line per direction or variant at fault; empty if it passes."""
        impl, found = self.impl, []
        directions = [("forward", impl.kernel_fwd, self.own_fwd, self.foreign_fwd)]
        if self.backward:
            directions.append(("backward", impl.kernel_bwd, self.own_bwd, self.foreign_bwd))
        for direction, pattern, own, foreign in directions:
            if pattern and not own and self.own_names_visible:
                found.append(f"{direction}: no {direction} kernel of {impl.id} ran (no name matches /{pattern}/)")
            if foreign and not impl.compiler_may_rewrite:
                found.append(f"{direction}: other implementations' {direction} kernels ran: {list(foreign)}")
        pattern = impl.kernel_variants.get(self.variant)
        if pattern and not self.variant_names:
            found.append(f"variant {self.variant}: no name matches /{pattern}/")
        return tuple(found)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def label(self) -> str:
        """Short description of the kernel that ran, for tables."""
        if self.foreign and self.impl.compiler_may_rewrite:
            return f"{REWRITTEN} {'+'.join(self.foreign_ids)}: {short_kernel_name(self.foreign)}"
        if not self.impl.kernel_fwd:
            return "matmul+softmax (no fused attention kernel)"
        if not self.own and not self.own_names_visible:
            return f"{self.impl.id}'s kernel (unnamed on this device)"
        return short_kernel_name(self.own_fwd or self.own)

    @property
    def variant_proof(self) -> str:
        """What the names show about the variant: the matching names, or that they cannot show it."""
        pattern = self.impl.kernel_variants.get(self.variant)
        if not pattern:
            return "not distinguishable by name"
        return f"/{pattern}/ matched {list(self.variant_names)}" if self.variant_names else f"/{pattern}/ not seen"

    def as_dict(self) -> dict:
        """The kernel fields of a cell's result (extra_info)."""
        return {
            "kernel": self.label,
            "kernel_names": list(self.own or self.foreign),
            "kernel_fwd_names": list(self.own_fwd),
            "kernel_bwd_names": list(self.own_bwd),
            "foreign_kernel_names": list(self.foreign),
            "kernel_variant_proof": self.variant_proof,
            "attention_like_names": list(self.candidates),
        }

    def explain(self) -> str:
        """Multi-line report: expectations and own names per direction, foreign names, failures."""
        impl = self.impl
        lines = [f"kernel check for {impl.id}" + (f"/{self.variant}" if self.variant else "")
                 + (": ok" if self.ok else ": FAILED")]
        directions = [("forward", impl.kernel_fwd, self.own_fwd), ("backward", impl.kernel_bwd, self.own_bwd)]
        for direction, pattern, own in directions[:2 if self.backward else 1]:
            expected = f"a name matching /{pattern}/" if pattern else "no fused attention kernel"
            if pattern and not self.own_names_visible:
                expected += " (not required: unnamed on this device)"
            lines.append(f"  {direction}: expected {expected}; own names: {list(own) or 'none'}")
        if self.foreign:
            lines.append(f"  other implementations' names ({', '.join(self.foreign_ids)}): {list(self.foreign)}")
        lines += [f"  FAIL {problem}" for problem in self.problems]
        lines.append(f"  variant proof: {self.variant_proof}")
        lines.append(f"  attention-looking names seen: {list(self.candidates)}")
        return "\n".join(lines)



def own_names_visible(impl: AttnImpl, device: str) -> bool:
    """Whether `impl`'s own kernels show under their names on `device` (see UNNAMED_ON_CPU)."""
    return not (device == "cpu" and impl.id in UNNAMED_ON_CPU)


def check_kernels(impl: AttnImpl, names: set[str], backward: bool = True, variant: str = "",
                  own_visible: bool = True) -> KernelCheck:
    """Classify `names` (from `profiled_names`) for `impl`, per direction.

    A name is `impl`'s own forward (backward) name when it matches `impl.kernel_fwd`
    (`kernel_bwd`); a name matched only by other entries' patterns is foreign, in the
    direction of the pattern it matched. `backward`: whether the profiled step ran a
    backward pass (then a backward name of its own is required). `variant`: the
    cell's variant, checked against `impl.kernel_variants`. `own_visible=False`
    (`own_names_visible`): own names are not required, foreign names still fail.
    """
    def matching(pattern):
        return tuple(sorted(n for n in names if pattern and re.search(pattern, n)))

    own_fwd, own_bwd = matching(impl.kernel_fwd), matching(impl.kernel_bwd)
    others = sorted(set(names) - {*own_fwd, *own_bwd})
    foreign_fwd, foreign_bwd, foreign_ids = set(), set(), set()
    for entry in REGISTRY.values():
        if entry.id == impl.id:
            continue
        for pattern, foreign in ((entry.kernel_fwd, foreign_fwd), (entry.kernel_bwd, foreign_bwd)):
            hits = [n for n in others if pattern and re.search(pattern, n)]
            foreign.update(hits)
            if hits:
                foreign_ids.add(entry.id)
    candidates = sorted(n for n in names if ATTENTION_LIKE.search(n))[:40]
    return KernelCheck(impl, own_fwd, own_bwd, tuple(sorted(foreign_fwd)), tuple(sorted(foreign_bwd)),
                       tuple(sorted(foreign_ids)), backward, variant,
                       matching(impl.kernel_variants.get(variant, "")), tuple(candidates), own_visible)
