"""Regression gate and noise calibration over this suite's pytest-benchmark JSON runs.

Commands (exit 0 = pass, 1 = the gate failed, 2 = refused or bad input):

    python -m attn_bench.gate compare BASELINE.json CURRENT.json [--threshold PCT] [--markdown FILE]
    python -m attn_bench.gate compare --storage DIR      # the two newest autosaved runs in DIR
    python -m attn_bench.gate spread RUN1.json RUN2.json [RUN3.json ...] [--markdown FILE]
    python -m attn_bench.gate latest DIR                 # print the newest autosaved run in DIR

`compare` refuses runs of different GPU models (or profiles), prints software differences
(libraries, driver, CUDA, cuDNN) as information only (a slower library upgrade is exactly
what the gate is for), fails on a cell whose median step time grew by more than the
threshold, and fails on lost coverage: a cell that ran in the baseline but is skipped,
failed or missing now. No baseline (missing file, empty storage) passes and says so.

Choosing the threshold (noise calibration): run the same cells N >= 3 times with the same
code on the same machine and feed the JSONs to `spread`. A cell's spread is
(max - min) / min of its medians, in percent. The threshold is

    threshold = max(MIN_THRESHOLD_PCT, ceil(2 x max spread))

an integer percent, so that it can also be given to pytest-benchmark's
`--benchmark-compare-fail=median:<threshold>%` (which takes integers). Twice the largest
same-code spread leaves room for runs noisier than the few that were measured.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from .runs import (
    RunFileError,
    gpu_model,
    latest_runs,
    load_run,
    median_ms,
    outcomes,
    short_name,
)

# The rule's floor: a gate finer than this is not asked of a 20-round median.
MIN_THRESHOLD_PCT = 5.0
# The rule applied to three same-code runs of native, sdpa_cudnn, flex and fa4 (plain, both
# lengths, both modes) on one otherwise idle H200: max spread 3.53 % (fa4/plain/196/compiled),
# so max(5, ceil(2 x 3.53)) = 8. Measurements: results/h200/spread.txt.
DEFAULT_THRESHOLD_PCT = 8.0
SOFTWARE_KEYS = ("driver", "cuda", "cudnn")


class GateRefused(Exception):
    """The runs cannot be compared (different GPU model or profile); exit 2."""


@dataclass(frozen=True)
class CellVerdict:
    """The gate's verdict on one cell."""

    test: str
    status: str  # "ok", "faster", "REGRESSED", "LOST", "new"
    baseline_ms: float | None = None
    current_ms: float | None = None
    note: str = ""

    @property
    def change_pct(self) -> float | None:
        if self.baseline_ms is None or self.current_ms is None:
            return None
        return change_pct(self.baseline_ms, self.current_ms)

    @property
    def failed(self) -> bool:
        return self.status in ("REGRESSED", "LOST")


def change_pct(baseline_ms: float, current_ms: float) -> float:
    """Relative change of the median in percent (+ = slower)."""
    if baseline_ms <= 0:
        raise ValueError(f"baseline median must be positive, got {baseline_ms}")
    return (current_ms - baseline_ms) / baseline_ms * 100


def check_comparable(baseline: dict, current: dict, baseline_name: str, current_name: str) -> None:
    """GateRefused naming both GPUs (or profiles) if the runs must not be compared."""
    base_gpu, cur_gpu = gpu_model(baseline), gpu_model(current)
    if base_gpu != cur_gpu:
        raise GateRefused(
            f"refusing to compare runs of different GPU models: baseline {baseline_name} ran on "
            f"{base_gpu!r}, current {current_name} on {cur_gpu!r}; keep one baseline per GPU model")
    base_profile = (baseline.get("attn_suite") or {}).get("profile")
    cur_profile = (current.get("attn_suite") or {}).get("profile")
    if base_profile != cur_profile:
        raise GateRefused(
            f"refusing to compare different model profiles: baseline {baseline_name} is "
            f"{base_profile!r}, current {current_name} is {cur_profile!r}")


def software_differences(baseline: dict, current: dict) -> list[str]:
    """'name: old -> new' for each library, driver, CUDA or cuDNN version that differs."""
    diffs = []
    for section, keys in (("gpu", SOFTWARE_KEYS), ("libraries", None)):
        old = baseline["machine_info"].get(section) or {}
        new = current["machine_info"].get(section) or {}
        for key in keys or sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                diffs.append(f"{key}: {old.get(key, 'unrecorded')} -> {new.get(key, 'unrecorded')}")
    return diffs


def compare(baseline: dict, current: dict, threshold_pct: float = DEFAULT_THRESHOLD_PCT,
            cells: str | None = None) -> list[CellVerdict]:
    """A verdict per cell of either run: regressions beyond `threshold_pct` and lost coverage fail.

    `cells`, a regex, restricts the gate to the cells whose test name it matches (to gate a
    rerun of a subset against a full baseline); by default every cell counts.
    """
    if threshold_pct < 0:
        raise ValueError(f"threshold must be >= 0 percent, got {threshold_pct}")
    try:
        selected = re.compile(cells or "")
    except re.error as e:
        raise ValueError(f"--cells is not a valid regular expression: {e}") from None

    def keep(found: dict) -> dict:
        return {test: value for test, value in found.items() if selected.search(test)}

    base_ran = keep(outcomes(baseline)[0])
    cur_ran, cur_skipped, cur_failed = map(keep, outcomes(current))
    verdicts = []
    for test, bench in base_ran.items():
        base_ms = median_ms(bench)
        if test in cur_ran:
            cur_ms = median_ms(cur_ran[test])
            change = change_pct(base_ms, cur_ms)
            status = "REGRESSED" if change > threshold_pct else "faster" if change < -threshold_pct else "ok"
            verdicts.append(CellVerdict(test, status, base_ms, cur_ms))
        elif test in cur_skipped:
            verdicts.append(CellVerdict(test, "LOST", base_ms, note=f"skipped now: {cur_skipped[test]}"))
        elif test in cur_failed:
            verdicts.append(CellVerdict(test, "LOST", base_ms, note=f"failed now: {cur_failed[test]}"))
        else:
            verdicts.append(CellVerdict(test, "LOST", base_ms, note="missing from the current run"))
    for test, bench in cur_ran.items():
        if test not in base_ran:
            verdicts.append(CellVerdict(test, "new", current_ms=median_ms(bench), note="not in the baseline"))
    return verdicts


def format_verdict(v: CellVerdict, threshold_pct: float) -> str:
    """One terminal line for a cell."""
    line = f"{v.status:<9} {short_name(v.test)}"
    if v.baseline_ms is not None and v.current_ms is not None:
        line += f"  {v.baseline_ms:.2f} ms -> {v.current_ms:.2f} ms ({v.change_pct:+.1f}%"
        line += f", threshold {threshold_pct:g}%)" if v.status == "REGRESSED" else ")"
    elif v.baseline_ms is not None:
        line += f"  ran in the baseline ({v.baseline_ms:.2f} ms)"
    elif v.current_ms is not None:
        line += f"  {v.current_ms:.2f} ms"
    return f"{line}; {v.note}" if v.note else line


def summary(verdicts: list[CellVerdict], threshold_pct: float) -> str:
    """The closing line: PASS/FAIL and the count per status."""
    counts = {}
    for v in verdicts:
        counts[v.status] = counts.get(v.status, 0) + 1
    parts = ", ".join(f"{n} {status.lower()}" for status, n in sorted(counts.items())) or "no cells"
    result = "FAIL" if any(v.failed for v in verdicts) else "PASS"
    return f"gate {result}: {parts} (threshold {threshold_pct:g}% on the median step time)"


def gate_markdown(verdicts, threshold_pct, baseline_name, current_name, software) -> str:
    """The comparison as a markdown section."""
    lines = [f"## Regression gate: {summary(verdicts, threshold_pct)}", "",
             f"Baseline `{baseline_name}`, current `{current_name}`.", ""]
    if software:
        lines += ["Software differences (information only): " + "; ".join(software), ""]
    lines += ["| status | cell | baseline ms | current ms | change | note |",
              "| --- | --- | ---: | ---: | ---: | --- |"]
    for v in verdicts:
        base = f"{v.baseline_ms:.2f}" if v.baseline_ms is not None else ""
        cur = f"{v.current_ms:.2f}" if v.current_ms is not None else ""
        change = f"{v.change_pct:+.1f}%" if v.change_pct is not None else ""
        lines.append(f"| {v.status} | `{short_name(v.test)}` | {base} | {cur} | {change} | {v.note} |")
    return "\n".join(lines) + "\n"


# --- noise calibration -----------------------------------------------------------
def spreads(runs: list[dict]) -> dict[str, tuple[list[float], float]]:
    """Per cell that ran in every run: (medians in ms, spread (max - min) / min in percent)."""
    if len(runs) < 2:
        raise ValueError(f"spread needs at least 2 runs, got {len(runs)}")
    ran = [outcomes(run)[0] for run in runs]
    result = {}
    for test in ran[0]:
        if all(test in r for r in ran):
            medians = [median_ms(r[test]) for r in ran]
            result[test] = (medians, (max(medians) - min(medians)) / min(medians) * 100)
    return result


def suggested_threshold(max_spread_pct: float, floor_pct: float = MIN_THRESHOLD_PCT) -> int:
    """max(floor, 2 x the largest same-code spread), rounded up to an integer percent."""
    return math.ceil(max(floor_pct, 2 * max_spread_pct))


def spread_report(runs: list[dict], names: list[str]) -> tuple[list[str], str]:
    """(terminal lines, markdown) for the same-code spread of `runs`."""
    table = spreads(runs)
    every = set(table)
    partial = sorted({t for run in runs for t in outcomes(run)[0]} - every)
    worst = max((s for _, s in table.values()), default=0.0)
    threshold = suggested_threshold(worst)
    lines = [f"{short_name(t)}  medians {', '.join(f'{m:.2f}' for m in ms)} ms  spread {s:.2f}%"
             for t, (ms, s) in table.items()]
    lines += [f"{short_name(t)}  not in every run: ignored" for t in partial]
    lines.append(f"max same-code spread {worst:.2f}% over {len(runs)} runs ({len(table)} cells); "
                 f"suggested threshold max({MIN_THRESHOLD_PCT:g}%, 2 x {worst:.2f}%) rounded up "
                 f"= {threshold}%")
    md = [f"## Same-code spread over {len(runs)} runs", "", "Runs: " + ", ".join(f"`{n}`" for n in names), "",
          "| cell | medians (ms) | spread |", "| --- | --- | ---: |"]
    md += [f"| `{short_name(t)}` | {', '.join(f'{m:.2f}' for m in ms)} | {s:.2f}% |" for t, (ms, s) in table.items()]
    md += ["", (f"Max spread {worst:.2f}%; suggested threshold = max({MIN_THRESHOLD_PCT:g}%, "
               f"2 x max spread) rounded up = **{threshold}%**.")]
    return lines, "\n".join(md) + "\n"


# --- command line ----------------------------------------------------------------
def _run_compare(args) -> int:
    if args.storage:
        if args.runs:
            raise ValueError("give either --storage DIR or BASELINE CURRENT, not both")
        found = latest_runs(args.storage, 2)
        if len(found) < 2:
            what = f"only one run ({found[0]})" if found else "no runs"
            print(f"gate PASS: {what} in {args.storage}; no baseline to compare with yet")
            return 0
        base_path, cur_path = found
    elif len(args.runs) == 2:
        base_path, cur_path = map(Path, args.runs)
    else:
        raise ValueError("compare needs BASELINE CURRENT (two JSON files) or --storage DIR")
    current = load_run(cur_path)
    if not base_path.exists():
        print(f"gate PASS: no baseline at {base_path}; nothing to compare {cur_path} with "
              f"(store this run as the baseline)")
        return 0
    baseline = load_run(base_path)
    check_comparable(baseline, current, str(base_path), str(cur_path))
    print(f"baseline {base_path} vs current {cur_path} ({gpu_model(current)})")
    software = software_differences(baseline, current)
    for diff in software:
        print(f"info: software differs: {diff}")
    verdicts = compare(baseline, current, args.threshold, args.cells)
    for v in verdicts:
        print(format_verdict(v, args.threshold))
    print(summary(verdicts, args.threshold))
    if args.markdown:
        Path(args.markdown).write_text(
            gate_markdown(verdicts, args.threshold, str(base_path), str(cur_path), software), encoding="utf-8")
    return 1 if any(v.failed for v in verdicts) else 0


def _run_spread(args) -> int:
    runs = [load_run(p) for p in args.runs]
    for path, run in zip(args.runs[1:], runs[1:]):
        check_comparable(runs[0], run, args.runs[0], path)
    lines, md = spread_report(runs, args.runs)
    print("\n".join(lines))
    if args.markdown:
        Path(args.markdown).write_text(md, encoding="utf-8")
    return 0


def _run_latest(args) -> int:
    found = latest_runs(args.storage, 1)
    if found:
        print(found[0])
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m attn_bench.gate", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compare", help="gate CURRENT against BASELINE (exit 1 on regression or lost coverage)")
    c.add_argument("runs", nargs="*", metavar="BASELINE CURRENT", help="two pytest-benchmark JSON files")
    c.add_argument("--storage", help="compare the two newest autosaved runs in this folder instead")
    c.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD_PCT,
                   help=f"allowed slowdown of a cell's median, in percent (default {DEFAULT_THRESHOLD_PCT:g})")
    c.add_argument("--markdown", metavar="FILE", help="also write the comparison as markdown")
    c.add_argument("--cells", metavar="REGEX",
                   help="gate only the cells whose test name matches (a subset rerun vs a full baseline)")
    c.set_defaults(func=_run_compare)
    s = sub.add_parser("spread", help="same-code spread of N runs and the threshold it suggests")
    s.add_argument("runs", nargs="+", metavar="RUN", help="pytest-benchmark JSON files of the same code")
    s.add_argument("--markdown", metavar="FILE", help="also write the spreads as markdown")
    s.set_defaults(func=_run_spread)
    latest = sub.add_parser("latest", help="print the newest autosaved run in a storage folder (nothing if none)")
    latest.add_argument("storage", metavar="DIR")
    latest.set_defaults(func=_run_latest)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (RunFileError, GateRefused, ValueError) as e:
        print(f"gate error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
