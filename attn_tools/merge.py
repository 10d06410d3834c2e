"""Runs split across hosts: which cells shard K of N runs, and the merge of the shards' runs.

**Shards** (`pytest --attn-shard K/N`, wired in conftest.py): the selected cells are split into N
shards by `attn_tools.run`'s cost estimate and longest-first balance, so that the cells sharing
memoized parity checks stay in one shard; shard K (1-based) runs only its own. The split depends
only on the selected cells and on the cost files given (`--attn-shard-costs RUN.json`, e.g. the
pinned reference), never on the host, so N jobs with the same arguments together run every
cell exactly once.

**Merge** (`attn-merge`, or `python -m attn_tools.merge`):

    attn-merge SHARD.json [SHARD.json ...] --output MERGED.json [--storage DIR]

merges the pytest-benchmark JSON files of shard jobs (one host each, possibly several
environment sets) into one run, which the report and the gate read like any other:

- the union of `benchmarks` and of `attn_suite["skipped"]` / `["failed"]`;
- refused (exit 2): inputs that `attn_tools.runs.comparable` rejects (GPU model, timing
  settings), inputs of different commits, a cell present in two inputs (timed, skipped or
  failed), and shards of the same environment set that disagree on N or repeat a K;
- recorded in `attn_suite["hosts"]`: per input its file, host name, environment set, shard,
  GPU UUID, wall seconds and cell count; `attn_suite["missing_shards"]` names the shards of a
  set that no input brought (their cells then show as lost in the gate);
- `attn_suite["availability"]`: per implementation, the entry of an input where it was available
  (each environment set installs different libraries), else the first input's;
- `attn_suite["wall_s"]`: the longest input's (shard jobs run side by side).

Exit status: 0 merged, 2 refused or bad input.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from .run import balance, estimate_costs
from .runs import RunFileError, comparable, load_run

SHARD_FORMAT = "K/N with 1 <= K <= N, e.g. 2/4"


class MergeRefused(Exception):
    """Inputs that cannot form one run; the message names the files and the difference."""


# --- shards ---------------------------------------------------------------------------------
def parse_shard(text: str) -> tuple[int, int]:
    """'2/4' -> (2, 4); ValueError naming the expected form for anything else."""
    k, sep, n = str(text).partition("/")
    if not sep or not k.strip().isdigit() or not n.strip().isdigit():
        raise ValueError(f"--attn-shard {text!r}: expected {SHARD_FORMAT}")
    k_i, n_i = int(k), int(n)
    if not 1 <= k_i <= n_i:
        raise ValueError(f"--attn-shard {text!r}: expected {SHARD_FORMAT}")
    return k_i, n_i


def shard_cells(tests: list[str], index: int, count: int, previous: list[dict] = ()) -> list[str]:
    """The tests shard `index` (1-based) of `count` runs, in their given order.

    Costs come from `previous` runs where they measured a test, else from the runner's cost
    model (`attn_tools.run.estimate_costs`, without the availability map: a shard's choice must
    not depend on what its host has installed); `attn_tools.run.balance` keeps the cells that
    share parity checks together.
    """
    costs, _ = estimate_costs(list(tests), None, list(previous))
    return balance(costs, count)[index - 1]


def load_cost_runs(paths: list[str]) -> list[dict]:
    """The runs named by --attn-shard-costs; ValueError (naming the file) for one that cannot be read."""
    runs = []
    for path in paths:
        try:
            runs.append(load_run(path))
        except RunFileError as e:
            raise ValueError(f"--attn-shard-costs: {e}") from None
    return runs


# --- merge ----------------------------------------------------------------------------------
def _cells(run: dict) -> set[str]:
    suite = run.get("attn_suite") or {}
    return ({b["fullname"] for b in run["benchmarks"]} | {s["test"] for s in suite.get("skipped", [])}
            | {f["test"] for f in suite.get("failed", [])})


def _host_record(name: str, run: dict) -> dict:
    suite = run.get("attn_suite") or {}
    shard = suite.get("shard") or {}
    gpu = (run.get("machine_info") or {}).get("gpu") or {}
    return {"file": name, "host": (run.get("machine_info") or {}).get("node"),
            "env_set": suite.get("env_set"), "shard": shard.get("spec"), "gpu_uuid": gpu.get("uuid"),
            "wall_s": suite.get("wall_s"), "cells": len(_cells(run))}


def merge_runs(runs: list[tuple[str, dict]], now: datetime | None = None) -> dict:
    """One run from the (name, run) pairs of shard jobs (module docstring); MergeRefused if they cannot be one."""
    if not runs:
        raise MergeRefused("no runs to merge")
    first_name, first = runs[0]
    for name, run in runs[1:]:
        reasons = comparable(first, run, labels=(first_name, name))
        if reasons:
            raise MergeRefused(f"{name} cannot be merged with {first_name}:\n  " + "\n  ".join(reasons))
        commits = ((first.get("commit_info") or {}).get("id"), (run.get("commit_info") or {}).get("id"))
        if commits[0] != commits[1]:
            raise MergeRefused(f"{name} is of commit {commits[1]}, {first_name} of commit {commits[0]}: "
                               "shards of one run measure one commit")
    owner: dict[str, str] = {}
    for name, run in runs:
        for test in sorted(_cells(run)):
            if test in owner:
                raise MergeRefused(f"{test} is in both {owner[test]} and {name}: a cell belongs to one shard")
            owner[test] = name
    missing = _check_shards(runs)

    merged = {key: copy.deepcopy(value) for key, value in first.items() if key not in ("benchmarks", "attn_suite")}
    merged["datetime"] = (now or datetime.now(timezone.utc)).isoformat()
    merged["benchmarks"] = [copy.deepcopy(b) for _, run in runs for b in run["benchmarks"]]
    suite = copy.deepcopy(first.get("attn_suite") or {})
    suites = [run.get("attn_suite") or {} for _, run in runs]
    suite["skipped"] = [copy.deepcopy(s) for one in suites for s in one.get("skipped", [])]
    suite["failed"] = [copy.deepcopy(f) for one in suites for f in one.get("failed", [])]
    for one in suites[1:]:  # a value the first input did not measure (None), e.g. matmul_peak_tflops
        for key, value in one.items():
            if suite.get(key) is None and value is not None:
                suite[key] = copy.deepcopy(value)
    availability = copy.deepcopy(suite.get("availability") or {})
    for one in suites:
        for impl, entry in (one.get("availability") or {}).items():
            if (availability.get(impl) or {}).get("status") != "available":
                availability[impl] = copy.deepcopy(entry)
    suite["availability"] = availability
    walls = [s["wall_s"] for s in suites if s.get("wall_s") is not None]
    suite["wall_s"] = max(walls) if walls else None
    cell_walls = {t: w for one in suites for t, w in (one.get("cell_wall_s") or {}).items()}
    if cell_walls:
        suite["cell_wall_s"] = cell_walls
    suite.pop("shard", None)
    suite.pop("shards", None)  # one host's workers; kept per host below
    suite["env_set"] = sorted({s.get("env_set") for s in suites if s.get("env_set")}) or None
    suite["hosts"] = [{**_host_record(name, run), "workers": (run.get("attn_suite") or {}).get("shards")}
                      for name, run in runs]
    suite["missing_shards"] = missing
    merged["attn_suite"] = suite
    return merged


def _check_shards(runs: list[tuple[str, dict]]) -> list[str]:
    """The 'set K/N' shards no input brought; MergeRefused if one set's shards disagree on N or repeat K."""
    by_set: dict[object, dict[int, str]] = {}
    counts: dict[object, tuple[int, str]] = {}
    for name, run in runs:
        suite = run.get("attn_suite") or {}
        shard = suite.get("shard")
        if not shard:
            continue
        key = suite.get("env_set")
        index, count = shard["index"], shard["count"]
        if key in counts and counts[key][0] != count:
            raise MergeRefused(f"{name} is shard {index}/{count} but {counts[key][1]} is one of {counts[key][0]} "
                               f"(environment set {key!r})")
        counts[key] = (count, name)
        seen = by_set.setdefault(key, {})
        if index in seen:
            raise MergeRefused(f"{name} and {seen[index]} are both shard {index}/{count} (environment set {key!r})")
        seen[index] = name
    return [f"{key or '?'} {k}/{counts[key][0]}" for key, seen in by_set.items()
            for k in range(1, counts[key][0] + 1) if k not in seen]


def save_to_storage(run: dict, folder: str) -> Path:
    """Save `run` where pytest-benchmark's autosave would (`attn_tools.run.save_run`)."""
    from .run import save_run

    return save_run(run, Path(folder))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="attn-merge", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="SHARD.json", help="pytest-benchmark JSON files of the shard jobs")
    p.add_argument("--output", "-o", required=True, metavar="MERGED.json", help="where the merged run goes")
    p.add_argument("--storage", metavar="DIR",
                   help="also save it as pytest-benchmark's autosave would, under DIR/<machine-id>/")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = parser().parse_args(argv)
    try:
        runs = [(path, load_run(path)) for path in args.runs]
        merged = merge_runs(runs)
    except (RunFileError, MergeRefused) as e:
        print(f"attn-merge: refused: {e}", file=sys.stderr)
        return 2
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(merged, indent=4), encoding="utf-8")
    suite = merged["attn_suite"]
    print(f"attn-merge: {len(runs)} run(s) -> {args.output}: {len(merged['benchmarks'])} timed, "
          f"{len(suite['skipped'])} skipped, {len(suite['failed'])} failed")
    if suite["missing_shards"]:
        print(f"attn-merge: missing shards (their cells are not in this run): {', '.join(suite['missing_shards'])}")
    if args.storage:
        print(f"attn-merge: saved {save_to_storage(merged, args.storage)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
