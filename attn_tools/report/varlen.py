"""The packed variable-size-image workload's tables: training steps per (mode, lengths) with speedups
over the padded baseline of the same run, and FlexAttention's changing-lengths strategies."""
from __future__ import annotations

from dataclasses import dataclass

from .cells import CHANGING, FLEX_LENGTHS, VARLEN, cell_kind, mode_rank
from .merge import Merged
from .tables import Column, cache_label, compile_text, kernel_label, number, speedup_text

VARLEN_SECTION = "Packed variable-size images"
# A packed-image table's speedups are over the first of these that ran in its mode and lengths.
VARLEN_BASELINES = ("padded_efficient", "padded_math")


@dataclass(frozen=True)
class VarlenRow:
    """One packed variable-size-image training-step cell.

    `speedup_padded` is over the padded baseline of its table (`varlen_baseline`) in the same run,
    None if that run did not time it; `layout` is its packing and grid ('packed 8x4096'). The optional fields are
    None when the run did not record them.
    """

    impl: str
    layout: str
    run: str
    median_ms: float
    speedup_padded: float | None
    tokens_per_s: float | None
    images_per_s: float | None
    padding_pct: float | None
    peak_gib: float | None
    kernel: str
    compile_s: float | None = None
    compile_cache: str | None = None


@dataclass(frozen=True)
class LengthsRow:
    """One FlexAttention changing-lengths strategy; the optional fields are None when the run did not record them."""

    strategy: str
    run: str
    recompiles: int | None
    first_step_ms: float | None
    later_steps_median_ms: float | None
    distinct_lengths: int | None
    means: str


def varlen_baseline(impls) -> str | None:
    """The first of VARLEN_BASELINES among `impls` (a table's implementations), None if none is."""
    impls = set(impls)
    return next((b for b in VARLEN_BASELINES if b in impls), None)


def varlen_tables(merged: Merged) -> dict[tuple[str, str], list[VarlenRow]]:
    """Rows of packed variable-size-image training steps per (mode, lengths), fastest first; eager
    before compiled, fixed lengths before changing ones, so that the two never share a table.
    Speedups are over the table's padded baseline (`varlen_baseline`) in the row's own run (None
    where that run did not time it)."""
    groups: dict[tuple[str, str], dict[str, str]] = {}
    for test, bench in merged.ran.items():
        kind, p = cell_kind(test)
        if kind == VARLEN:
            lengths = (bench.get("extra_info") or {}).get("lengths", p["lengths"])
            groups.setdefault((p["mode"], lengths), {})[p["impl"]] = test
    out = {}
    for key in sorted(groups, key=lambda k: (mode_rank(k[0]), k[0], k[1] == CHANGING, k[1])):
        cells = groups[key]
        baseline = varlen_baseline(cells)
        rows = []
        for impl, test in cells.items():
            bench, label = merged.ran[test], merged.source.get(test, "")
            ref = merged.by_run.get(label, {}).get(cells[baseline]) if baseline else None
            ref = ref["stats"]["median"] if ref else None
            median = bench["stats"]["median"]
            info = bench.get("extra_info") or {}
            layout = (f"{info['packing']} {info['rows']}x{info['row_len']}"
                      if all(info.get(k) is not None for k in ("packing", "rows", "row_len")) else "n/a")
            padding = info.get("padding_fraction")
            rows.append(VarlenRow(
                impl, layout, label, median * 1e3, ref / median if ref else None,
                info.get("tokens_per_s"), info.get("images_per_s"), None if padding is None else padding * 100,
                info.get("peak_gib"), kernel_label(info), info.get("compile_s"), cache_label(info)))
        out[key] = sorted(rows, key=lambda r: r.median_ms)
    return out


def varlen_table_title(key: tuple[str, str], gpu: str) -> str:
    """'eager, fixed lengths (GPU)'; 'compiled, lengths change every step (GPU)' for changing lengths."""
    mode, lengths = key
    return f"{mode}, {'lengths change every step' if lengths == CHANGING else f'{lengths} lengths'} ({gpu})"


def varlen_columns(mode: str, rows: list[VarlenRow]) -> list[Column]:
    """The columns of a packed-image table in `mode` holding `rows`: the speedup header names the
    table's padded baseline (`-` in every row when none ran); compile seconds in non-eager tables."""
    baseline = varlen_baseline(r.impl for r in rows) or "padded (none ran)"
    cols = [Column("implementation", lambda r: r.impl, False),
            Column("layout", lambda r: r.layout, False),
            Column("run", lambda r: r.run, False),
            Column("median ms", lambda r: f"{r.median_ms:.2f}"),
            Column("tokens/s", lambda r: number(r.tokens_per_s, ".0f")),
            Column("images/s", lambda r: number(r.images_per_s, ".1f")),
            Column(f"speedup vs {baseline}", lambda r: speedup_text(r.speedup_padded, "-")),
            Column("padding", lambda r: number(r.padding_pct, ".1f", "%")),
            Column("peak GiB", lambda r: number(r.peak_gib, ".2f"))]
    if mode != "eager":
        cols.append(Column("compile s (cache)", compile_text))
    cols.append(Column("kernel", lambda r: r.kernel, False))
    return cols


def flex_lengths_rows(merged: Merged) -> list[LengthsRow]:
    """The FlexAttention changing-lengths strategies that ran, fastest later steps first."""
    rows = []
    for test, bench in merged.ran.items():
        kind, p = cell_kind(test)
        if kind == FLEX_LENGTHS:
            info = bench.get("extra_info") or {}
            rows.append(LengthsRow(p["strategy"], merged.source.get(test, ""), info.get("recompiles"),
                                   info.get("first_step_ms"), info.get("later_steps_median_ms"),
                                   info.get("distinct_lengths"), info.get("strategy_means") or "n/a"))
    return sorted(rows, key=lambda r: (r.later_steps_median_ms is None, r.later_steps_median_ms or 0.0))


FLEX_LENGTHS_COLUMNS = (
    Column("strategy", lambda r: r.strategy, False),
    Column("run", lambda r: r.run, False),
    Column("recompiles", lambda r: number(r.recompiles, "d")),
    Column("first step ms", lambda r: number(r.first_step_ms, ".2f")),
    Column("later steps median ms", lambda r: number(r.later_steps_median_ms, ".2f")),
    Column("distinct lengths", lambda r: number(r.distinct_lengths, "d")),
    Column("what the strategy does", lambda r: r.means, False),
)

