"""The gate's policy: which runs are baselines, which cells are judged, and what fails.

- Baselines: a run is eligible when it is complete (`attn_suite.complete` is not False), ran one
  worker per GPU (`workers_per_gpu`), has no failed cell, carries no injected slowdown, did not fail
  a gate (`attn_suite.gate.verdict`), and is `comparable()` with the current run. The rolling
  baseline is the median per cell of the last k eligible runs (`robust` against one odd run, and it
  cannot ratchet: one slow run moves a median of k little). A pinned reference per GPU model
  (`results/<gpu-slug>/reference.json`, written by `gate pin`) is gated against with the same rule.
- Cells: every cell of the current run is accounted for. Timed in both: judged (gate_rule).
  Timed in the baseline but skipped, failed or missing now: LOST (fails). Failed now and not in the
  baseline: FAILED (fails). Timed now only: new. Reruns judge only cells the current run timed: a
  lost cell stays lost.
- Confirmation: the REGRESSED and unsure cells are rerun interleaved ABBA (current code, baseline
  code, baseline code, current code) and judged on those reruns alone; the order is checked by the
  runs' recorded dates. Without the baseline's reruns (its commit cannot be checked out), the current
  runs are pooled against the stored baseline, with the machine shift left in the error.
- Verdict: fail if a cell is REGRESSED, LOST or FAILED, or the common shift is REGRESSED, or (unless
  allow_unsure) a cell or the common shift is still unsure; before any confirmation, unsure means
  "confirm" and fails too.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .gate_rule import (
    DEFAULT_RULE,
    Rule,
    Variances,
    cell_dof,
    cell_variance,
    classify,
    common_shift,
    log_median,
    median_var_factor,
    p_above,
    pct,
    reject,
    shift_variance,
    within_run_var,
)
from .runs import (
    RUN_GLOB,
    comparable,
    is_complete,
    load_run,
    outcomes,
    recorded_date,
    round_times_s,
    workers_per_gpu,
)

FAILING = ("REGRESSED", "LOST", "FAILED")
RERUN_STATUSES = ("REGRESSED", "unsure")
DEFAULT_BASELINE_RUNS = 5
Z95 = 1.959964


class GateRefused(Exception):
    """The runs cannot be compared (different GPU model, settings or software, no per-round times,
    reruns not interleaved); exit 2."""


@dataclass(frozen=True)
class CellVerdict:
    """The gate's verdict on one cell; `log_ratio` = log(current / baseline median), `se` its error."""

    test: str
    status: str  # ok, faster, unsure, REGRESSED, LOST, FAILED, new
    baseline_ms: float | None = None
    current_ms: float | None = None
    log_ratio: float | None = None
    se: float | None = None
    p: float | None = None
    stage: str = ""  # "stored" (against the stored baseline) or "abba" / "pooled" (confirmation)
    note: str = ""

    @property
    def change_pct(self) -> float | None:
        """Change of the median step time in percent (+ = slower), None if not timed in both."""
        return None if self.log_ratio is None else pct(self.log_ratio)

    @property
    def interval_pct(self) -> tuple[float, float] | None:
        """The change's 95 % interval (unadjusted), percent."""
        if self.log_ratio is None or self.se is None:
            return None
        return pct(self.log_ratio - Z95 * self.se), pct(self.log_ratio + Z95 * self.se)

    def failed(self, allow_unsure: bool = False) -> bool:
        """Whether this cell fails the gate."""
        return self.status in FAILING or (self.status == "unsure" and not allow_unsure)

    def as_dict(self) -> dict:
        """The verdict as `compare --json` writes it."""
        return {"test": self.test, "decision": self.status, "baseline_ms": self.baseline_ms,
                "current_ms": self.current_ms, "change_pct": self.change_pct,
                "interval_pct": list(self.interval_pct) if self.interval_pct else None,
                "p": self.p, "stage": self.stage, "note": self.note}


@dataclass(frozen=True)
class Shift:
    """The shift common to all judged cells (the median log ratio) and its verdict:
    ok, shifted (beyond the threshold against a stored baseline: confirm), unsure, REGRESSED (the
    code, after confirmation), machine (beyond the threshold before, not in the ABBA reruns)."""

    log_ratio: float
    se: float
    p: float
    cells: int
    status: str
    note: str = ""

    @property
    def change_pct(self) -> float:
        return pct(self.log_ratio)

    @property
    def interval_pct(self) -> tuple[float, float]:
        return pct(self.log_ratio - Z95 * self.se), pct(self.log_ratio + Z95 * self.se)

    def failed(self, allow_unsure: bool = False) -> bool:
        return self.status == "REGRESSED" or (self.status in ("shifted", "unsure") and not allow_unsure)

    def as_dict(self) -> dict:
        return {"change_pct": self.change_pct, "interval_pct": list(self.interval_pct), "p": self.p,
                "cells": self.cells, "decision": self.status, "note": self.note}


class Comparison(list):
    """The verdicts of one comparison (a list of CellVerdict) with its common shift (`shift`, None
    when no cell was timed in both)."""

    shift: Shift | None = None

    def failed(self, allow_unsure: bool = False) -> bool:
        """Whether this comparison fails the gate."""
        return any(v.failed(allow_unsure) for v in self) or bool(self.shift and self.shift.failed(allow_unsure))


# --- what a side of a comparison knows about a cell -----------------------------------------
@dataclass(frozen=True)
class CellData:
    """One cell over a side's runs: y (median of the runs' log medians), k runs, their mean
    within-run variance, and the sum of squares of the runs' log medians around their mean."""

    y: float
    k: int
    within: float
    ss: float

    @property
    def ms(self) -> float:
        return math.exp(self.y) * 1e3


def side(runs: list[dict], rule: Rule = DEFAULT_RULE) -> dict[str, CellData]:
    """Each cell that any of `runs` timed (with round times) -> CellData."""
    found: dict[str, list[tuple[float, float]]] = {}
    for run in runs:
        for test, bench in outcomes(run)[0].items():
            rounds = round_times_s(bench)
            if rounds:
                found.setdefault(test, []).append((log_median(rounds), within_run_var(rounds, rule)))
    result = {}
    for test, values in found.items():
        ys = np.array([y for y, _ in values])
        result[test] = CellData(float(np.median(ys)), len(ys), float(np.mean([w for _, w in values])),
                                float(np.sum((ys - ys.mean()) ** 2)))
    return result


def _judge(pairs: dict[str, tuple[CellData, CellData]], rule: Rule, variances: Variances, stage: str,
           interleaved: bool) -> tuple[dict[str, CellVerdict], Shift | None]:
    """Verdicts (and the common shift) for cells with data on both sides: {test: (baseline, current)}."""
    tau2 = 0.0 if interleaved else shift_variance(variances, rule)
    rows = []
    for test, (b, c) in pairs.items():
        extra = (b.ss + c.ss, b.k - 1 + c.k - 1) if interleaved else (0.0, 0)
        v = cell_variance(variances, test, max(b.within, c.within), rule, extra)
        factor = median_var_factor(c.k) + median_var_factor(b.k)
        d = c.y - b.y
        se = math.sqrt((v + tau2) * factor)
        dof = cell_dof(variances, test, rule, extra[1])
        rows.append((test, b, c, d, se, v * factor, dof))
    if not rows:
        return {}, None
    shift_d, shift_se = common_shift([r[3] for r in rows], [r[5] for r in rows])
    pvalues = [p_above(d, se, rule.limit, dof) for _, _, _, d, se, _, dof in rows]
    pvalues.append(p_above(shift_d, shift_se, rule.limit))
    rejected = reject(pvalues, rule)
    verdicts = {}
    for (test, b, c, d, se, _, _), p, rej in zip(rows, pvalues, rejected):
        runs_note = f"{c.k} current and {b.k} baseline runs" if c.k > 1 or b.k > 1 else ""
        status = classify(d, se, p, rej, stage != "stored", rule)
        verdicts[test] = CellVerdict(test, status, b.ms, c.ms, d, se, p, stage, runs_note)
    shift_status = "REGRESSED" if rejected[-1] else (
        "unsure" if (pvalues[-1] < rule.alpha if stage != "stored" else shift_d > rule.limit) else "ok")
    return verdicts, Shift(shift_d, shift_se, pvalues[-1], len(rows), shift_status)


def _selector(cells: str | None):
    try:
        return re.compile(cells or "")
    except re.error as e:
        raise ValueError(f"--cells is not a valid regular expression: {e}") from None


def compare(baseline: dict | list[dict], current: dict | list[dict], rule: Rule = DEFAULT_RULE,
            cells: str | None = None, variances: Variances | None = None) -> Comparison:
    """A verdict per cell of either side against a stored baseline (stage 1), and the common shift.

    `baseline`: a run or the runs of a robust baseline (median per cell). `current`: the run under
    test, or [run, *its reruns] (confirmation without the baseline's reruns, `confirm`). `cells`,
    a regex, restricts the gate to the cells whose test id it matches. `variances`: the history's
    (none: the rule's priors). ValueError if nothing is left to judge, or if the selection matches
    only cells the baseline lacks.
    """
    baselines = [baseline] if isinstance(baseline, dict) else list(baseline)
    currents = [current] if isinstance(current, dict) else list(current)
    variances = variances or Variances()
    selected = _selector(cells)

    def keep(found: dict) -> dict:
        return {test: value for test, value in found.items() if selected.search(test)}

    base = keep(side(baselines, rule))
    cur_ran, cur_skipped, cur_failed = map(keep, outcomes(currents[0]))
    cur = keep(side([currents[0]], rule))
    judged, shift = _judge({t: (base[t], cur[t]) for t in base if t in cur}, rule, variances, "stored", False)
    if shift and shift.status in ("REGRESSED", "unsure"):
        shift = replace(shift, status="shifted", note="against a stored baseline: machine or code? the ABBA "
                        "confirmation tells")
    result = Comparison()
    for test, data in base.items():
        if test in judged:
            result.append(judged[test])
        elif test in cur_failed:
            result.append(CellVerdict(test, "LOST", data.ms, note=f"failed now: {cur_failed[test]}"))
        elif test in cur_skipped:
            result.append(CellVerdict(test, "LOST", data.ms, note=f"skipped now: {cur_skipped[test]}"))
        elif test in cur_ran:
            result.append(CellVerdict(test, "LOST", data.ms, note="timed now without per-round times"))
        else:
            result.append(CellVerdict(test, "LOST", data.ms, note="missing from the current run"))
    for test, message in cur_failed.items():
        if test not in base:
            result.append(CellVerdict(test, "FAILED", note=f"failed now, not in the baseline: {message}"))
    for test, data in cur.items():
        if test not in base and test not in cur_failed:
            result.append(CellVerdict(test, "new", current_ms=data.ms, note="not in the baseline"))
    if not any(v.status not in ("new", "FAILED") for v in result):
        if cells and result:
            raise ValueError(f"--cells {cells!r} matches only cells the baseline lacks (new or failed now: "
                             f"{', '.join(v.test for v in result)}); nothing to gate them against")
        if not result:
            what = f"--cells {cells!r} matches no" if cells else "no"
            raise ValueError(f"{what} timed cell of the baseline or the current run; an empty gate cannot pass")
    result.shift = shift
    if len(currents) > 1:
        return confirm(result, baselines, currents[1:], [], rule, variances, first_run=currents[0])
    return result


def confirm(first: Comparison, baselines: list[dict], current_reruns: list[dict], baseline_reruns: list[dict],
            rule: Rule = DEFAULT_RULE, variances: Variances | None = None,
            first_run: dict | None = None) -> Comparison:
    """`first` with every judged cell that the reruns timed judged again (stage 2).

    With `baseline_reruns` (interleaved ABBA with `current_reruns`): on the reruns alone, the
    machine's shift cancels. Without: the current run (`first_run`) and its reruns pooled against
    the stored baseline. LOST and FAILED cells stay as they are. The common shift is judged again;
    one that exceeded the threshold before and not now is the machine's (information), with the
    baseline's own shift on this machine in its note.
    """
    variances = variances or Variances()
    judged = {v.test for v in first if v.log_ratio is not None}
    interleaved = bool(baseline_reruns)
    if interleaved:
        base, cur, stage = side(baseline_reruns, rule), side(current_reruns, rule), "abba"
    else:
        base, cur, stage = side(baselines, rule), side([first_run or {}, *current_reruns], rule), "pooled"
    reran = cur if interleaved else side(current_reruns, rule)
    again = {t: (base[t], cur[t]) for t in sorted(judged) if t in base and t in cur and t in reran}
    second, shift = _judge(again, rule, variances, stage, interleaved)
    if not second:
        return first
    result = Comparison(second.get(v.test, v) for v in first)
    before = first.shift
    if before and before.status == "shifted" and shift.status == "ok" and shift.log_ratio <= rule.limit \
            and interleaved:
        stored = side(baselines, rule)
        moved = [base[t].y - stored[t].y for t in again if t in stored]
        machine = f"; the baseline's own rerun moved {pct(float(np.median(moved))):+.1f}%" if moved else ""
        shift = replace(shift, status="machine", note=f"{before.change_pct:+.1f}% against the stored baseline, "
                        f"{shift.change_pct:+.1f}% in the ABBA reruns: the machine, not the code{machine}")
    # The confirmed cells' median answers the stored comparison's question "did the whole run move?"
    # only when it was asked; otherwise the run's common shift is the stored comparison's.
    result.shift = shift if before is None or before.status == "shifted" else before
    return result


def check_interleaved(baseline_reruns: list[tuple[str, dict]], current_reruns: list[tuple[str, dict]]) -> None:
    """GateRefused unless the reruns, ordered by recorded date, are balanced like ABBA: the current
    code's and the baseline's mean positions are equal (A B B A, B A A B, A B B A A B B A...)."""
    if not baseline_reruns or not current_reruns:
        raise GateRefused("an ABBA confirmation needs reruns of both the current code and the baseline's")
    order = sorted([(recorded_date(run, name), "A", name) for name, run in current_reruns]
                   + [(recorded_date(run, name), "B", name) for name, run in baseline_reruns])
    ranks = {"A": [], "B": []}
    for i, (_, who, _) in enumerate(order):
        ranks[who].append(i)
    if not math.isclose(np.mean(ranks["A"]), np.mean(ranks["B"])):
        pattern = "".join(who for _, who, _ in order)
        raise GateRefused(f"confirmation reruns ran in the order {pattern} (A = current code, B = baseline's, by "
                          "recorded date): run them interleaved A B B A so that a drift of the machine cancels")


# --- baselines ---------------------------------------------------------------------------------
def baseline_problems(run: dict) -> list[str]:
    """Why `run` must never be a baseline or a reference ([] when it may)."""
    suite = run.get("attn_suite") or {}
    problems = []
    if not is_complete(run):
        problems.append("incomplete (attn_suite.complete is false)")
    if workers_per_gpu(run) > 1:
        problems.append(f"shared GPU ({workers_per_gpu(run)} workers per GPU)")
    if suite.get("failed"):
        problems.append(f"{len(suite['failed'])} failed cell(s)")
    if suite.get("slowdown"):
        problems.append(f"injected slowdown {suite['slowdown']}")
    if (suite.get("gate") or {}).get("verdict") == "fail":
        problems.append("it failed the gate")
    return problems


def stored_runs(folder: str | Path) -> list[tuple[Path, dict]]:
    """Every run stored under `folder` (any machine-id subfolder), oldest first by recorded date."""
    folder = Path(folder)
    paths = folder.rglob(RUN_GLOB) if folder.is_dir() else []
    found = [(path, load_run(path)) for path in paths]
    return sorted(found, key=lambda item: (recorded_date(item[1], item[0]), str(item[0])))


def rolling_baseline(folder: str | Path, current: dict, current_path: str | Path | None = None,
                     count: int = DEFAULT_BASELINE_RUNS,
                     allow_software_change: bool = False) -> list[tuple[Path, dict]]:
    """The last `count` eligible runs under `folder` recorded before `current` (`baseline_problems`
    empty, `comparable` with it); their per-cell median is the rolling baseline."""
    when = recorded_date(current, current_path or "current run")
    eligible = [(path, run) for path, run in stored_runs(folder)
                if (current_path is None or Path(path).resolve() != Path(current_path).resolve())
                and recorded_date(run, path) < when and not baseline_problems(run)
                and not comparable(run, current, allow_software_change=allow_software_change)]
    return eligible[-count:] if count else []


def code_groups(runs: list[dict]) -> list[list[dict]]:
    """`runs` grouped by the code they timed (commit id; runs that recorded none are left out)."""
    groups: dict[str, list[dict]] = {}
    for run in runs:
        commit = (run.get("commit_info") or {}).get("id")
        if commit:
            groups.setdefault(commit, []).append(run)
    return list(groups.values())
