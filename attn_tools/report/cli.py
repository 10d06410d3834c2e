"""`python -m attn_tools.report` (console script `attn-report`): the report of runs, files or folders."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..energy import write_energy_chart
from ..runs import RunFileError
from .chart import write_chart
from .merge import IncomparableRuns, comparable_with_newest, load_paths, merge
from .render import markdown_report, text_report

USAGE_HINT = ("give runs measured alike, or --skip-incomparable to leave out, and list, the runs not comparable "
              "with the newest")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m attn_tools.report",
        description="Study-style tables (latest run per cell, a section per test kind) and a speedup chart "
                    "from pytest-benchmark runs of this suite. Reads JSON only (no torch).")
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="a run file, or a folder: every run under it (a storage folder such as "
                        ".benchmarks/<gpu>, a results folder), oldest first; later runs win a cell, but a skip "
                        "never hides a cell that ran")
    p.add_argument("--markdown", metavar="FILE", help="also write the report as markdown")
    p.add_argument("--chart", metavar="FILE", help="also write a PNG chart of the training-step speedups")
    p.add_argument("--energy-chart", metavar="FILE",
                   help="also write a PNG of step time against J per image (training steps; needs runs with energy)")
    p.add_argument("--skip-incomparable", action="store_true",
                   help="leave out the runs that runs.comparable() says differ from the newest run (GPU model, "
                        "profile, rounds, an injected slowdown, ...) and list them with why, instead of refusing")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 on bad input or runs that are not comparable)."""
    args = parser().parse_args(argv)
    try:
        found, notes = load_paths(args.runs)
        for note in notes:
            print(f"report: {note}", file=sys.stderr)
        names, runs = [name for name, _ in found], [run for _, run in found]
        excluded = []
        if args.skip_incomparable:
            kept, excluded = comparable_with_newest(runs, names)
            names, runs = [names[i] for i in kept], [runs[i] for i in kept]
            for name, reasons in excluded:
                print(f"report: left out {name}, not comparable with the newest run: {'; '.join(reasons)}",
                      file=sys.stderr)
        labels = [f"r{i}" for i in range(1, len(runs) + 1)]
        merged = merge(runs, names=names, labels=labels, excluded=excluded)
        print(text_report(merged), end="")
        if args.markdown:
            Path(args.markdown).write_text(markdown_report(merged), encoding="utf-8")
        if args.chart:
            write_chart(merged, args.chart)
        if args.energy_chart:
            write_energy_chart(merged.ran.values(), args.energy_chart, title=merged.gpu)
    except IncomparableRuns as e:
        print(f"report error: {e}\n({USAGE_HINT})", file=sys.stderr)
        return 2
    except (RunFileError, ValueError) as e:
        print(f"report error: {e}", file=sys.stderr)
        return 2
    return 0
