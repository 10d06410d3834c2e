"""Which attention kernel actually ran: profiler op and kernel names vs the registry."""
from __future__ import annotations

import re
from dataclasses import dataclass

from torch.profiler import ProfilerActivity, profile

from attn_impls import REGISTRY, AttnImpl

ATTENTION_LIKE = re.compile(r"(?i)attn|attention|fmha|flash|sdp|cudnn|softmax|flex|xformers|triton_tem")


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
    """The outcome of matching profiled names against the implementation's kernel."""

    impl_id: str
    own: tuple[str, ...]       # names matching the implementation's own kernel pattern
    foreign: tuple[str, ...]   # attention kernels of other registered implementations
    foreign_ids: tuple[str, ...]
    candidates: tuple[str, ...] = ()  # attention-looking names, shown when the check fails

    @property
    def ok(self) -> bool:
        impl = REGISTRY[self.impl_id]
        if impl.kernel and not self.own:
            return False
        return not self.foreign or impl.compiler_may_rewrite

    @property
    def label(self) -> str:
        """Short description of the kernel that ran, for tables."""
        impl = REGISTRY[self.impl_id]
        if self.foreign and impl.compiler_may_rewrite:
            return f"rewritten to {'+'.join(self.foreign_ids)}: {short_kernel_name(self.foreign)}"
        if not impl.kernel:
            return "matmul+softmax (no fused attention kernel)"
        return short_kernel_name(self.own)

    def explain(self) -> str:
        impl = REGISTRY[self.impl_id]
        lines = [f"kernel check for {impl.id}: expected "
                 + (f"a name matching /{impl.kernel}/" if impl.kernel else "no fused attention kernel")]
        lines.append(f"  matching names: {list(self.own) or 'none'}")
        if self.foreign:
            lines.append(f"  other implementations' kernels ran: {list(self.foreign)} "
                         f"({', '.join(self.foreign_ids)})")
        lines.append(f"  attention-looking names seen: {list(self.candidates)}")
        return "\n".join(lines)


def short_kernel_name(names) -> str:
    """The clearest name for tables: a forward op or kernel if any, trimmed of template noise."""
    if not names:
        return ""
    forward = [n for n in names if not re.search(r"(?i)backward|bwd|bprop", n)]
    name = min(forward or names, key=len)
    name = re.sub(r"^kernel_cutlass_kernel_|_object_at_.*$|[<(].*$", "", name.removeprefix("void "))
    return name[:80]


def check_kernels(impl: AttnImpl, names: set[str]) -> KernelCheck:
    """Classify `names` (from `profiled_names`) for `impl`.

    A name belongs to an implementation when it matches that entry's `kernel`
    pattern; names matched by `impl`'s own pattern are its own, names matched
    only by other entries' patterns are foreign (a fallback or a rewrite).
    """
    own = sorted(n for n in names if impl.kernel and re.search(impl.kernel, n))
    foreign, foreign_ids = [], set()
    for name in sorted(set(names) - set(own)):
        ids = [e.id for e in REGISTRY.values() if e.kernel and re.search(e.kernel, name)]
        if ids:
            foreign.append(name)
            foreign_ids.update(ids)
    candidates = sorted(n for n in names if ATTENTION_LIKE.search(n))[:40]
    return KernelCheck(impl.id, tuple(own), tuple(foreign), tuple(sorted(foreign_ids)),
                       tuple(candidates))
