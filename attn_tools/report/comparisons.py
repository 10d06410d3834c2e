"""What the tables add up to: the study's comparisons, attention's share of a training step and
where the runs' time went. Like the tables, each figure divides cells of one run."""
from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from ..runs import REWRITTEN
from .cells import ATTENTION, TRAIN, cell_kind, mode_rank
from .merge import Merged
from .tables import Column, run_medians, tables

# The comparisons the study made: (implementation, variant, baseline implementation pattern
# (fnmatch), what is being compared). Each baseline matching the pattern that ran at the same
# seq_len, mode and variant in the same run gives one sentence.
STUDY_PAIRS = (
    ("flex", "softcap", "native", "soft-capping via score_mod vs hand-written"),
    ("flex", "neighborhood", "sdpa_*", "block_mask vs sdpa with a dense mask"),
    ("flex", "plain", "native", "FlexAttention vs hand-written attention"),
    ("flex", "plain", "sdpa_*", "FlexAttention vs an sdpa backend"),
)


@dataclass(frozen=True)
class Comparison:
    """One of the study's comparisons at one (seq_len, mode): `cell` vs `baseline` ('impl/variant')."""

    seq_len: int
    mode: str
    cell: str
    baseline: str
    ratio: float  # baseline median / cell median: > 1 means `cell` is faster
    what: str

    def sentence(self) -> str:
        """'flex/softcap is 1.23x faster than native/softcap (what)'; 'slower' with the inverse ratio."""
        if f"{self.ratio:.2f}" == "1.00" or f"{1 / self.ratio:.2f}" == "1.00":
            return f"{self.cell} is as fast as {self.baseline} (within 0.5 %) ({self.what})"
        if self.ratio > 1:
            return f"{self.cell} is {self.ratio:.2f}x faster than {self.baseline} ({self.what})"
        return f"{self.cell} is {1 / self.ratio:.2f}x slower than {self.baseline} ({self.what})"


def study_comparisons(merged: Merged, pairs=STUDY_PAIRS) -> dict[tuple[int, str], list[Comparison]]:
    """The `pairs` whose two cells both ran in one run (the run the table's cell came from), per
    (seq_len, mode) in table order."""
    medians = run_medians(merged)
    impls = sorted({impl for _, kind, impl, *_ in medians if kind == TRAIN})
    out: dict[tuple[int, str], list[Comparison]] = {}
    for key, rows in tables(merged).items():
        seq_len, mode = key
        label = {(r.impl, r.variant): r.run for r in rows}
        for impl, variant, pattern, what in pairs:
            run = label.get((impl, variant))
            mine = medians.get((run, TRAIN, impl, variant, seq_len, mode, ""))
            if mine is None:
                continue
            for base in impls:
                theirs = medians.get((run, TRAIN, base, variant, seq_len, mode, ""))
                if base != impl and fnmatchcase(base, pattern) and theirs is not None:
                    out.setdefault(key, []).append(Comparison(
                        seq_len, mode, f"{impl}/{variant}", f"{base}/{variant}", theirs / mine, what))
    return out



@dataclass(frozen=True)
class ShareRow:
    """What attention takes of a training step: `fwd_bwd_ms` (the attention-kernel cell, fwd_bwd)
    x `depth` / `step_ms` (the training-step cell of the same impl, variant, seq_len and mode, in
    the same run, `runs`).
    None when the compiler rewrote the attention in one cell and not the same way in the other
    (Inductor rewrote a compiled `native` call alone into cuDNN SDPA on the H200, not inside the
    model): then the kernel cell does not measure the step's attention. Otherwise both cells passed
    the kernel check of the same implementation (Inductor's own kernel names may differ by fusion).
    """

    impl: str
    variant: str
    mode: str
    fwd_bwd_ms: float
    depth: int
    step_ms: float
    runs: str
    same_kernel: bool = True

    @property
    def share_pct(self) -> float | None:
        return self.fwd_bwd_ms * self.depth / self.step_ms * 100 if self.same_kernel else None


def attention_shares(merged: Merged) -> dict[int, list[ShareRow]]:
    """Per seq_len, attention's share of the training step for every (impl, variant, mode) whose
    fwd_bwd attention-kernel cell has a training-step cell in the same run; largest share first."""
    steps = {}
    for label, cells in merged.by_run.items():
        for test, bench in cells.items():
            kind, p = cell_kind(test)
            if kind == TRAIN and (bench.get("extra_info") or {}).get("depth"):
                steps[(label, p["impl"], p["variant"], p["seq_len"], p["mode"])] = bench
    out: dict[int, list[ShareRow]] = {}
    for test, bench in merged.ran.items():
        kind, p = cell_kind(test)
        runs = merged.source.get(test, "")
        step = steps.get((runs, p["impl"], p["variant"], p["seq_len"], p["mode"])) if kind == ATTENTION else None
        if step is None or p["direction"] != "fwd_bwd":
            continue
        same_kernel = _rewrite(bench) == _rewrite(step)
        out.setdefault(p["seq_len"], []).append(ShareRow(
            p["impl"], p["variant"], p["mode"], bench["stats"]["median"] * 1e3, step["extra_info"]["depth"],
            step["stats"]["median"] * 1e3, runs, same_kernel))
    return {seq: sorted(rows, key=lambda r: (mode_rank(r.mode), r.share_pct is None, -(r.share_pct or 0.0)))
            for seq, rows in sorted(out.items())}


def _rewrite(bench: dict) -> str:
    """The kernel label of a cell whose attention the compiler rewrote (`kernels.REWRITTEN`), else ''."""
    label = (bench.get("extra_info") or {}).get("kernel") or ""
    return label if label.startswith(REWRITTEN) else ""


SHARE_COLUMNS = (
    Column("implementation", lambda r: r.impl, False),
    Column("variant", lambda r: r.variant, False),
    Column("mode", lambda r: r.mode, False),
    Column("runs", lambda r: r.runs, False),
    Column("attention fwd_bwd ms", lambda r: f"{r.fwd_bwd_ms:.3f}"),
    Column("depth", lambda r: str(r.depth)),
    Column("step ms", lambda r: f"{r.step_ms:.2f}"),
    Column("attention share", lambda r: "n/a (other kernel)" if r.share_pct is None else f"{r.share_pct:.0f}%"),
)



def phase_totals(merged: Merged) -> tuple[int, dict[str, float]]:
    """(cells, seconds per phase) summed over the cells that ran and recorded `phase_s` (the harness's
    PhaseClock), largest first with `total` last: where the runs' time went."""
    totals: dict[str, float] = {}
    cells = 0
    for bench in merged.ran.values():
        phases = (bench.get("extra_info") or {}).get("phase_s")
        if phases:
            cells += 1
            for phase, seconds in phases.items():
                totals[phase] = totals.get(phase, 0.0) + seconds
    total = totals.pop("total", 0.0)
    ordered = dict(sorted(totals.items(), key=lambda item: -item[1]))
    return cells, {**ordered, "total": total} if cells else {}

