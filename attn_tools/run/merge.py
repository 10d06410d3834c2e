"""Merging the shards' runs into one pytest-benchmark run."""
from __future__ import annotations

import copy
from datetime import datetime, timezone

from ..runs import gpu_model
from .shards import Shard

# Settings every shard must share to be merged into one run (those its attn_suite records).
SETTINGS = ("profile", "device", "rounds", "warmup", "slowdown", "bare_loop", "study", "compile_scope")


class MergeError(Exception):
    """Shards that cannot form one run; exit 2, the message names the shards and the difference."""


def merge_shards(shards: list[Shard], wall_s: float, runner: dict | None = None,
                 now: datetime | None = None, workers_per_gpu: int = 1) -> dict:
    """One pytest-benchmark run from the shards' runs (attn_tools.run's docstring, step 5).

    attn_suite is the first shard's, with the skipped and failed cells of all; a value the first
    shard left None (e.g. a measurement only another shard made) is taken from the next that has it.
    `complete` is False when a worker crashed, was stopped or lost a cell; `workers_per_gpu` is the
    runner's.

    MergeError if no shard has a run, if a test was timed by two shards, or if the shards
    disagree on the GPU model or on a suite setting (SETTINGS).
    """
    with_run = [s for s in shards if s.run is not None]
    if not with_run:
        raise MergeError("no worker produced a result to merge (see the shard logs: "
                         + ", ".join(s.log for s in shards) + ")")
    first = with_run[0]
    for shard in with_run[1:]:
        for what, value in (("GPU model", gpu_model),
                            *((key, lambda run, key=key: (run.get("attn_suite") or {}).get(key)) for key in SETTINGS)):
            if value(shard.run) != value(first.run):
                raise MergeError(f"shards disagree on {what}: shard {first.index} has {value(first.run)!r}, "
                                 f"shard {shard.index} has {value(shard.run)!r}; not merged "
                                 f"(shard files next to {shard.log})")
    merged = {key: copy.deepcopy(value) for key, value in first.run.items() if key not in ("benchmarks", "attn_suite")}
    merged["datetime"] = (now or datetime.now(timezone.utc)).isoformat()
    merged["benchmarks"] = []
    suite = copy.deepcopy(first.run.get("attn_suite") or {})
    suite["skipped"], suite["failed"] = [], []
    owner: dict[str, int] = {}
    for shard in shards:
        run = shard.run or {"benchmarks": []}
        for bench in run["benchmarks"]:
            if bench["fullname"] in owner:
                raise MergeError(f"{bench['fullname']} was timed by shard {owner[bench['fullname']]} "
                                 f"and shard {shard.index}")
            owner[bench["fullname"]] = shard.index
            merged["benchmarks"].append(copy.deepcopy(bench))
        shard_suite = run.get("attn_suite") or {}
        for key, value in shard_suite.items():  # a value the first shard did not measure (None)
            if suite.get(key) is None and value is not None:
                suite[key] = copy.deepcopy(value)
        suite["skipped"] += copy.deepcopy(shard_suite.get("skipped", []))
        suite["failed"] += copy.deepcopy(shard_suite.get("failed", [])) + copy.deepcopy(shard.lost)
    # Complete: every worker ended by itself, lost no cell, and its pytest run completed.
    suite["complete"] = not any(s.crashed or s.interrupted or s.lost for s in shards) and all(
        (s.run.get("attn_suite") or {}).get("complete", True) for s in with_run)
    suite["workers_per_gpu"] = workers_per_gpu
    suite["wall_s"] = round(wall_s, 1)
    suite["shards"] = [s.record() for s in shards]
    suite["cell_wall_s"] = {t: w for s in shards for t, w in s.cell_wall_s.items()}
    if runner is not None:
        suite["runner"] = runner
    merged["attn_suite"] = suite
    return merged

