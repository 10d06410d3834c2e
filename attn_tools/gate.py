"""Regression gate over this suite's pytest-benchmark JSON runs (the command line).

    python -m attn_tools.gate compare BASELINE.json CURRENT.json [RERUN.json ...] [--baseline-rerun B.json ...]
    python -m attn_tools.gate compare --storage DIR [CURRENT.json]   # rolling baseline: median of the last k
    python -m attn_tools.gate calibrate SAME1.json SAME2.json [...] [--cells-total 124] [--slowdown 3 5]
    python -m attn_tools.gate pin RUN.json [--out results/<gpu-slug>/reference.json]
    python -m attn_tools.gate latest DIR

Exit 0 = pass, 1 = the gate failed (or cells await confirmation), 2 = refused or bad input.
The statistics are in `attn_tools.gate_rule`, the policy (baselines, verdicts) in
`attn_tools.gate_policy`; docs/gate.md has the rule, the numbers and the commands behind them.
Options of compare: --threshold PCT (the practical effect size, default 2), --alpha (per run, default
0.05), --correction holm|bh, --history FILE|DIR ... (same-code runs for the run-to-run variances;
with --storage, DIR itself), --reference REF.json, --cells REGEX, --allow-unsure,
--allow-software-change, --allow-injected-slowdown, --no-baseline-ok, --json, --markdown.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from .gate_policy import (
    DEFAULT_BASELINE_RUNS,
    FAILING,
    RERUN_STATUSES,
    CellVerdict,
    Comparison,
    GateRefused,
    baseline_problems,
    check_interleaved,
    code_groups,
    compare,
    confirm,
    rolling_baseline,
    stored_runs,
)
from .gate_rule import (
    CORRECTIONS,
    DEFAULT_ALPHA,
    DEFAULT_SHIFT_SD_PCT,
    DEFAULT_THRESHOLD_PCT,
    Rule,
    Variances,
    cell_variance,
    error_rates,
    history_variances,
    shift_variance,
)
from .runs import (
    CHANGING_ID_SUFFIX,
    RunFileError,
    cell_params,
    comparable,
    gpu_model,
    latest_runs,
    load_run,
    outcomes,
    round_times_s,
    run_settings,
    short_name,
    software_differences,
)

__all__ = ["CellVerdict", "Comparison", "GateRefused", "Rule", "compare", "confirm", "main", "parser",
           "rerun_pytest_args"]
DEFAULT_CELLS_TOTAL = 124  # the whole matrix: the family a false-alarm rate is quoted for
REFERENCE_NAME = "reference.json"


def check_comparable(baseline: dict, current: dict, baseline_name: str, current_name: str,
                     allow_injected_slowdown: bool = False, allow_software_change: bool = False) -> None:
    """GateRefused naming both runs and why, if `runs.comparable` says they must not be compared."""
    reasons = comparable(baseline, current, allow_injected_slowdown, allow_software_change=allow_software_change)
    if reasons:
        raise GateRefused(
            f"refusing to compare baseline {baseline_name} with current {current_name}: {'; '.join(reasons)}; "
            "keep one baseline per GPU model and settings (--allow-software-change when a version change "
            "is what is under test)")


def require_round_times(run: dict, name: str) -> None:
    """GateRefused naming the run and a cell if a timed cell has no per-round times."""
    for test, bench in outcomes(run)[0].items():
        if round_times_s(bench) is None:
            raise GateRefused(
                f"{name}: {short_name(test)} has no per-round times (stats.data), which the gate's rule "
                "needs; write runs with --benchmark-json, or autosave them with --benchmark-save-data")


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
            "(the ABBA confirmation) takes out")


def format_verdict(v: CellVerdict) -> str:
    """One terminal line for a cell."""
    line = f"{v.status:<9} {short_name(v.test)}"
    if v.change_pct is not None:
        low, high = v.interval_pct
        line += (f"  {v.baseline_ms:.2f} ms -> {v.current_ms:.2f} ms ({v.change_pct:+.1f}%, "
                 f"95% interval [{low:+.1f}%, {high:+.1f}%], p {v.p:.2g}, {v.stage})")
    elif v.baseline_ms is not None:
        line += f"  ran in the baseline ({v.baseline_ms:.2f} ms)"
    elif v.current_ms is not None:
        line += f"  {v.current_ms:.2f} ms"
    return f"{line}; {v.note}" if v.note else line


def format_shift(comparison: Comparison) -> str:
    """The common shift's line."""
    s = comparison.shift
    if s is None:
        return "common shift: no cell timed in both"
    low, high = s.interval_pct
    line = (f"common shift {s.status}: {s.change_pct:+.2f}% (median over {s.cells} cells, 95% interval "
            f"[{low:+.2f}%, {high:+.2f}%], p {s.p:.2g})")
    return f"{line}; {s.note}" if s.note else line


def counts(verdicts: list[CellVerdict]) -> str:
    """'2 regressed, 14 ok': the number of cells per status."""
    found: dict[str, int] = {}
    for v in verdicts:
        found[v.status] = found.get(v.status, 0) + 1
    return ", ".join(f"{n} {status.lower()}" for status, n in sorted(found.items()))


def run_verdict(comparisons: dict[str, Comparison], allow_unsure: bool, confirmed: bool) -> str:
    """pass, fail, or confirm (only unsure cells or an unconfirmed shift stand between the run and a pass)."""
    if any(v.status in FAILING for vs in comparisons.values() for v in vs) \
            or any(vs.shift and vs.shift.status == "REGRESSED" for vs in comparisons.values()):
        return "fail"
    if any(vs.failed(allow_unsure) for vs in comparisons.values()):
        return "fail" if confirmed else "confirm"
    return "pass"


def summary(comparisons: dict[str, Comparison], rule: Rule, verdict: str) -> str:
    """The closing line: PASS/FAIL/CONFIRM and the count per status against each compared run."""
    parts = "; ".join(f"{counts(vs)} against the {label}" for label, vs in comparisons.items())
    word = {"pass": "PASS", "fail": "FAIL", "confirm": "FAIL (confirm: rerun the cells ABBA)"}[verdict]
    return f"gate {word}: {parts} ({rule.describe()})"


def rerun_cells(comparisons: dict[str, Comparison]) -> list[str]:
    """The cells to confirm: REGRESSED or unsure against any compared run, and every judged cell of a
    comparison whose common shift exceeds the threshold (the whole run moved: machine or code?)."""
    return sorted({v.test for vs in comparisons.values() for v in vs if v.status in RERUN_STATUSES
                   or (vs.shift and vs.shift.status == "shifted" and v.log_ratio is not None)})


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
    args += [option for option, key in (("--attn-bare-loop", "bare_loop"), ("--attn-study", "study"))
             if settings.get(key)]
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



def verdict_json(comparisons: dict[str, Comparison], rule: Rule, files: dict, rerun_args: list[str],
                 verdict: str, baseline_commit: str | None = None) -> dict:
    """What `compare --json` writes: totals, the rule, per compared run the cells' verdicts and the
    common shift, and the confirmation to run (cells, pytest arguments, the baseline's commit)."""
    every = [v for vs in comparisons.values() for v in vs]
    return {
        "verdict": verdict,
        "cells": len({v.test for v in every}),
        "flagged": len({v.test for v in every if v.status == "REGRESSED"}),
        "lost": len({v.test for v in every if v.status in ("LOST", "FAILED")}),
        "unsure": len({v.test for v in every if v.status == "unsure"}),
        "rule": {"threshold_pct": rule.threshold_pct, "alpha": rule.alpha, "correction": rule.correction,
                 "prior_dof": rule.prior_dof, "run_sd_pct": rule.run_sd_pct, "shift_sd_pct": rule.shift_sd_pct,
                 "statistic": "log(median current / median baseline), se from run-to-run variances"},
        "files": files,
        "comparisons": {label: [v.as_dict() for v in vs] for label, vs in comparisons.items()},
        "shift": {label: vs.shift.as_dict() if vs.shift else None for label, vs in comparisons.items()},
        "rerun": {"cells": rerun_cells(comparisons), "pytest_args": rerun_args, "baseline_commit": baseline_commit,
                  "order": "ABBA: current code, baseline's code, baseline's code, current code"},
    }


def gate_markdown(comparisons: dict[str, Comparison], rule: Rule, files: dict, verdict: str,
                  differences: list[str]) -> str:
    """The comparison as a markdown section."""
    lines = [f"## Regression gate: {summary(comparisons, rule, verdict)}", ""]
    lines += [", ".join(f"{label} `{name}`" for label, name in files.items() if name) + ".", ""]
    if differences:
        lines += ["Differences (information only): " + "; ".join(differences), ""]
    for label, verdicts in comparisons.items():
        lines += [f"Against the {label}: {format_shift(verdicts)}.", "",
                  f"| status | cell | {label} ms | current ms | change | 95% interval | p | note |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
        for v in verdicts:
            base = f"{v.baseline_ms:.2f}" if v.baseline_ms is not None else ""
            cur = f"{v.current_ms:.2f}" if v.current_ms is not None else ""
            change = f"{v.change_pct:+.1f}%" if v.change_pct is not None else ""
            interval = "{:+.1f}% .. {:+.1f}%".format(*v.interval_pct) if v.interval_pct else ""
            p = f"{v.p:.2g}" if v.p is not None else ""
            lines.append(f"| {v.status} | `{short_name(v.test)}` | {base} | {cur} | {change} | {interval} | {p} "
                         f"| {v.note} |")
        lines.append("")
    return "\n".join(lines)


# --- command line ----------------------------------------------------------------
def _rule(args) -> Rule:
    return Rule(threshold_pct=args.threshold, alpha=args.alpha, correction=args.correction,
                shift_sd_pct=args.shift_sd)


def _write_json(path: str | None, content: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(content, indent=1) + "\n", encoding="utf-8")


def _history(paths: list[str], current: dict, allow_software_change: bool) -> tuple[Variances, int]:
    """The variances of the comparable, eligible runs in `paths` (files or storage folders), grouped by
    commit; and how many runs they came from."""
    runs = []
    for path in map(Path, paths):
        found = [run for _, run in stored_runs(path)] if path.is_dir() else [load_run(path)]
        runs += [run for run in found if not baseline_problems(run)
                 and all(round_times_s(b) for b in outcomes(run)[0].values())
                 and not comparable(run, current, allow_software_change=allow_software_change)]
    variances = history_variances(code_groups(runs))
    return variances, variances.runs


def _shell_quote(arg: str) -> str:
    return arg if re.fullmatch(r"[\w@%+=:,./-]+", arg) else "'" + arg.replace("'", "'\"'\"'") + "'"


def _run_compare(args) -> int:
    rule = _rule(args)
    if args.storage:
        if len(args.runs) > 1:
            raise ValueError("with --storage DIR give at most the CURRENT run (default: the newest in DIR)")
        cur_paths = [Path(args.runs[0])] if args.runs else latest_runs(args.storage, 1)
        if not cur_paths:
            raise ValueError(f"no run in {args.storage} to gate")
    elif len(args.runs) >= 2:
        cur_paths = [Path(p) for p in args.runs[1:]]
    else:
        raise ValueError("compare needs BASELINE CURRENT [RERUN ...] (JSON files) or --storage DIR")
    currents = [load_run(p) for p in cur_paths]
    current = currents[0]
    against: dict[str, tuple[str, list[dict]]] = {}  # label -> (names, runs)
    if args.storage:
        found = rolling_baseline(args.storage, current, cur_paths[0], args.baseline_runs, args.allow_software_change)
        if found:
            against["baseline"] = (", ".join(str(p) for p, _ in found), [r for _, r in found])
        elif not args.no_baseline_ok:
            raise ValueError(f"no eligible baseline in {args.storage} (complete, one worker per GPU, no failed "
                             "cell, comparable with the current run); pass --no-baseline-ok where none is expected")
    elif Path(args.runs[0]).exists() or not args.no_baseline_ok:
        against["baseline"] = (args.runs[0], [load_run(args.runs[0])])
    if args.reference:
        against["reference"] = (args.reference, [load_run(args.reference)])
    cur_names = ", ".join(map(str, cur_paths))
    if not against:
        print(f"gate PASS: no baseline (--no-baseline-ok); nothing to compare {cur_names} with")
        _write_json(args.json, {"verdict": "pass", "cells": 0, "flagged": 0, "note": "no baseline"})
        return 0
    base_reruns = [(p, load_run(p)) for p in args.baseline_rerun]
    if base_reruns and len(currents) < 2:
        raise ValueError("--baseline-rerun needs the current code's reruns too: BASELINE CURRENT RERUN.json ... "
                         "--baseline-rerun BASE_RERUN.json ...")
    for name, runs in against.values():
        for run in runs:
            problems = baseline_problems(run)
            if problems and not args.allow_injected_slowdown:
                raise GateRefused(f"{name} cannot be a baseline: {'; '.join(problems)}")
    for path, run in [*zip(cur_paths, currents), *base_reruns]:
        require_round_times(run, str(path))
    for name, runs in against.values():
        for run in runs:
            require_round_times(run, name)
            for cur_path, cur in zip(cur_paths, currents):
                check_comparable(run, cur, name, str(cur_path), args.allow_injected_slowdown,
                                 args.allow_software_change)
    for cur_path, cur in zip(cur_paths[1:], currents[1:]):
        check_comparable(current, cur, str(cur_paths[0]), str(cur_path))
    for path, run in base_reruns:
        check_comparable(run, current, str(path), str(cur_paths[0]), args.allow_injected_slowdown,
                         args.allow_software_change)
    if base_reruns:
        check_interleaved(base_reruns, list(zip(map(str, cur_paths[1:]), currents[1:])))
    history = args.history or ([args.storage] if args.storage else [])
    variances, history_runs = _history(history, current, args.allow_software_change)
    print(f"run-to-run variances from {history_runs} same-code run(s) in {variances.groups} group(s)"
          + ("" if history_runs else " (none: the rule's priors)"))

    comparisons: dict[str, Comparison] = {}
    differences = []
    for label, (name, runs) in against.items():
        print(f"{label} {name} vs current {cur_names} ({gpu_model(current)})")
        if args.allow_software_change:
            differences += [f"software {d} (vs the {label})" for d in software_differences(runs[-1], current)]
        gpus = other_gpus(runs[-1], current)
        if gpus:
            differences.append(f"{gpus} (vs the {label})")
        first = compare(runs, current, rule, args.cells, variances)
        if len(currents) > 1:
            first = confirm(first, runs, currents[1:], [r for _, r in base_reruns] if label == "baseline" else [],
                            rule, variances, first_run=current)
        comparisons[label] = first
        for v in first:
            print(format_verdict(v))
        print(format_shift(first))
    for d in differences:
        print(f"info: {d}")
    confirmed = len(currents) > 1
    verdict = run_verdict(comparisons, args.allow_unsure, confirmed)
    again = rerun_cells(comparisons)
    rerun_args = rerun_pytest_args(again, run_settings(current))
    base_commit = (against["baseline"][1][-1].get("commit_info") or {}).get("id") if "baseline" in against else None
    if again and not confirmed:
        command = " ".join(_shell_quote(a) for a in rerun_args)
        print(f"{len(again)} cell(s) to confirm: rerun them interleaved ABBA, then gate again with the current "
              f"code's reruns after CURRENT and the baseline's as --baseline-rerun:\n"
              f"  A1 (this code):      python -m pytest {command} --benchmark-json A1.json\n"
              f"  B1 (commit {base_commit or 'of the baseline'}): the same, --benchmark-json B1.json\n"
              f"  B2 (that commit):    the same, --benchmark-json B2.json\n"
              f"  A2 (this code):      the same, --benchmark-json A2.json")
    print(summary(comparisons, rule, verdict))
    files = {"current": cur_names, **{label: name for label, (name, _) in against.items()}}
    if base_reruns:
        files["baseline_reruns"] = ", ".join(p for p, _ in base_reruns)
    _write_json(args.json, verdict_json(comparisons, rule, files, rerun_args, verdict, base_commit))
    if args.markdown:
        Path(args.markdown).write_text(gate_markdown(comparisons, rule, files, verdict, differences), encoding="utf-8")
    return 0 if verdict == "pass" else 1


def _run_calibrate(args) -> int:
    rule = _rule(args)
    same = [load_run(p) for p in args.runs]
    if len(same) < 2:
        raise ValueError(f"calibrate needs at least 2 same-code runs, got {len(same)}")
    for path, run in zip(args.runs, same):
        require_round_times(run, path)
    for path, run in zip(args.runs[1:], same[1:]):
        check_comparable(same[0], run, args.runs[0], path)
    groups = [same] if args.same_code else code_groups(same)
    variances = history_variances(groups)
    from .gate_policy import side
    sides = side(same, rule)
    cells = sorted(t for t in sides if variances.cell(t)[1])
    if not cells:
        raise ValueError("no cell was timed by two runs of one code")
    tau2 = shift_variance(variances, rule)
    measured = [variances.cell(t)[0] for t in cells]
    shrunk = [cell_variance(variances, t, sides[t].within, rule) for t in cells]
    shift_sd = (variances.shift[0] or 0.0) ** 0.5
    print(f"{len(same)} runs in {variances.groups} same-code group(s), {len(cells)} cells; rule: {rule.describe()}")
    if args.verbose:
        for t, m, v in zip(cells, measured, shrunk):
            print(f"  {short_name(t)}  run-to-run sd {100 * m ** 0.5:.2f}%  used {100 * v ** 0.5:.2f}%")
    cell_sds = {t: 100 * m ** 0.5 for t, m in zip(cells, measured)}
    sds = sorted(cell_sds.values())
    print(f"per-cell run-to-run sd (measured, {variances.cell(cells[0])[1]} dof each): "
          f"median {sds[len(sds) // 2]:.2f}%, "
          f"max {sds[-1]:.2f}%; the runs' common shift sd {100 * shift_sd:.2f}% ({variances.shift[1]} dof), "
          f"used {100 * tau2 ** 0.5:.2f}%")
    result = {"runs": args.runs, "cells": len(cells), "cells_total": args.cells_total,
              "run_sd_pct": cell_sds, "shift_sd_pct": 100 * shift_sd, "rates": {}}
    for name, assumed in (("measured", measured), ("shrunk", shrunk)):
        for slowdown in [0.0, *args.slowdown]:
            rates = error_rates(measured, tau2, rule, args.cells_total, slowdown, assumed_vars=assumed)
            result["rates"][f"{name}/{slowdown:g}"] = rates
            what = "false alarm" if slowdown == 0 else f"+{slowdown:g}% in every cell: detection"
            print(f"true = measured, se from {name} variances, {args.cells_total} cells, {what}: "
                  f"run fails {100 * rates['fail']:.3g}%, "
                  f"a cell fails {100 * rates['cell_fail']:.3g}%, REGRESSED {100 * rates['cell_regressed']:.3g}%; "
                  f"cells to confirm {rates['cells_to_confirm']:.2f} per run")
    _write_json(args.json, result)
    return 0


def _run_pin(args) -> int:
    run = load_run(args.run)
    require_round_times(run, args.run)
    problems = baseline_problems(run)
    if problems:
        raise GateRefused(f"{args.run} cannot be a reference: {'; '.join(problems)}")
    slug = (run["machine_info"].get("gpu") or {}).get("gpu_slug") or gpu_model(run).lower().replace(" ", "-")
    out = Path(args.out) if args.out else Path("results") / slug / REFERENCE_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(Path(args.run).read_text(encoding="utf-8"), encoding="utf-8")
    print(f"pinned {args.run} as the {gpu_model(run)} reference: {out} (commit it)")
    return 0


def _run_latest(args) -> int:
    found = latest_runs(args.storage, 1)
    if found:
        print(found[0])
    return 0


def _add_rule_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD_PCT,
                   help=f"practical effect size: a slowdown of a cell's median (and of the common shift) smaller "
                        f"than this percent never fails (default {DEFAULT_THRESHOLD_PCT:g})")
    p.add_argument("--alpha", type=float, default=DEFAULT_ALPHA,
                   help=f"error rate per run controlled by the correction (default {DEFAULT_ALPHA:g})")
    p.add_argument("--shift-sd", type=float, default=DEFAULT_SHIFT_SD_PCT, metavar="PCT",
                   help="prior sd of a run's machine shift, shrunk with the history's (default "
                        f"{DEFAULT_SHIFT_SD_PCT:g}: another state or another GPU of the model)")
    p.add_argument("--correction", choices=CORRECTIONS, default="holm",
                   help="holm: family-wise error rate over the matrix (default); bh: false discovery rate")


def parser() -> argparse.ArgumentParser:
    """The command line's argument parser."""
    p = argparse.ArgumentParser(prog="python -m attn_tools.gate", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compare", help="gate CURRENT against BASELINE (exit 1 on a failure or cells to confirm)")
    c.add_argument("runs", nargs="*", metavar="BASELINE CURRENT [RERUN ...]",
                   help="pytest-benchmark JSON files: the baseline, the current run, then the current code's "
                        "confirmation reruns (with --storage: only CURRENT, optional)")
    c.add_argument("--storage", help="rolling baseline: the median per cell of the last --baseline-runs eligible "
                                     "runs in this folder (the current run: the newest, unless given)")
    c.add_argument("--baseline-runs", type=int, default=DEFAULT_BASELINE_RUNS, metavar="K",
                   help=f"runs in the rolling baseline (default {DEFAULT_BASELINE_RUNS})")
    c.add_argument("--history", nargs="+", default=[], metavar="FILE|DIR",
                   help="stored runs (files or folders) whose same-code groups give the run-to-run variances "
                        "(default: the --storage folder)")
    c.add_argument("--reference", metavar="REF.json",
                   help="also gate against this pinned reference (results/<gpu-slug>/reference.json)")
    _add_rule_options(c)
    c.add_argument("--cells", metavar="REGEX", help="gate only the cells whose test id matches; matching none, "
                                                     "or only cells the baseline lacks, is an error")
    c.add_argument("--baseline-rerun", nargs="+", default=[], metavar="B.json",
                   help="the baseline code's confirmation reruns, interleaved ABBA with the current code's")
    c.add_argument("--allow-unsure", action="store_true", help="pass cells that stay unsure after confirmation")
    c.add_argument("--allow-software-change", action="store_true",
                   help="compare runs whose library, driver, CUDA or cuDNN versions differ (the change under test)")
    c.add_argument("--allow-injected-slowdown", action="store_true",
                   help="accept current runs made with --attn-slowdown against a baseline without (tests the gate)")
    c.add_argument("--no-baseline-ok", action="store_true",
                   help="pass when the baseline file or an eligible stored baseline is missing (a first run)")
    c.add_argument("--json", metavar="FILE", help="also write the verdict as JSON")
    c.add_argument("--markdown", metavar="FILE", help="also write the comparison as markdown")
    c.set_defaults(func=_run_compare)
    cal = sub.add_parser("calibrate", help="run-to-run variances of same-code runs, and the rule's expected false "
                                           "alarms and detections per full run")
    cal.add_argument("runs", nargs="+", metavar="RUN", help="pytest-benchmark JSON files (>= 2 of one code)")
    cal.add_argument("--same-code", action="store_true",
                     help="treat every run as the same code (default: group them by recorded commit)")
    cal.add_argument("--cells-total", type=int, default=DEFAULT_CELLS_TOTAL, metavar="N",
                     help=f"cells in a full run (default {DEFAULT_CELLS_TOTAL})")
    cal.add_argument("--slowdown", type=float, nargs="*", default=[3.0, 5.0], metavar="PCT",
                     help="uniform slowdowns whose detection to compute (default 3 5)")
    cal.add_argument("--verbose", action="store_true", help="print every cell's variance")
    cal.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    _add_rule_options(cal)
    cal.set_defaults(func=_run_calibrate)
    pin = sub.add_parser("pin", help="write a run as its GPU model's pinned reference")
    pin.add_argument("run", metavar="RUN.json")
    pin.add_argument("--out", metavar="FILE", help=f"default: results/<gpu-slug>/{REFERENCE_NAME}")
    pin.set_defaults(func=_run_pin)
    latest = sub.add_parser("latest", help="print the newest run (by recorded date) in a storage folder")
    latest.add_argument("storage", metavar="DIR")
    latest.set_defaults(func=_run_latest)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (the `attn-gate` console script)."""
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (RunFileError, GateRefused, ValueError) as e:
        print(f"gate error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
