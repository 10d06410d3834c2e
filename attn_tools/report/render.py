"""The report as fixed-width text (the end of a run, the command line) and as markdown (results/):
the tables' sections, then what they add up to, the skipped and failed tests, and the runs."""
from __future__ import annotations

from collections import Counter

from ..energy import throttle_note
from ..runs import short_name
from .cells import ATTENTION, section_title
from .comparisons import SHARE_COLUMNS, attention_shares, phase_totals, study_comparisons
from .merge import Merged
from .tables import HOST_BOUND_SHARE, Column, columns, kinds, table_title, tables
from .varlen import (
    FLEX_LENGTHS_COLUMNS,
    VARLEN_SECTION,
    flex_lengths_rows,
    varlen_columns,
    varlen_table_title,
    varlen_tables,
)


def sections(merged: Merged) -> list[tuple[str, list[tuple[str, list[Column], list]]]]:
    """The report's sections of tables in order, those with a cell that ran: a section per test kind,
    then packed variable-size images; each as (title, [(table title, columns, rows)])."""
    out = []
    for kind in kinds(merged):
        found = [(table_title(key, merged.gpu), columns(key[1], rows, kind), rows)
                 for key, rows in tables(merged, kind).items()]
        if kind == ATTENTION:
            found += [(f"seq_len {seq}: attention's share of the training step = fwd_bwd ms x depth / step ms "
                       f"({merged.gpu})", list(SHARE_COLUMNS), rows) for seq, rows in attention_shares(merged).items()]
        out.append((section_title(kind), found))
    varlen = [(varlen_table_title(key, merged.gpu), varlen_columns(key[0], rows), rows)
              for key, rows in varlen_tables(merged).items()]
    lengths = flex_lengths_rows(merged)
    if lengths:
        varlen.append((f"FlexAttention with changing lengths ({merged.gpu})", list(FLEX_LENGTHS_COLUMNS), lengths))
    if varlen:
        out.append((VARLEN_SECTION, varlen))
    return out


def text_report(merged: Merged) -> str:
    """Warnings about the runs, fixed-width tables per section, the study's comparisons, skipped tests
    grouped by reason, failed tests one a line, and the run legend."""
    out = _warning_lines(merged)
    for section, found in sections(merged):
        out += [f"== {section} ==", ""]
        for title, cols, rows in found:
            out.append(title)
            cells = [[c.format(row) for c in cols] for row in rows]
            widths = [max(len(c.header), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
            for row in ([c.header for c in cols], *cells):
                out.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
            out.append("")
    out += _comparison_lines(merged, bullet="  ")
    out += _host_bound_lines(merged)
    out += _throttle_lines(merged, bullet="  ")
    out += _phase_lines(merged)
    out += outcome_lines(merged, bullet="  ")
    out += _legend_lines(merged, bullet="  ")
    return "\n".join(out).rstrip() + "\n"


def markdown_report(merged: Merged) -> str:
    """The same report as markdown: a section per test kind and one for packed images with their tables,
    then the other sections."""
    out = _warning_lines(merged, bullet="- ")
    for section, found in sections(merged):
        out += [f"## {section}", ""]
        for title, cols, rows in found:
            out += [f"### {title}", "",
                    "| " + " | ".join(c.header for c in cols) + " |",
                    "| " + " | ".join("---:" if c.numeric else "---" for c in cols) + " |"]
            out += ["| " + " | ".join(c.format(row) for c in cols) + " |" for row in rows]
            out.append("")
    out += _comparison_lines(merged, bullet="- ", heading="### ")
    out += _host_bound_lines(merged)
    out += _throttle_lines(merged, bullet="- ")
    out += _phase_lines(merged)
    out += outcome_lines(merged, bullet="- ", code=True)
    out += _legend_lines(merged, bullet="- ", code=True)
    return "\n".join(out).rstrip() + "\n"


def _throttle_lines(merged: Merged, bullet: str) -> list[str]:
    """A line per cell timed while the GPU throttled (or over a short energy window), so that a
    reader knows its time is not the steady-clock number it looks like."""
    notes = [(test, throttle_note(bench)) for test, bench in merged.ran.items()]
    found = [f"{bullet}{short_name(test)}: {note}" for test, note in notes if note]
    return ["Energy notes (cells timed while the GPU throttled, short energy windows):", *found, ""] if found else []


def _warning_lines(merged: Merged, bullet: str = "") -> list[str]:
    """A line per run whose times are not a plain measurement, at the top where no reader misses it."""
    found = [f"{bullet}WARNING: {source.label} ({source.name}): {warning}"
             for source in merged.runs for warning in source.warnings]
    return [*found, ""] if found else []


def _comparison_lines(merged: Merged, bullet: str, heading: str = "") -> list[str]:
    found = study_comparisons(merged)
    if not found:
        return []
    out = [f"{heading}The study's comparisons (median step time, same seq_len, mode and run)", ""]
    for (seq_len, mode), comparisons in found.items():
        out.append(f"seq_len {seq_len}, {mode}:")
        out += [f"{bullet}{c.sentence()}" for c in comparisons]
        out.append("")
    return out


def _host_bound_lines(merged: Merged) -> list[str]:
    rows = [row for found in tables(merged, ATTENTION).values() for row in found if row.host_ms is not None]
    bound = [row for row in rows if row.host_bound]
    if not bound:
        return []
    return [f"Host-bound kernel cells: {len(bound)} of {len(rows)} with a host time (host ms at least "
            f"{HOST_BOUND_SHARE:.0%} of the median). Their median measures the Python call and its launches "
            "more than the kernel, which a model's step overlaps with other layers' work, so their TFLOP/s "
            "understate the kernel, and their `vs do_bench` moves with the host's speed between the two "
            "measurements.", ""]


def _phase_lines(merged: Merged) -> list[str]:
    cells, totals = phase_totals(merged)
    if not cells:
        return []
    total = totals["total"] or 1.0
    parts = ", ".join(f"{phase} {seconds:.0f} s ({seconds / total:.0%})"
                      for phase, seconds in totals.items() if phase != "total")
    return [f"Where the time went ({cells} cells, {totals['total']:.0f} s in cells): {parts}", ""]


def skip_groups(skipped: dict[str, str]) -> list[tuple[int, str]]:
    """(count, reason) of skipped tests, the most frequent reason first (then alphabetical)."""
    return sorted(((n, reason) for reason, n in Counter(skipped.values()).items()), key=lambda g: (-g[0], g[1]))


def outcome_lines(merged: Merged, bullet: str, code: bool = False) -> list[str]:
    """The skipped tests in a few lines, one per reason with its count (each test and its reason is in
    the run's JSON, `attn_suite.skipped`), then the failed tests, one a line with why."""
    several = len(merged.runs) > 1

    def name(test):
        text = f"`{short_name(test)}`" if code else short_name(test)
        return f"{text} ({merged.source[test]})" if several and test in merged.source else text
    out = []
    if merged.skipped:
        out.append(f"Skipped tests ({len(merged.skipped)}), by reason (the run's JSON lists each: "
                   f"attn_suite.skipped):")
        out += [f"{bullet}{count:>4}  {reason}" for count, reason in skip_groups(merged.skipped)]
        out.append("")
    if merged.failed:
        out.append(f"Failed tests ({len(merged.failed)}):")
        out += [f"{bullet}{name(t)}: {message}" for t, message in sorted(merged.failed.items())]
        out.append("")
    return out


def _legend_lines(merged: Merged, bullet: str, code: bool = False) -> list[str]:
    out = []
    if merged.runs:
        out.append("Runs (the `run` column):" if code else "Runs (the run column):")
        out += [f"{bullet}{source.legend()}" for source in merged.runs]
        out.append("")
    if merged.excluded:
        out.append(f"Runs left out, not comparable with the newest run ({len(merged.excluded)}):")
        out += [f"{bullet}{name}: {'; '.join(reasons)}" for name, reasons in merged.excluded]
        out.append("")
    return out
