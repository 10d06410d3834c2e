"""Regression gate over this suite's pytest-benchmark JSON runs, with a statistical decision rule.

Commands (exit 0 = pass, 1 = the gate failed, 2 = refused or bad input):

    python -m attn_tools.gate compare BASELINE.json CURRENT.json [RERUN.json ...]
        [--baseline-rerun BASE_RERUN.json ...]
        [--reference REF.json] [--threshold PCT] [--confidence C] [--cells REGEX]
        [--json FILE] [--markdown FILE] [--allow-injected-slowdown]
    python -m attn_tools.gate compare --storage DIR [...]  # the two newest runs in DIR, by recorded date
    python -m attn_tools.gate calibrate SAME1.json SAME2.json SAME3.json [--slow SLOW.json ...]
    python -m attn_tools.gate spread RUN1.json RUN2.json [RUN3.json ...]  # fixed-percentage calibration
    python -m attn_tools.gate latest DIR                   # the newest run in DIR, by recorded date

The rule, per cell. r = median(current step times) / median(baseline step times), from the
per-round times each run recorded (pytest-benchmark's `stats.data`, per step whatever the
steps per round). Its interval: a percentile bootstrap, each run's rounds resampled with
replacement (DEFAULT_RESAMPLES times, fixed seed, so the verdict is reproducible), at
DEFAULT_CONFIDENCE. With t = the threshold (default DEFAULT_THRESHOLD_PCT %):

    REGRESSED  the whole interval lies above 1 + t        (fails the gate)
    unsure     r > 1 + t, but the interval reaches below  (passes; worth a confirmation rerun)
    faster     the whole interval lies below 1 - t
    ok         otherwise

LOST (fails): a cell that ran in the baseline but is skipped, failed or missing now; new: a
cell only in the current run. Confirmation: `compare` prints (and writes to --json) the pytest
selection of the REGRESSED and unsure cells; rerun only those with the same settings, then
`compare BASELINE CURRENT RERUN.json`: the current runs' rounds are pooled (resampled together,
so a rerun that disagrees with the first run widens the interval), and that verdict is final.
Where the baseline's commit (`rerun.baseline_commit` in --json) can be checked out, rerun the same
selection on it right before the current rerun and pass it as `--baseline-rerun`: the cells both
reran are then judged on the two reruns alone (`confirm_interleaved`), measured back to back in
one machine state on data that did not select them, so a run measured in another state (on the
H200, a baseline process 0.5-2.4 % slower than the next two) can neither hide nor fake a regression.

`compare` refuses (exit 2), naming both runs and their values: different GPU models, different
settings (profile, rounds, warmup, slowdown, iterations, steps_per_round; a setting is compared
when both runs recorded it; `--allow-injected-slowdown` lets only a current run carry an
`--attn-slowdown` that the baseline lacks, to test the gate), a run without per-round times,
and a selection (`--cells`) that matches no cell. Software differences (libraries, driver,
CUDA, cuDNN) and another GPU of the same model (by UUID) are printed as information only.
`--reference REF.json` gates against a fixed, pinned run as well as against the rolling
baseline, with the same rule, so slow drift that each rolling step lets through fails once it
adds up to the threshold. No baseline (missing
file, empty storage) and no reference passes and says so.

Measured on the H200 (`results/h200/2026-11-30/`: runs of native, sdpa_cudnn, flex and fa4, plain, both
lengths, both modes: 16 cells, 20 rounds of 1 step each, the session of 2026-11-30), with the
defaults (2 %, 95 %, 2000 resamples), by
`python -m attn_tools.gate calibrate g-same-1.json g-same-2.json g-same-3.json --slow g-slow.json g-slow15.json`:

- false alarms: 0 of 96 same-code cell comparisons (16 cells x 6 ordered pairs of the three
  runs); 0 of 96 after the confirmation rerun. The highest lower end of a same-code interval
  was +1.47 % (sdpa_cudnn/plain/3136/eager), under the 2 % threshold by 0.5 point.
- a real 5 % slowdown (each same-code current run's rounds x 1.05): 88 of 96 flagged, 92 of 96
  after the confirmation rerun. Every miss is a compiled cell; the four left after the rerun
  are fa4 and native at seq_len 196, whose rounds spread most (IQR up to 7 % of the median).
- injected slowdowns, measured +2.8 % to +8.2 % (`--attn-slowdown 0.08`): 47 of 48 (the miss is
  fa4/plain/196/compiled at +2.8 %); measured +10.4 % to +24.5 % (0.15): 48 of 48.

At the current settings (10 rounds of 3 steps; `results/h200/gate/`: native, sdpa_cudnn and flex,
plain, seq 196, eager and compiled): 0 of 84 same-code cell comparisons flagged over six runs on
three machines, the highest lower end -0.07 % in the fifth session's pair. A slowdown injected at
+4.5 to +5.4 % of each cell's own steps measured +2.9 to +4.6 % against the baseline process (5
cells REGRESSED, 1 unsure), and with both sides rerun back to back (`confirm_interleaved`)
+3.4 to +5.0 %: all 6 cells REGRESSED.

`calibrate` measures exactly this on N >= 2 same-code runs (and optional slowed-down runs).
`spread` keeps the older fixed-percentage calibration, for pytest-benchmark's own
`--benchmark-compare-fail=median:N%`: max(MIN_THRESHOLD_PCT, ceil(2 x max same-code spread)).
"""
from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import re
import sys
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .runs import (
    CHANGING_ID_SUFFIX,
    RunFileError,
    cell_params,
    comparable,
    gpu_model,
    latest_runs,
    load_run,
    median_ms,
    outcomes,
    round_times_s,
    run_settings,
    short_name,
)

DEFAULT_THRESHOLD_PCT = 2.0
DEFAULT_CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 0
# `spread`'s floor for a fixed-percentage threshold (pytest-benchmark's compare-fail).
MIN_THRESHOLD_PCT = 5.0
SOFTWARE_KEYS = ("driver", "cuda", "cudnn")
RERUN_STATUSES = ("REGRESSED", "unsure")


class GateRefused(Exception):
    """The runs cannot be compared (different GPU model or settings, no per-round times); exit 2."""


@dataclass(frozen=True)
class Rule:
    """The decision rule: flag a cell when its whole bootstrap interval of
    median(current) / median(baseline) lies above 1 + threshold_pct / 100."""

    threshold_pct: float = DEFAULT_THRESHOLD_PCT
    confidence: float = DEFAULT_CONFIDENCE
    resamples: int = DEFAULT_RESAMPLES
    seed: int = DEFAULT_SEED

    def __post_init__(self):
        if self.threshold_pct < 0:
            raise ValueError(f"threshold must be >= 0 percent, got {self.threshold_pct}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be between 0 and 1 (e.g. 0.95), got {self.confidence}")
        if self.resamples < 1:
            raise ValueError(f"resamples must be at least 1, got {self.resamples}")

    def describe(self) -> str:
        """The rule in one phrase, for summaries."""
        return (f"flagged when the {self.confidence:.0%} interval of the median ratio lies above "
                f"+{self.threshold_pct:g}%")


DEFAULT_RULE = Rule()


@dataclass(frozen=True)
class CellVerdict:
    """The gate's verdict on one cell."""

    test: str
    status: str  # "ok", "faster", "unsure", "REGRESSED", "LOST", "new"
    baseline_ms: float | None = None
    current_ms: float | None = None
    interval_pct: tuple[float, float] | None = None  # bootstrap interval of the change, percent
    note: str = ""

    @property
    def change_pct(self) -> float | None:
        """Change of the median step time in percent (+ = slower), None if not in both runs."""
        if self.baseline_ms is None or self.current_ms is None:
            return None
        return change_pct(self.baseline_ms, self.current_ms)

    @property
    def failed(self) -> bool:
        """Whether this cell fails the gate."""
        return self.status in ("REGRESSED", "LOST")

    def as_dict(self) -> dict:
        """The verdict as written by `compare --json`."""
        return {"test": self.test, "decision": self.status, "baseline_ms": self.baseline_ms,
                "current_ms": self.current_ms, "change_pct": self.change_pct,
                "interval_pct": list(self.interval_pct) if self.interval_pct else None, "note": self.note}


def change_pct(baseline_ms: float, current_ms: float) -> float:
    """Relative change of the median in percent (+ = slower)."""
    if baseline_ms <= 0:
        raise ValueError(f"baseline median must be positive, got {baseline_ms}")
    return (current_ms - baseline_ms) / baseline_ms * 100


def ratio_interval(baseline_rounds: list[list[float]], current_rounds: list[list[float]],
                   rule: Rule = DEFAULT_RULE) -> tuple[float, float]:
    """Bootstrap interval of median(current) / median(baseline) at `rule.confidence`.

    Each argument is a list of runs of the same code, each run a list of per-round times. A
    side's runs are pooled, and every resample draws as many rounds as the pool holds from it,
    with replacement: when a rerun disagrees with the first run, the mix in each draw varies
    and the interval widens. The interval is the percentile interval of the resampled ratios.
    """
    rng = np.random.default_rng(rule.seed)

    def resampled_medians(runs: list[list[float]]) -> np.ndarray:
        pooled = np.concatenate([np.asarray(rounds) for rounds in runs])
        return np.median(rng.choice(pooled, size=(rule.resamples, len(pooled))), axis=1)

    ratios = resampled_medians(current_rounds) / resampled_medians(baseline_rounds)
    tail = (1 - rule.confidence) / 2
    low, high = np.quantile(ratios, [tail, 1 - tail])
    return float(low), float(high)


def decide(ratio: float, interval: tuple[float, float], threshold_pct: float) -> str:
    """The status of a cell timed in both runs, from its median ratio and its interval."""
    limit = threshold_pct / 100
    low, high = interval
    if low > 1 + limit:
        return "REGRESSED"
    if ratio > 1 + limit:
        return "unsure"
    if high < 1 - limit:
        return "faster"
    return "ok"


def check_comparable(baseline: dict, current: dict, baseline_name: str, current_name: str,
                     allow_injected_slowdown: bool = False) -> None:
    """GateRefused naming both runs and why, if `runs.comparable` says they must not be compared."""
    reasons = comparable(baseline, current, allow_injected_slowdown)
    if reasons:
        raise GateRefused(
            f"refusing to compare baseline {baseline_name} with current {current_name}: "
            f"{'; '.join(reasons)}; keep one baseline per GPU model and rerun with the baseline's settings")


def require_round_times(run: dict, name: str) -> None:
    """GateRefused naming the run and a cell if a timed cell has no per-round times."""
    for test, bench in outcomes(run)[0].items():
        if round_times_s(bench) is None:
            raise GateRefused(
                f"{name}: {short_name(test)} has no per-round times (stats.data), which the gate's rule "
                "needs; write runs with --benchmark-json, or autosave them with --benchmark-save-data")


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


def gpu_uuids(run: dict) -> list[str]:
    """The physical GPUs a run timed on: its workers' (attn_tools.run) or its own, where recorded."""
    shards = (run.get("attn_suite") or {}).get("shards") or []
    uuids = {s.get("gpu_uuid") for s in shards} - {None}
    return sorted(uuids or {(run["machine_info"].get("gpu") or {}).get("uuid")} - {None})


def other_gpus(baseline: dict, current: dict) -> str | None:
    """A note when both runs recorded their GPUs' UUIDs and these differ, else None."""
    old, new = gpu_uuids(baseline), gpu_uuids(current)
    if not old or not new or old == new:
        return None
    return (f"GPU: the runs timed on different GPUs of this model ({', '.join(old)} -> {', '.join(new)}); "
            "two GPUs of one model can differ by a few percent, which the baseline rerun on this machine "
            "(--baseline-rerun) takes out")


def pooled_outcomes(runs: list[dict]) -> tuple[dict, dict, dict]:
    """(ran, skipped, failed) over several current runs of the same code.

    ran: test -> its benchmark entries, one per run that timed it; failed: in any run (a
    failure is never outvoted); skipped: only if no run timed it.
    """
    ran, skipped, failed = {}, {}, {}
    for run in runs:
        run_ran, run_skipped, run_failed = outcomes(run)
        for test, bench in run_ran.items():
            ran.setdefault(test, []).append(bench)
        for test, reason in run_skipped.items():
            skipped.setdefault(test, reason)
        for test, message in run_failed.items():
            failed.setdefault(test, message)
    ran = {test: benches for test, benches in ran.items() if test not in failed}
    skipped = {test: reason for test, reason in skipped.items() if test not in ran}
    return ran, skipped, failed


def _rounds(bench: dict) -> list[float]:
    rounds = round_times_s(bench)
    if rounds is None:
        raise ValueError(f"{short_name(bench['fullname'])} has no per-round times (stats.data)")
    return rounds


def _pooled_median_ms(benches: list[dict]) -> float:
    """Median step time in ms over the pooled rounds of one cell's entries from several runs."""
    return float(np.median(np.concatenate([_rounds(b) for b in benches]))) * 1e3


def compare(baseline: dict | list[dict], current: dict | list[dict], rule: Rule = DEFAULT_RULE,
            cells: str | None = None) -> list[CellVerdict]:
    """A verdict per cell of either side: regressions under `rule` and lost coverage fail.

    `current` is one run or several runs of the same code (a run and the confirmation reruns
    of some of its cells), whose rounds are pooled; so is `baseline` (the baseline run and
    reruns of its code). `cells`, a regex, restricts the gate to the cells whose test name it
    matches (to gate a rerun of a subset against a full baseline). ValueError if nothing is
    left to compare: a selection must not pass by matching nothing.
    """
    baselines = [baseline] if isinstance(baseline, dict) else list(baseline)
    currents = [current] if isinstance(current, dict) else list(current)
    try:
        selected = re.compile(cells or "")
    except re.error as e:
        raise ValueError(f"--cells is not a valid regular expression: {e}") from None

    def keep(found: dict) -> dict:
        return {test: value for test, value in found.items() if selected.search(test)}

    base_ran = keep(pooled_outcomes(baselines)[0])
    cur_ran, cur_skipped, cur_failed = map(keep, pooled_outcomes(currents))
    verdicts = []
    for test, benches in base_ran.items():
        base_ms = median_ms(benches[0]) if len(benches) == 1 else _pooled_median_ms(benches)
        if test in cur_ran:
            base_rounds = [_rounds(b) for b in benches]
            cur_rounds = [_rounds(b) for b in cur_ran[test]]
            ratio = float(np.median(np.concatenate(cur_rounds)) / np.median(np.concatenate(base_rounds)))
            low, high = ratio_interval(base_rounds, cur_rounds, rule)
            status = decide(ratio, (low, high), rule.threshold_pct)
            pooled = "; ".join(f"{len(r)} {side} runs pooled" for side, r in
                               (("baseline", base_rounds), ("current", cur_rounds)) if len(r) > 1)
            verdicts.append(CellVerdict(test, status, base_ms, base_ms * ratio,
                                        ((low - 1) * 100, (high - 1) * 100), pooled))
        elif test in cur_failed:
            verdicts.append(CellVerdict(test, "LOST", base_ms, note=f"failed now: {cur_failed[test]}"))
        elif test in cur_skipped:
            verdicts.append(CellVerdict(test, "LOST", base_ms, note=f"skipped now: {cur_skipped[test]}"))
        else:
            verdicts.append(CellVerdict(test, "LOST", base_ms, note="missing from the current run"))
    for test, benches in cur_ran.items():
        if test not in base_ran:
            verdicts.append(CellVerdict(test, "new", current_ms=_pooled_median_ms(benches), note="not in the baseline"))
    if not verdicts:
        if cells:
            raise ValueError(f"--cells {cells!r} matches no timed cell of the baseline or the current run; "
                             "an empty selection cannot pass")
        raise ValueError("no timed cell in the baseline or the current run; an empty gate cannot pass")
    return verdicts


def format_verdict(v: CellVerdict, rule: Rule = DEFAULT_RULE) -> str:
    """One terminal line for a cell."""
    line = f"{v.status:<9} {short_name(v.test)}"
    if v.baseline_ms is not None and v.current_ms is not None:
        line += f"  {v.baseline_ms:.2f} ms -> {v.current_ms:.2f} ms ({v.change_pct:+.1f}%"
        if v.interval_pct:
            line += f", {rule.confidence:.0%} interval [{v.interval_pct[0]:+.1f}%, {v.interval_pct[1]:+.1f}%]"
        line += f", threshold {rule.threshold_pct:g}%)" if v.status in RERUN_STATUSES else ")"
    elif v.baseline_ms is not None:
        line += f"  ran in the baseline ({v.baseline_ms:.2f} ms)"
    elif v.current_ms is not None:
        line += f"  {v.current_ms:.2f} ms"
    return f"{line}; {v.note}" if v.note else line


def counts(verdicts: list[CellVerdict]) -> str:
    """'2 regressed, 14 ok': the number of cells per status."""
    found = {}
    for v in verdicts:
        found[v.status] = found.get(v.status, 0) + 1
    return ", ".join(f"{n} {status.lower()}" for status, n in sorted(found.items()))


def summary(comparisons: dict[str, list[CellVerdict]], rule: Rule = DEFAULT_RULE) -> str:
    """The closing line: PASS/FAIL and the count per status against each compared run."""
    result = "FAIL" if any(v.failed for vs in comparisons.values() for v in vs) else "PASS"
    parts = "; ".join(f"{counts(vs)} against the {label}" for label, vs in comparisons.items())
    return f"gate {result}: {parts} ({rule.describe()})"


def rerun_cells(comparisons: dict[str, list[CellVerdict]]) -> list[str]:
    """The cells worth a confirmation rerun (REGRESSED or unsure against any compared run)."""
    return sorted({v.test for vs in comparisons.values() for v in vs if v.status in RERUN_STATUSES})


def rerun_pytest_args(tests: list[str], settings: dict) -> list[str]:
    """pytest arguments that time exactly `tests` again with a run's `settings` (profile, rounds...).

    The --attn-* options narrow the matrix to the cells' implementations, variants, lengths and
    modes; `-k` then keeps exactly the named cells.
    """
    if not tests:
        return []
    files = list(dict.fromkeys(test.partition("::")[0] for test in tests if "::" in test))
    args = [*files, "--benchmark-only"]
    for option, key in (("--attn-profile", "profile"), ("--attn-rounds", "rounds"), ("--attn-warmup", "warmup")):
        if key in settings:
            args += [option, str(settings[key])]
    if settings.get("slowdown"):
        args += ["--attn-slowdown", str(settings["slowdown"])]
    if "compile_scope" in settings:
        args += ["--attn-compile-scope", settings["compile_scope"]]
    if any(short_name(test).endswith(CHANGING_ID_SUFFIX + "]") for test in tests):
        args += ["--attn-varlen-lengths", "changing"]
    params = [cell_params(test) for test in tests]
    if all(params):
        for option, key in (("--attn-impl", "impl"), ("--attn-variant", "variant"),
                            ("--attn-seq-len", "seq_len"), ("--attn-mode", "mode"),
                            ("--attn-direction", "direction")):
            values = [str(p[key]) for p in params if key in p]
            if values:
                args += [option, ",".join(dict.fromkeys(values))]
    return [*args, "-k", " or ".join(short_name(test) for test in tests)]


def verdict_json(comparisons: dict[str, list[CellVerdict]], rule: Rule, files: dict,
                 rerun_args: list[str], baseline_commit: str | None = None) -> dict:
    """What `compare --json` writes: totals, the rule, and per compared run the cells' verdicts.

    Totals count distinct cells: `cells` judged, `flagged` REGRESSED against any compared run,
    `lost`, and `verdict` ("pass" or "fail").
    """
    every = [v for vs in comparisons.values() for v in vs]
    return {
        "verdict": "fail" if any(v.failed for v in every) else "pass",
        "cells": len({v.test for v in every}),
        "flagged": len({v.test for v in every if v.status == "REGRESSED"}),
        "lost": len({v.test for v in every if v.status == "LOST"}),
        "rule": {"threshold_pct": rule.threshold_pct, "confidence": rule.confidence,
                 "resamples": rule.resamples, "seed": rule.seed,
                 "statistic": "bootstrap percentile interval of median(current) / median(baseline)"},
        "files": files,
        "comparisons": {label: [v.as_dict() for v in vs] for label, vs in comparisons.items()},
        "rerun": {"cells": rerun_cells(comparisons), "pytest_args": rerun_args,
                  "baseline_commit": baseline_commit},
    }


def gate_markdown(comparisons: dict[str, list[CellVerdict]], rule: Rule, files: dict,
                  differences: list[str]) -> str:
    """The comparison as a markdown section."""
    lines = [f"## Regression gate: {summary(comparisons, rule)}", ""]
    lines += [", ".join(f"{label} `{name}`" for label, name in files.items() if name) + ".", ""]
    if differences:
        lines += ["Machine and software differences (information only): " + "; ".join(differences), ""]
    for label, verdicts in comparisons.items():
        lines += [f"Against the {label}:", "",
                  f"| status | cell | {label} ms | current ms | change | {rule.confidence:.0%} interval | note |",
                  "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
        for v in verdicts:
            base = f"{v.baseline_ms:.2f}" if v.baseline_ms is not None else ""
            cur = f"{v.current_ms:.2f}" if v.current_ms is not None else ""
            change = f"{v.change_pct:+.1f}%" if v.change_pct is not None else ""
            interval = f"{v.interval_pct[0]:+.1f}% .. {v.interval_pct[1]:+.1f}%" if v.interval_pct else ""
            lines.append(f"| {v.status} | `{short_name(v.test)}` | {base} | {cur} | {change} | {interval} | {v.note} |")
        lines.append("")
    return "\n".join(lines)


# --- calibration of the rule on same-code and slowed-down runs ----------------------
def scaled_run(run: dict, factor: float) -> dict:
    """A copy of `run` whose step times are all multiplied by `factor` (a synthetic slowdown)."""
    scaled = copy.deepcopy(run)
    for bench in scaled["benchmarks"]:
        stats = bench["stats"]
        stats["median"] *= factor
        if stats.get("data"):
            stats["data"] = [t * factor for t in stats["data"]]
    return scaled


def _only(tests: list[str]) -> str:
    return "|".join(f"^{re.escape(test)}$" for test in tests)


def confirmed(baseline: dict, current: dict, rerun: dict, rule: Rule = DEFAULT_RULE) -> list[CellVerdict]:
    """The two-stage verdict: gate `current`; the cells worth a rerun are judged again on
    `current` and `rerun` pooled (as `rerun` would have been run for them alone)."""
    first = compare(baseline, current, rule)
    again = rerun_cells({"baseline": first})
    if not again:
        return first
    second = {v.test: v for v in compare(baseline, [current, rerun], rule, cells=_only(again))}
    return [second.get(v.test, v) for v in first]


def confirm_interleaved(first: list[CellVerdict], base_reruns: list[dict], cur_reruns: list[dict],
                        rule: Rule = DEFAULT_RULE) -> list[CellVerdict]:
    """`first` with every cell that both sides reran judged again on those reruns alone.

    The reruns of the baseline's code and of the current code are measured back to back, in the
    same machine state, on data that did not select the cells; so their verdict is final, and a
    baseline (or current run) measured in another state can neither hide nor fake a regression.
    """
    both = set(pooled_outcomes(base_reruns)[0]) & set(pooled_outcomes(cur_reruns)[0])
    judged = {v.test for v in first}
    again = sorted(both & judged)
    if not again:
        return first
    second = {v.test: replace(v, note="; ".join(filter(None, ["judged on the interleaved reruns", v.note])))
              for v in compare(base_reruns, cur_reruns, rule, cells=_only(again))}
    return [second.get(v.test, v) for v in first]


@dataclass
class CalibrationCase:
    """One kind of comparison in a calibration: how many cell comparisons, how many flagged."""

    name: str
    compared: int = 0
    flagged: int = 0
    missed: tuple[str, ...] = ()

    def add(self, verdicts: list[CellVerdict], expect_flagged: bool) -> None:
        timed = [v for v in verdicts if v.interval_pct]
        self.compared += len(timed)
        self.flagged += sum(v.status == "REGRESSED" for v in timed)
        if expect_flagged:
            self.missed += tuple(short_name(v.test) for v in timed if v.status != "REGRESSED")

    def line(self) -> str:
        text = f"{self.name}: {self.flagged} of {self.compared} cell comparisons flagged"
        missed = Counter(self.missed)
        return text + ("; missed: " + ", ".join(f"{cell} x{n}" for cell, n in missed.items()) if missed else "")


def calibrate(same: list[dict], slow: list[dict] | None = None, rule: Rule = DEFAULT_RULE,
              synthetic_slowdown_pct: float = 5.0, slow_names: list[str] | None = None) -> dict:
    """Measure the rule's false alarms and detections on real runs.

    `same`: N >= 2 runs of the same code; every ordered pair is gated (N x (N-1) comparisons
    per cell) and any flag is a false alarm. With N >= 3, every ordered triple is also gated
    with the confirmation rerun (the third run as the rerun). The synthetic slowdown multiplies
    the current runs' times by 1 + synthetic_slowdown_pct / 100 (same pairs and triples). Each
    `slow` run (an injected slowdown) is gated against every same-code run.
    Returns {case name: CalibrationCase} plus 'worst_same_low': (lower end in percent, cell).
    """
    if len(same) < 2:
        raise ValueError(f"calibrate needs at least 2 same-code runs, got {len(same)}")
    factor = 1 + synthetic_slowdown_pct / 100
    result = {"same": CalibrationCase("same code"),
              "same_confirmed": CalibrationCase("same code, with the confirmation rerun"),
              "synthetic": CalibrationCase(f"synthetic +{synthetic_slowdown_pct:g}%"),
              "synthetic_confirmed": CalibrationCase(f"synthetic +{synthetic_slowdown_pct:g}%, "
                                                     "with the confirmation rerun")}
    worst = (-math.inf, "")
    for base, cur in itertools.permutations(range(len(same)), 2):
        verdicts = compare(same[base], same[cur], rule)
        result["same"].add(verdicts, expect_flagged=False)
        worst = max([worst, *((v.interval_pct[0], short_name(v.test)) for v in verdicts if v.interval_pct)])
        result["synthetic"].add(compare(same[base], scaled_run(same[cur], factor), rule), expect_flagged=True)
    for base, cur, rerun in itertools.permutations(range(len(same)), 3):
        result["same_confirmed"].add(confirmed(same[base], same[cur], same[rerun], rule), expect_flagged=False)
        result["synthetic_confirmed"].add(
            confirmed(same[base], scaled_run(same[cur], factor), scaled_run(same[rerun], factor), rule),
            expect_flagged=True)
    for i, run in enumerate(slow or []):
        name = (slow_names or [])[i] if i < len(slow_names or []) else f"slow run {i + 1}"
        slowdown = (run.get("attn_suite") or {}).get("slowdown")
        case = result.setdefault(f"slow{i}", CalibrationCase(f"injected slowdown {slowdown} ({name})"))
        for baseline in same:
            case.add(compare(baseline, run, rule), expect_flagged=True)
    result["worst_same_low"] = worst
    return result


def calibration_lines(result: dict, rule: Rule) -> list[str]:
    """The calibration as terminal lines (also the markdown's list items)."""
    low, cell = result["worst_same_low"]
    cases = [value for key, value in result.items() if key != "worst_same_low"]
    lines = [f"rule: {rule.describe()} ({rule.resamples} resamples, seed {rule.seed})"]
    lines += [case.line() for case in cases if case.compared]
    lines.append(f"highest lower end of a same-code interval: {low:+.2f}% ({cell}); threshold "
                 f"{rule.threshold_pct:g}%, margin {rule.threshold_pct - low:.2f} points")
    return lines


# --- fixed-percentage calibration (pytest-benchmark's --benchmark-compare-fail) ----------
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
def _rule(args) -> Rule:
    return Rule(threshold_pct=args.threshold, confidence=args.confidence)


def _write_json(path: str | None, content: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(content, indent=1) + "\n", encoding="utf-8")


def _run_compare(args) -> int:
    rule = _rule(args)
    if args.baseline_rerun and (args.storage or not args.runs or not Path(args.runs[0]).exists()):
        raise ValueError("--baseline-rerun needs a BASELINE file to pool it with (not --storage)")
    if args.storage:
        if args.runs:
            raise ValueError("give either --storage DIR or BASELINE CURRENT, not both")
        found = latest_runs(args.storage, 2)
        if len(found) < 2 and not args.reference:
            what = f"only one run ({found[0]})" if found else "no runs"
            print(f"gate PASS: {what} in {args.storage}; no baseline to compare with yet")
            _write_json(args.json, {"verdict": "pass", "cells": 0, "flagged": 0, "note": f"{what}: no baseline"})
            return 0
        if not found:
            raise ValueError(f"no run in {args.storage} to gate")
        base_path, cur_paths = (found[0] if len(found) == 2 else None), [found[-1]]
    elif len(args.runs) >= 2:
        base_path, *cur_paths = map(Path, args.runs)
    else:
        raise ValueError("compare needs BASELINE CURRENT [RERUN ...] (JSON files) or --storage DIR")
    currents = [load_run(p) for p in cur_paths]
    against = {}  # label -> (path, run)
    if base_path is not None and base_path.exists():
        against["baseline"] = (base_path, load_run(base_path))
    if args.reference:
        against["reference"] = (Path(args.reference), load_run(args.reference))
    cur_names = ", ".join(map(str, cur_paths))
    if not against:
        print(f"gate PASS: no baseline at {base_path}; nothing to compare {cur_names} with "
              f"(store this run as the baseline)")
        _write_json(args.json, {"verdict": "pass", "cells": 0, "flagged": 0, "note": "no baseline"})
        return 0
    base_reruns = [(Path(p), load_run(p)) for p in args.baseline_rerun]
    if base_reruns and len(currents) < 2:
        raise ValueError("--baseline-rerun needs the current code's rerun too: BASELINE CURRENT RERUN.json "
                         "--baseline-rerun BASE_RERUN.json")
    for path, run in [*against.values(), *zip(cur_paths, currents), *base_reruns]:
        require_round_times(run, str(path))
    for path, run in against.values():
        for cur_path, cur in zip(cur_paths, currents):
            check_comparable(run, cur, str(path), str(cur_path), args.allow_injected_slowdown)
    for cur_path, cur in zip(cur_paths[1:], currents[1:]):
        check_comparable(currents[0], cur, str(cur_paths[0]), str(cur_path))
    for path, run in base_reruns:
        base_path, base = against["baseline"]
        check_comparable(base, run, str(base_path), str(path))

    comparisons, differences = {}, []
    for label, (path, run) in against.items():
        print(f"{label} {path} vs current {cur_names} ({gpu_model(currents[0])})")
        diffs = software_differences(run, currents[0])
        differences += [f"{d} (vs the {label})" for d in diffs]
        for diff in diffs:
            print(f"info: software differs: {diff} (vs the {label})")
        gpus = other_gpus(run, currents[0])
        if gpus:
            differences.append(f"{gpus} (vs the {label})")
            print(f"info: {gpus} (vs the {label})")
        comparisons[label] = compare(run, currents, rule, args.cells)
        if label == "baseline" and base_reruns:
            comparisons[label] = confirm_interleaved(comparisons[label], [r for _, r in base_reruns],
                                                     currents[1:], rule)
        for v in comparisons[label]:
            print(format_verdict(v, rule))
    again = rerun_cells(comparisons)
    rerun_args = rerun_pytest_args(again, run_settings(currents[0]))
    base_commit = (against["baseline"][1].get("commit_info") or {}).get("id") if "baseline" in against else None
    if again and len(currents) == 1:
        print(f"{len(again)} cell(s) to confirm: rerun them, then gate again with the rerun's JSON added "
              f"after CURRENT:\n  python -m pytest {' '.join(_shell_quote(a) for a in rerun_args)} "
              "--benchmark-json RERUN.json")
        if base_commit:
            print(f"  and, where the baseline's commit {base_commit} can be checked out, the same selection "
                  "on it right before, passed as --baseline-rerun BASE_RERUN.json")
    print(summary(comparisons, rule))
    files = {"current": cur_names, **{label: str(path) for label, (path, _) in against.items()}}
    if base_reruns:
        files["baseline_reruns"] = ", ".join(str(p) for p, _ in base_reruns)
    _write_json(args.json, verdict_json(comparisons, rule, files, rerun_args, base_commit))
    if args.markdown:
        Path(args.markdown).write_text(gate_markdown(comparisons, rule, files, differences), encoding="utf-8")
    return 1 if any(v.failed for vs in comparisons.values() for v in vs) else 0


def _shell_quote(arg: str) -> str:
    return arg if re.fullmatch(r"[\w@%+=:,./-]+", arg) else "'" + arg.replace("'", "'\"'\"'") + "'"


def _run_calibrate(args) -> int:
    rule = _rule(args)
    same = [load_run(p) for p in args.runs]
    slow = [load_run(p) for p in args.slow]
    for path, run in zip([*args.runs, *args.slow], [*same, *slow]):
        require_round_times(run, path)
    for path, run in zip(args.runs[1:], same[1:]):
        check_comparable(same[0], run, args.runs[0], path)
    for path, run in zip(args.slow, slow):
        check_comparable(same[0], run, args.runs[0], path, allow_injected_slowdown=True)
    result = calibrate(same, slow, rule, args.synthetic, slow_names=args.slow)
    lines = calibration_lines(result, rule)
    print("\n".join(lines))
    if args.markdown:
        md = [f"## Gate calibration over {len(same)} same-code runs", "",
              "Same-code runs: " + ", ".join(f"`{p}`" for p in args.runs), ""] + [f"- {line}" for line in lines]
        Path(args.markdown).write_text("\n".join(md) + "\n", encoding="utf-8")
    return 0


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


def _add_rule_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD_PCT,
                   help=f"allowed slowdown of a cell's median in percent: a cell fails when its whole interval "
                        f"lies above it (default {DEFAULT_THRESHOLD_PCT:g})")
    p.add_argument("--confidence", type=float, default=DEFAULT_CONFIDENCE,
                   help=f"confidence of the bootstrap interval (default {DEFAULT_CONFIDENCE:g})")


def parser() -> argparse.ArgumentParser:
    """The command line's argument parser."""
    p = argparse.ArgumentParser(prog="python -m attn_tools.gate", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compare", help="gate CURRENT against BASELINE (exit 1 on regression or lost coverage)")
    c.add_argument("runs", nargs="*", metavar="BASELINE CURRENT [RERUN ...]",
                   help="pytest-benchmark JSON files: the baseline, then one or more current runs of the same "
                        "code (a run and confirmation reruns of some of its cells), whose rounds are pooled")
    c.add_argument("--storage", help="compare the two newest runs (by recorded date) in this folder instead")
    c.add_argument("--reference", metavar="REF.json",
                   help="also gate against this fixed reference run (catches drift the rolling baseline lets by)")
    _add_rule_options(c)
    c.add_argument("--cells", metavar="REGEX",
                   help="gate only the cells whose test name matches (a subset rerun vs a full baseline); "
                        "matching none is an error")
    c.add_argument("--json", metavar="FILE", help="also write the verdict as JSON")
    c.add_argument("--markdown", metavar="FILE", help="also write the comparison as markdown")
    c.add_argument("--baseline-rerun", nargs="+", default=[], metavar="RERUN.json",
                   help="reruns of the baseline's code (the cells to confirm, run on the baseline's commit "
                        "right before the current rerun): the cells both reran are judged on the two reruns "
                        "alone, so a run measured in another machine state cannot hide or fake a regression")
    c.add_argument("--allow-injected-slowdown", action="store_true",
                   help="accept current runs made with --attn-slowdown against a baseline without (tests the gate)")
    c.set_defaults(func=_run_compare)
    cal = sub.add_parser("calibrate", help="the rule's false alarms and detections on same-code (and slowed) runs")
    cal.add_argument("runs", nargs="+", metavar="SAME", help="pytest-benchmark JSON files of the same code (>= 2)")
    cal.add_argument("--slow", nargs="*", default=[], metavar="SLOW",
                     help="runs of the same code with --attn-slowdown: every cell should be flagged")
    cal.add_argument("--synthetic", type=float, default=5.0, metavar="PCT",
                     help="synthetic slowdown applied to the same-code runs' times (default 5)")
    _add_rule_options(cal)
    cal.add_argument("--markdown", metavar="FILE", help="also write the calibration as markdown")
    cal.set_defaults(func=_run_calibrate)
    s = sub.add_parser("spread", help="same-code spread of N runs and the fixed threshold it suggests")
    s.add_argument("runs", nargs="+", metavar="RUN", help="pytest-benchmark JSON files of the same code")
    s.add_argument("--markdown", metavar="FILE", help="also write the spreads as markdown")
    s.set_defaults(func=_run_spread)
    latest = sub.add_parser("latest", help="print the newest run (by recorded date) in a storage folder")
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
