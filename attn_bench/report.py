"""Study-style tables and a speedup chart from this suite's pytest-benchmark JSON runs.

    python -m attn_bench.report RUN.json [RUN2.json ...] [--markdown FILE] [--chart FILE.png]

One table per (seq_len, mode): implementation, variant, median step ms, speedup over
`native`/`plain` eager at the same sequence length, peak GiB, TFLOP/s and the kernel that
ran; then the skipped cells with their reasons and the failed cells. Several runs may be
merged (e.g. the PyTorch matrix and a third-party run); a cell present in more than one
file is taken from the last file that has it.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from .kernels import short_kernel_name
from .runs import RunFileError, cell_params, gpu_model, load_run, outcomes, short_name

MODE_ORDER = ("eager", "compiled")
REFERENCE = ("native", "plain", "eager")  # the study's baseline cell at each sequence length
COLUMNS = ("implementation", "variant", "median ms", "speedup vs native eager", "peak GiB",
           "TFLOP/s", "kernel")


@dataclass
class Merged:
    """The cells of one or more runs, later files winning: ran (benchmark dicts), skipped, failed."""

    ran: dict
    skipped: dict
    failed: dict
    gpu: str


def merge(runs: list[dict]) -> Merged:
    """Merge runs of one GPU model into one set of cells; ValueError if the GPU models differ."""
    if not runs:
        raise ValueError("no runs to report")
    gpus = {gpu_model(run) for run in runs}
    if len(gpus) > 1:
        raise ValueError(f"runs of different GPU models cannot share a report: {', '.join(sorted(gpus))}")
    merged = Merged({}, {}, {}, gpus.pop())
    for run in runs:
        for state, cells in zip(("ran", "skipped", "failed"), outcomes(run)):
            for test, value in cells.items():
                if cell_params(test) is None:
                    continue  # not a train-step cell (e.g. a parity test's skip)
                for other in (merged.ran, merged.skipped, merged.failed):
                    other.pop(test, None)
                getattr(merged, state)[test] = value
    return merged


@dataclass(frozen=True)
class Row:
    """One cell of a table; `speedup` is over native/plain eager at the same seq_len (None if absent)."""

    impl: str
    variant: str
    median_ms: float
    speedup: float | None
    peak_gib: float | None
    tflops: float | None
    kernel: str

    def cells(self) -> tuple[str, ...]:
        """The row formatted as in COLUMNS."""
        return (self.impl, self.variant, f"{self.median_ms:.2f}",
                "n/a" if self.speedup is None else f"{self.speedup:.2f}x",
                _number(self.peak_gib, ".2f"), _number(self.tflops, ".3g"), self.kernel)


def kernel_label(info: dict) -> str:
    """The kernel column: the recorded label, with a fused kernel's name shortened for tables."""
    label = info.get("kernel") or "n/a"
    names = info.get("kernel_names") or []
    if names and not label.startswith(("rewritten", "matmul")):
        return short_kernel_name(names)
    return label


def tables(merged: Merged) -> dict[tuple[int, str], list[Row]]:
    """Rows per (seq_len, mode), fastest first; keys ordered by seq_len, then eager before compiled."""
    cells = [(cell_params(test), bench) for test, bench in merged.ran.items()]
    reference = {p["seq_len"]: bench["stats"]["median"] for p, bench in cells
                 if (p["impl"], p["variant"], p["mode"]) == REFERENCE}
    groups: dict[tuple[int, str], list[Row]] = {}
    for p, bench in cells:
        median = bench["stats"]["median"]
        info = bench.get("extra_info") or {}
        ref = reference.get(p["seq_len"])
        groups.setdefault((p["seq_len"], p["mode"]), []).append(Row(
            p["impl"], p["variant"], median * 1e3, ref / median if ref else None,
            info.get("peak_gib"), info.get("tflops"), kernel_label(info)))
    return {key: sorted(groups[key], key=lambda r: r.median_ms)
            for key in sorted(groups, key=lambda k: (k[0], _mode_rank(k[1])))}


def speedups(merged: Merged) -> dict[tuple[int, str], list[tuple[str, float]]]:
    """('impl/variant', speedup) per (seq_len, mode) where the reference cell exists, for the chart."""
    result = {}
    for key, rows in tables(merged).items():
        bars = [(f"{r.impl}/{r.variant}", r.speedup) for r in rows if r.speedup is not None]
        if bars:
            result[key] = bars
    return result


def _mode_rank(mode: str) -> int:
    return MODE_ORDER.index(mode) if mode in MODE_ORDER else len(MODE_ORDER)


def _number(value, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def text_report(merged: Merged) -> str:
    """Fixed-width tables, then skipped and failed cells, for a terminal."""
    out = []
    for (seq_len, mode), rows in tables(merged).items():
        out.append(f"seq_len {seq_len}, {mode} ({merged.gpu})")
        cells = [row.cells() for row in rows]
        widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(COLUMNS)]
        for row in (COLUMNS, *cells):
            out.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        out.append("")
    out += _outcome_lines(merged, bullet="  ")
    return "\n".join(out).rstrip() + "\n"


def markdown_report(merged: Merged) -> str:
    """The same report as markdown: one table per (seq_len, mode)."""
    out = []
    for (seq_len, mode), rows in tables(merged).items():
        out += [f"### seq_len {seq_len}, {mode} ({merged.gpu})", "",
                "| " + " | ".join(COLUMNS) + " |",
                "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
        out += ["| " + " | ".join(row.cells()) + " |" for row in rows]
        out.append("")
    out += _outcome_lines(merged, bullet="- ", code=True)
    return "\n".join(out).rstrip() + "\n"


def _outcome_lines(merged: Merged, bullet: str, code: bool = False) -> list[str]:
    def name(test):
        return f"`{short_name(test)}`" if code else short_name(test)
    out = []
    if merged.skipped:
        out.append(f"Skipped cells ({len(merged.skipped)}):")
        out += [f"{bullet}{name(t)}: {reason}" for t, reason in sorted(merged.skipped.items())]
        out.append("")
    if merged.failed:
        out.append(f"Failed cells ({len(merged.failed)}):")
        out += [f"{bullet}{name(t)}: {message}" for t, message in sorted(merged.failed.items())]
        out.append("")
    return out


def write_chart(merged: Merged, path: str | Path) -> None:
    """A PNG with one bar panel per (seq_len, mode): speedup over native/plain eager."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = speedups(merged)
    if not data:
        raise ValueError("no cell has a speedup to chart (no native/plain eager cell in the runs)")
    fig, axes = plt.subplots(1, len(data), figsize=(4.5 * len(data), 0.45 * max(map(len, data.values())) + 1.8),
                             squeeze=False)
    for ax, ((seq_len, mode), bars) in zip(axes[0], data.items()):
        labels = [label for label, _ in bars][::-1]
        values = [value for _, value in bars][::-1]
        ax.barh(labels, values, color=["tab:green" if v >= 1 else "tab:red" for v in values])
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xlim(0, max(*values, 1.0) * 1.2)  # room for the value labels
        ax.set_title(f"seq_len {seq_len}, {mode}")
        ax.set_xlabel("speedup vs native/plain eager")
        for y, v in enumerate(values):
            ax.text(v, y, f" {v:.2f}x", va="center", fontsize=8)
    fig.suptitle(f"Training-step speedups ({merged.gpu})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 on bad input)."""
    p = argparse.ArgumentParser(prog="python -m attn_bench.report", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="RUN", help="pytest-benchmark JSON files (later files win)")
    p.add_argument("--markdown", metavar="FILE", help="also write the tables as markdown")
    p.add_argument("--chart", metavar="FILE", help="also write a PNG chart of the speedups")
    args = p.parse_args(argv)
    try:
        merged = merge([load_run(path) for path in args.runs])
        print(text_report(merged), end="")
        if args.markdown:
            Path(args.markdown).write_text(markdown_report(merged), encoding="utf-8")
        if args.chart:
            write_chart(merged, args.chart)
    except (RunFileError, ValueError) as e:
        print(f"report error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
