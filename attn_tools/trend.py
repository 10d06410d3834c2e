"""Per-cell trend over stored runs: each cell's median step time, run after run.

    attn-trend DIR [--cells REGEX] [--last N] [--output TREND.md]
    python -m attn_tools.trend DIR ...

DIR is a folder of runs (searched recursively for pytest-benchmark's autosaved names,
NNNN_*.json), such as the history branch's `runs/<gpu-slug>/` (docs/ci.md). Runs are ordered by
their recorded date. For each GPU model and profile, one markdown table per cell: date, commit,
median ms, change against the previous run that timed the cell, and the cell's status where it
did not time (skipped, failed, missing). Runs of different timing settings are not comparable
(`attn_tools.runs.comparable`): a row whose settings differ from the previous run's says so
instead of a change. Exit 0, or 2 when DIR has no run or a selection matches nothing.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from .runs import RUN_GLOB, RunFileError, comparable, gpu_model, load_run, median_ms, outcomes, recorded_date


def load_runs(folder: str | Path) -> tuple[list[tuple[str, dict]], list[str]]:
    """(name, run) of the runs under `folder`, oldest first by recorded date, and the files skipped (with why)."""
    found, skipped = [], []
    for path in sorted(Path(folder).rglob(RUN_GLOB)):
        try:
            run = load_run(path)
            found.append((recorded_date(run, path), str(path), run))
        except RunFileError as e:
            skipped.append(str(e))
    found.sort(key=lambda item: (item[0], item[1]))
    return [(name, run) for _, name, run in found], skipped


def trend_tables(runs: list[tuple[str, dict]], cells: str | None = None, last: int | None = None) -> str:
    """The markdown: per (GPU model, profile), per cell, one row per run (module docstring)."""
    selected = re.compile(cells or "")
    groups: dict[tuple[str, str], list[tuple[str, dict]]] = {}
    for name, run in runs:
        profile = (run.get("attn_suite") or {}).get("profile") or "?"
        groups.setdefault((gpu_model(run), profile), []).append((name, run))
    lines = []
    for (gpu, profile), group in groups.items():
        group = group[-last:] if last else group
        every = [outcomes(run) for _, run in group]
        tests = sorted({t for ran, skipped, failed in every for t in (*ran, *skipped, *failed) if selected.search(t)})
        if not tests:
            continue
        lines += [f"# {gpu}, profile {profile}: {len(group)} run(s), {len(tests)} cell(s)", ""]
        for test in tests:
            lines += [f"## {test}", "", "| date | commit | median ms | change | note |",
                      "| --- | --- | ---: | ---: | --- |"]
            previous = None  # (run, median ms) of the last run that timed this cell
            for (_, run), (ran, skipped, failed) in zip(group, every):
                date = str(run.get("datetime", ""))[:16].replace("T", " ")
                commit = str((run.get("commit_info") or {}).get("id") or "?")[:10]
                if test in ran:
                    ms = median_ms(ran[test])
                    change, note = "", ""
                    if previous is not None:
                        reasons = comparable(previous[0], run, labels=("previous", "this"))
                        if reasons:
                            note = "settings changed: " + "; ".join(reasons)
                        else:
                            change = f"{(ms / previous[1] - 1) * 100:+.1f} %"
                    lines.append(f"| {date} | {commit} | {ms:.2f} | {change} | {note} |")
                    previous = (run, ms)
                else:
                    why = (f"failed: {failed[test]}" if test in failed else f"skipped: {skipped[test]}"
                           if test in skipped else "not in this run")
                    lines.append(f"| {date} | {commit} | | | {why.replace('|', '/')[:160]} |")
            lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    p = argparse.ArgumentParser(prog="attn-trend", description=__doc__.split("\n\n")[0])
    p.add_argument("folder", metavar="DIR", help="a folder of stored runs (searched recursively)")
    p.add_argument("--cells", metavar="REGEX", help="only the cells whose test id this regex matches")
    p.add_argument("--last", type=int, metavar="N", help="only the N newest runs of each GPU model and profile")
    p.add_argument("--output", metavar="TREND.md", help="write the markdown here instead of printing it")
    args = p.parse_args(argv)
    if args.last is not None and args.last < 1:
        p.error(f"--last must be at least 1, got {args.last}")
    try:
        re.compile(args.cells or "")
    except re.error as e:
        p.error(f"--cells is not a valid regular expression: {e}")
    runs, skipped = load_runs(args.folder)
    for why in skipped:
        print(f"attn-trend: skipped {why}", file=sys.stderr)
    if not runs:
        print(f"attn-trend: no run ({RUN_GLOB}) under {args.folder}", file=sys.stderr)
        return 2
    text = trend_tables(runs, args.cells, args.last)
    if not text:
        print(f"attn-trend: --cells {args.cells!r} matches no cell of the {len(runs)} run(s)", file=sys.stderr)
        return 2
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"attn-trend: {len(runs)} run(s) -> {args.output}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
