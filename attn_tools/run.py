"""Run the selected cells on every GPU of this host: one pytest worker per GPU, one merged run.

    python -m attn_tools.run [--gpus N|all] [--workers-per-gpu K] [--json OUT] [--previous RUN.json]
                             [--workdir DIR] -- <pytest args, e.g. --attn-impl native,flex --attn-seq-len 196>

1. **Collect**: `python -m pytest --collect-only -q <args> tests/test_train_step.py` (or the test
   files among the args) lists the cells, with the GPU model, profile and availability map.
2. **Estimate** each cell's cost (seconds). From earlier runs when there are some (`--previous`,
   else the newest runs of the same GPU model and profile in the storage folder): the cell's
   recorded wall time (`attn_suite["cell_wall_s"]`, written by this runner), else
   `first_step_s + (rounds + warm-up) x steps per round x median`. Cells no run has measured
   use the cost model below, scaled by measured / modelled over the cells that have both.
   The cost model, from the H200 runs of 2026-11-30 (`results/h200/2026-11-30/walltimes.txt`: 26 cells of
   seq 196 took 597 s, 26 of seq 3136 took 310 s; compiled cells' first steps take 2-21 s
   against 0.2 s eager, so compiled is taken as twice eager):

   | cell | seconds |
   | --- | ---: |
   | seq 196, eager / compiled | 15 / 30 |
   | seq 3136, eager / compiled | 8 / 16 |
   | library unavailable or variant unsupported (will skip) | 0.5 |
   | not a train-step cell | 10 |

3. **Balance** by longest processing time first: groups of cells in decreasing cost, each to the
   least-loaded worker. A group is the cells that share a worker's memoized parity checks (same
   impl, variant, seq_len and mode: the training, inference and both attention-kernel cells), so
   no check runs in two workers. A worker runs its cells in collection order.
4. **Run** one `pytest --benchmark-only` worker per GPU (`CUDA_VISIBLE_DEVICES` pinned), or
   K per GPU with `--workers-per-gpu K`. K > 1 proves sharding and merging on one GPU; the
   workers then share the GPU, so that proves correctness, not wall time. Workers compile into
   `--inductor-cache DIR` (default `<storage>/<gpu>/inductor-cache`), kept between runs: Inductor's
   caches in one folder per implementation (`harness.use_inductor_cache` says why), Triton's shared,
   so a later run on the same GPU model loads compiled code instead of compiling. Each worker writes
   `shard-N.json`, `shard-N.log` and `shard-N.progress.jsonl` to the work folder. The progress
   file (this module, loaded into the worker with `-p attn_tools.run`) records each cell as it
   starts and finishes, with its benchmark entry, so that a worker that dies (killed,
   segfault) loses only the cell it was running.
5. **Crash**: a cell with no result (not timed, not skipped, not failed) is reported in
   `attn_suite["failed"]` with the exit code and the log's last lines. If the worker died
   before its remaining cells started, one new worker on the same GPU runs them (once).
   **Interrupt** (Ctrl-C, `timeout -s INT`): the runner stops the workers, reports their
   running and unstarted cells failed ("interrupted", "not run") and merges what finished.
6. **Merge** the shards into one pytest-benchmark run: the union of `benchmarks`, the first
   shard's `machine_info` and `commit_info`, the shards' skipped and failed cells, and
   `attn_suite["wall_s"]` (the runner's wall time, collection included), `["shards"]` (per
   worker: GPU, cells, wall seconds, exit code, log), `["cell_wall_s"]` and `["runner"]`.
   Shards of different GPU models or suite settings (profile, rounds, warm-up, ...) are not
   merged (exit 2). The run is saved where pytest-benchmark's autosave puts it
   (`.benchmarks/<gpu>/<machine-id>/NNNN_<commit>_<date>.json`, or under `--benchmark-storage`),
   so `pytest-benchmark compare`, `python -m attn_tools.report` and `python -m attn_tools.gate`
   read it like any other run; it keeps the per-round times (`stats.data`) that the gate needs,
   as `--benchmark-save-data` would. `--json OUT` writes a copy.

Exit status: 0 when every cell passed or skipped, 1 when a cell failed or was lost, 2 on bad
arguments, a failed collection, or shards that cannot be merged, 130 when interrupted (after
saving what finished).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .runs import RUN_GLOB, RunFileError, cell_params, gpu_model, latest_runs, load_run, report_outcome

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TESTS = "tests/test_train_step.py"
DEFAULT_STORAGE = "file://./.benchmarks"  # pytest-benchmark's default; conftest.py adds /<gpu-slug>
COLLECT_ENV = "ATTN_RUN_COLLECT"  # the collecting pytest writes the cells and the run's header here
PROGRESS_ENV = "ATTN_RUN_PROGRESS"  # a worker appends one JSON line per event here

# The cost model (seconds per cell; see the module docstring for where the numbers come from).
CELL_S = {196: 15.0, 3136: 8.0}
COMPILED_FACTOR = 2.0
SKIP_CELL_S = 0.5
OTHER_TEST_S = 10.0
PREVIOUS_RUNS = 10  # newest runs in storage searched for measured costs

# Settings every shard must share to be merged into one run (those its attn_suite records).
SETTINGS = ("profile", "device", "rounds", "warmup", "slowdown", "bare_loop", "study", "compile_scope")
RESTARTS = 1  # new workers for the cells a crashed worker never started
LOG_TAIL_LINES = 15
# pytest options the runner sets itself or that cannot mean anything for a sharded run.
REFUSED_ARGS = {
    "--benchmark-json": "use the runner's --json OUT",
    "--benchmark-save": "the runner saves the merged run itself, with autosave's file name",
    "--benchmark-compare": "gate the merged run afterwards: python -m attn_tools.gate compare BASELINE RUN",
    "--benchmark-compare-fail": "gate the merged run afterwards: python -m attn_tools.gate compare",
    "--benchmark-disable": "the runner times every cell (--benchmark-only)",
    "--benchmark-skip": "the runner times every cell (--benchmark-only)",
    "--collect-only": "the runner collects by itself",
    "--co": "the runner collects by itself",
    "--attn-inductor-cache": "use the runner's --inductor-cache DIR",
    "-n": "the runner is the parallelism (pytest-xdist disables benchmarks)",
    "--numprocesses": "the runner is the parallelism (pytest-xdist disables benchmarks)",
}
# Options whose value is the next argument: that value is never taken for a test path.
VALUE_OPTIONS = {"-k", "-m", "-p", "-o", "-c", "--rootdir", "--confcutdir", "--basetemp", "--benchmark-storage",
                 "--attn-impl", "--attn-variant", "--attn-seq-len", "--attn-mode", "--attn-profile",
                 "--attn-rounds", "--attn-warmup", "--attn-slowdown", "--attn-direction", "--attn-compile-scope",
                 "--attn-varlen-lengths", "--attn-group"}
NOTE_SHARED_GPU = ("{k} workers shared each GPU: this run proves sharding and merging (correctness), "
                   "not wall time; its timings are not comparable with one worker per GPU")


class UsageError(Exception):
    """Bad arguments or a failed collection; exit 2, the message is for the user."""


class MergeError(Exception):
    """Shards that cannot form one run; exit 2, the message names the shards and the difference."""


class Interrupted(Exception):
    """The run was interrupted (SIGINT) while workers ran; `shards` are settled, ready to merge."""

    def __init__(self, shards: list[Shard]):
        super().__init__("interrupted")
        self.shards = shards


# --- the pytest plugin (loaded into the collecting pytest and the workers with -p) -------------
def pytest_configure(config):
    if os.environ.get(COLLECT_ENV):
        config.pluginmanager.register(_Collector(config, Path(os.environ[COLLECT_ENV])), "attn-run-collect")
    elif os.environ.get(PROGRESS_ENV):
        config.pluginmanager.register(_Progress(config, Path(os.environ[PROGRESS_ENV])), "attn-run-progress")


def empty_run(config) -> dict:
    """This session's pytest-benchmark JSON without benchmarks, built by the hooks that build the real one.

    machine_info (with conftest's GPU, libraries, numerics), commit_info and attn_suite (its
    settings and availability map): the header of a shard whose worker may die before it
    writes its JSON.
    """
    from pytest_benchmark.utils import safe_dumps

    hook = config.hook
    machine_info = hook.pytest_benchmark_generate_machine_info(config=config)
    hook.pytest_benchmark_update_machine_info(config=config, machine_info=machine_info)
    commit_info = hook.pytest_benchmark_generate_commit_info(config=config)
    hook.pytest_benchmark_update_commit_info(config=config, commit_info=commit_info)
    run = hook.pytest_benchmark_generate_json(config=config, benchmarks=[], include_data=True,
                                             machine_info=machine_info, commit_info=commit_info)
    hook.pytest_benchmark_update_json(config=config, benchmarks=[], output_json=run)
    return json.loads(safe_dumps(run))  # a snapshot: attn_suite holds the session's live lists


class _Collector:
    """Writes the collected node ids, the run's header and the visible GPU count (collect step)."""

    def __init__(self, config, path: Path):
        self.config, self.path = config, path

    def pytest_collection_finish(self, session):
        import torch

        data = {"items": [item.nodeid for item in session.items], "run": empty_run(self.config),
                "cuda_device_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
                "rootdir": str(self.config.rootpath)}
        self.path.write_text(json.dumps(data), encoding="utf-8")


class _Progress:
    """Appends one JSON line per event, flushed at once, so that it survives the worker's death.

    header (the empty run, collected items), start (a cell began), benchmark (its
    pytest-benchmark entry, as the JSON would hold it), outcome (skipped or failed, as
    conftest records them), finish (with the cell's wall seconds).
    """

    def __init__(self, config, path: Path):
        self.config = config
        self.file = path.open("a", encoding="utf-8")
        self.stored = 0
        self.started: dict[str, float] = {}

    def _write(self, event: str, **fields) -> None:
        from pytest_benchmark.utils import safe_dumps

        self.file.write(safe_dumps({"event": event, **fields}) + "\n")
        self.file.flush()

    def pytest_collection_finish(self, session):
        self._write("header", run=empty_run(self.config), items=[i.nodeid for i in session.items],
                    pid=os.getpid())

    def pytest_runtest_logstart(self, nodeid, location):
        self.started[nodeid] = time.perf_counter()
        self._write("start", test=nodeid)

    def pytest_runtest_logreport(self, report):
        outcome = report_outcome(report)  # the records conftest keeps in attn_suite
        if outcome:
            kind, record = outcome
            self._write("outcome", outcome=kind, **record)

    def pytest_runtest_logfinish(self, nodeid, location):
        # pytest-benchmark keeps each timed benchmark in its session (what its JSON is made of).
        benchmarks = getattr(getattr(self.config, "_benchmarksession", None), "benchmarks", [])
        for bench in benchmarks[self.stored:]:
            if not bench.has_error:
                self._write("benchmark", test=bench.fullname, bench=bench.as_dict(include_data=True))
        self.stored = len(benchmarks)
        self._write("finish", test=nodeid, wall_s=time.perf_counter() - self.started.get(nodeid, time.perf_counter()))

    def pytest_unconfigure(self, config):
        self.file.close()


# --- cost and balance ----------------------------------------------------------------------
def model_cost(test: str, availability: dict | None = None) -> float:
    """The cost model's seconds for `test` (module docstring); a cell that will skip costs SKIP_CELL_S."""
    p = cell_params(test)
    if p is None:
        return OTHER_TEST_S
    impl = (availability or {}).get(p["impl"])
    if impl and (impl.get("status") != "available" or p["variant"] not in impl.get("variants", [])):
        return SKIP_CELL_S
    base = CELL_S.get(p["seq_len"], max(CELL_S.values()))
    return base * (1.0 if p["mode"] == "eager" else COMPILED_FACTOR)


def measured_cost(test: str, run: dict) -> float | None:
    """Seconds `test` took in `run`: its recorded wall time, else first step + warm-up and timed
    steps; SKIP_CELL_S if it skipped; None if the run has no measurement of it."""
    suite = run.get("attn_suite") or {}
    wall = (suite.get("cell_wall_s") or {}).get(test)
    if wall is not None:
        return float(wall)
    if any(s.get("test") == test for s in suite.get("skipped", [])):
        return SKIP_CELL_S
    if any(f.get("test") == test for f in suite.get("failed", [])):
        return None
    bench = next((b for b in run.get("benchmarks", []) if b.get("fullname") == test), None)
    if bench is None:
        return None
    stats, info = bench["stats"], bench.get("extra_info") or {}
    steps = stats.get("iterations", 1) * (stats.get("rounds", 0) + suite.get("warmup", 0))
    first_steps = float(info.get("parity_first_step_s") or 0.0) + float(info.get("first_step_s") or 0.0)
    return first_steps + steps * stats["median"]


def estimate_costs(tests: list[str], availability: dict | None = None,
                   previous: list[dict] = ()) -> tuple[dict[str, float], int]:
    """(seconds per test, how many were measured) for `tests`.

    `previous` runs are searched newest first; a test none of them measured gets the cost
    model, scaled by measured / modelled over the tests that have both (that ran, not skipped).
    """
    measured: dict[str, float] = {}
    for run in previous:
        for test in tests:
            if test not in measured:
                cost = measured_cost(test, run)
                if cost is not None:
                    measured[test] = cost
    model = {test: model_cost(test, availability) for test in tests}
    timed = [t for t in measured if measured[t] != SKIP_CELL_S and model[t] != SKIP_CELL_S]
    scale = 1.0
    if timed and sum(model[t] for t in timed) > 0 and sum(measured[t] for t in timed) > 0:
        scale = sum(measured[t] for t in timed) / sum(model[t] for t in timed)
    costs = {t: measured[t] if t in measured else model[t] * (scale if model[t] != SKIP_CELL_S else 1.0)
             for t in tests}
    return costs, len(measured)


def parity_group(test: str) -> tuple:
    """The key of the cells that share one worker's memoized parity checks: the same impl, variant,
    seq_len and mode (harness.Suite.attention_parity and model_parity_once). Any other test is a
    group of its own."""
    p = cell_params(test)
    return (p["impl"], p["variant"], p["seq_len"], p["mode"]) if p else (test,)


def balance(costs: dict[str, float], workers: int, group=parity_group) -> list[list[str]]:
    """Longest processing time first over groups of tests: `workers` lists of tests (some possibly empty).

    The tests of one `group` (by default the cells that share parity checks) go to one worker, so
    that no two workers compute the same check. Groups in decreasing total cost (ties: collection
    order of their first test), each to the least-loaded worker (ties: the lowest index); each list
    keeps the order of `costs` (collection order).
    """
    if workers < 1:
        raise ValueError(f"need at least one worker, got {workers}")
    order = {test: i for i, test in enumerate(costs)}
    groups: dict[tuple, list[str]] = {}
    for test in costs:
        groups.setdefault(group(test), []).append(test)
    loads = [0.0] * workers
    shards: list[list[str]] = [[] for _ in range(workers)]
    for tests in sorted(groups.values(), key=lambda g: (-sum(costs[t] for t in g), order[g[0]])):
        i = min(range(workers), key=lambda w: (loads[w], w))
        shards[i] += tests
        loads[i] += sum(costs[t] for t in tests)
    return [sorted(shard, key=order.__getitem__) for shard in shards]


# --- shards --------------------------------------------------------------------------------
@dataclass
class Shard:
    """One worker's share: what it ran, how it ended, and its results.

    `run` is the worker's pytest-benchmark JSON, or, when the worker died before writing it,
    the run rebuilt from its progress file (None if it died before collecting). `lost` are
    failed entries for its cells that have no result; `remaining` the cells it never started.
    """

    index: int
    gpu: str | None
    cells: list[str]
    estimated_s: float = 0.0
    restart_of: int | None = None
    wall_s: float | None = None
    exit_code: int | None = None
    log: str = ""
    run: dict | None = None
    from_progress: bool = False
    crashed: bool = False
    interrupted: bool = False
    lost: list[dict] = field(default_factory=list)
    remaining: list[str] = field(default_factory=list)
    cell_wall_s: dict[str, float] = field(default_factory=dict)

    def record(self) -> dict:
        """The shard's entry in attn_suite["shards"]."""
        gpu = ((self.run or {}).get("machine_info") or {}).get("gpu") or {}
        return {"shard": self.index, "gpu": self.gpu, "gpu_uuid": gpu.get("uuid"), "cells": self.cells,
                "wall_s": self.wall_s,
                "exit_code": self.exit_code, "crashed": self.crashed, "interrupted": self.interrupted,
                "restart_of": self.restart_of,
                "estimated_s": round(self.estimated_s, 1), "from_progress_file": self.from_progress,
                "log": self.log}


def read_progress(path: Path) -> list[dict]:
    """The events of a progress file; a line cut short by the worker's death is dropped."""
    events = []
    if path.exists():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events


def run_from_progress(events: list[dict]) -> dict | None:
    """The run a worker would have written, rebuilt from its progress events (None without a header)."""
    header = next((e for e in events if e["event"] == "header"), None)
    if header is None:
        return None
    run = copy.deepcopy(header["run"])
    run["benchmarks"] = [e["bench"] for e in events if e["event"] == "benchmark"]
    suite = run.setdefault("attn_suite", {})
    suite["skipped"] = [{"test": e["test"], "reason": e["reason"]}
                        for e in events if e["event"] == "outcome" and e["outcome"] == "skipped"]
    suite["failed"] = [{"test": e["test"], "when": e["when"], "error": e.get("error", ""), "message": e["message"]}
                       for e in events if e["event"] == "outcome" and e["outcome"] == "failed"]
    return run


def results_of(run: dict | None, events: list[dict]) -> set[str]:
    """Tests with a result: timed, skipped or failed in `run`, or finished per the progress events."""
    done = {e["test"] for e in events if e["event"] == "finish"}
    if run:
        suite = run.get("attn_suite") or {}
        done |= {b["fullname"] for b in run.get("benchmarks", [])}
        done |= {s["test"] for s in suite.get("skipped", [])} | {f["test"] for f in suite.get("failed", [])}
    return done


def exit_description(code: int | None) -> str:
    """'killed by SIGKILL (exit code -9)', 'exit code 3'."""
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name} (exit code {code})"
        except ValueError:
            return f"killed by signal {-code} (exit code {code})"
    return f"exit code {code}"


def device_label(gpu: str | None) -> str:
    """'GPU 3', or 'CPU' for a worker without a GPU."""
    return "CPU" if gpu is None else f"GPU {gpu}"


def log_tail(path: str | Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:]) or "(empty log)"


def settle(shard: Shard, json_path: Path, progress_path: Path, may_restart: bool) -> None:
    """Fill in `shard`'s results after its worker exited: its run, lost cells and remaining cells.

    The worker crashed if it wrote no JSON, was killed by a signal, or hit an internal error
    (exit 3). The cell it was running is lost; the cells it never started are `remaining`
    when `may_restart`, otherwise lost too. A worker the runner stopped because the run was
    interrupted (`shard.interrupted`) loses its cells the same way, with that reason.
    """
    events = read_progress(progress_path)
    shard.cell_wall_s = {e["test"]: round(e["wall_s"], 3) for e in events if e["event"] == "finish"}
    run = None
    if json_path.exists():
        try:
            run = load_run(json_path)
        except RunFileError:
            run = None
    shard.crashed = run is None or (shard.exit_code is not None and (shard.exit_code < 0 or shard.exit_code == 3))
    if run is None:
        run = run_from_progress(events)
        shard.from_progress = run is not None
    shard.run = run
    done = results_of(run, events)
    started = {e["test"] for e in events if e["event"] == "start"}
    missing = [t for t in shard.cells if t not in done]
    why = f"worker {shard.index} ({device_label(shard.gpu)})"
    tail = log_tail(shard.log)
    for test in missing:
        if test in started:
            ended = "was stopped: the run was interrupted" if shard.interrupted else "died"
            message = (f"{why} {ended} while this cell was running: {exit_description(shard.exit_code)}; "
                       f"log {shard.log}\nlast log lines:\n{tail}")
            shard.lost.append({"test": test, "when": "interrupted" if shard.interrupted else "crash",
                               "message": message})
    never = [t for t in missing if t not in started]
    if shard.crashed and may_restart:
        shard.remaining = never
        return
    for test in never:
        reason = ("never started: the run was interrupted" if shard.interrupted
                  else "never started: the worker died before it" if shard.crashed
                  else "never started: the worker ended without running it")
        message = f"{why}: {reason} ({exit_description(shard.exit_code)}); log {shard.log}\nlast log lines:\n{tail}"
        shard.lost.append({"test": test, "when": "not run", "message": message})


# --- merge ---------------------------------------------------------------------------------
def merge_shards(shards: list[Shard], wall_s: float, runner: dict | None = None,
                 now: datetime | None = None) -> dict:
    """One pytest-benchmark run from the shards' runs (see the module docstring, step 6).

    attn_suite is the first shard's, with the skipped and failed cells of all; a value the first
    shard left None (e.g. a measurement only another shard made) is taken from the next that has it.

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
    suite["wall_s"] = round(wall_s, 1)
    suite["shards"] = [s.record() for s in shards]
    suite["cell_wall_s"] = {t: w for s in shards for t, w in s.cell_wall_s.items()}
    if runner is not None:
        suite["runner"] = runner
    merged["attn_suite"] = suite
    return merged


# --- storage -------------------------------------------------------------------------------
def storage_option(pytest_args: list[str]) -> str:
    """The --benchmark-storage the user gave (last one wins), else pytest-benchmark's default."""
    value = DEFAULT_STORAGE
    for i, arg in enumerate(pytest_args):
        if arg == "--benchmark-storage" and i + 1 < len(pytest_args):
            value = pytest_args[i + 1]
        elif arg.startswith("--benchmark-storage="):
            value = arg.split("=", 1)[1]
    return value


def storage_folder(pytest_args: list[str], gpu_slug: str) -> Path:
    """The folder a worker's autosave would use: the default gets /<gpu-slug>, as conftest.py does."""
    value = storage_option(pytest_args)
    if value == DEFAULT_STORAGE:
        value = f"{DEFAULT_STORAGE}/{gpu_slug}"
    if "://" not in value:  # as pytest-benchmark's load_storage
        value = "file://" + value
    scheme, _, path = value.partition("://")
    if scheme != "file":
        raise UsageError(f"--benchmark-storage {value}: the runner saves only to file:// storage")
    return Path(path)


def inductor_cache_dir(requested: str | None, folder: Path) -> str | None:
    """The workers' --attn-inductor-cache: `requested`, else FOLDER/inductor-cache (FOLDER is the GPU
    model's storage folder, so the compiled code persists per GPU model); None for 'none'."""
    if requested == "none":
        return None
    return str(Path(requested or folder / "inductor-cache").resolve())


def save_run(run: dict, folder: Path) -> Path:
    """Save `run` as pytest-benchmark's autosave would: FOLDER/<machine-id>/NNNN_<commit>_<date>.json.

    NNNN is one more than the highest in that machine-id folder. Unlike a plain autosave, the
    per-round times (`stats.data`) are kept, as `--benchmark-save-data` keeps them: the gate's
    rule needs them.
    """
    from pytest_benchmark.utils import get_machine_id, safe_dumps

    folder = Path(folder) / get_machine_id()
    folder.mkdir(parents=True, exist_ok=True)
    commit = run.get("commit_info") or {}
    tag = f"{commit.get('id', 'unknown')}_{datetime.now(timezone.utc):%Y%m%d_%H%M%S}"
    if commit.get("dirty"):
        tag += "_uncommitted-changes"
    number = max((int(p.name[:4]) for p in folder.glob(RUN_GLOB)), default=0) + 1
    while True:
        path = folder / f"{number:04d}_{tag}.json"
        try:
            with path.open("x", encoding="utf-8") as fh:
                fh.write(safe_dumps(run, ensure_ascii=True, indent=4))
            return path
        except FileExistsError:
            number += 1


def previous_runs(paths: list[str] | None, folder: Path, gpu: str, profile: str | None) -> list[tuple[str, dict]]:
    """(name, run) of the runs whose timings estimate the costs, newest first.

    Given paths are used as they are (a bad file is a UsageError); otherwise the newest
    PREVIOUS_RUNS runs in `folder` of the same GPU model and profile (unreadable ones skipped).
    """
    if paths:
        out = []
        for path in paths:
            try:
                out.append((path, load_run(path)))
            except RunFileError as e:
                raise UsageError(f"--previous: {e}") from None
        return out
    try:
        newest = latest_runs(folder, PREVIOUS_RUNS)
    except RunFileError as e:
        print(f"costs: not using earlier runs in {folder}: {e}")
        return []
    found = []
    for path in reversed(newest):
        try:
            run = load_run(path)
        except RunFileError:
            continue
        if gpu_model(run) == gpu and (run.get("attn_suite") or {}).get("profile") == profile:
            found.append((str(path), run))
    return found


# --- arguments -----------------------------------------------------------------------------
def split_pytest_args(args: list[str]) -> tuple[list[str], list[str]]:
    """(test paths, other args): a test path is an argument naming an existing file or folder
    (optionally with ::node), not the value of an option in VALUE_OPTIONS. UsageError for REFUSED_ARGS."""
    paths, rest = [], []
    for i, arg in enumerate(args):
        name = arg.split("=", 1)[0]
        if name in REFUSED_ARGS:
            raise UsageError(f"{name} cannot be passed to the runner's workers: {REFUSED_ARGS[name]}")
        is_value = i > 0 and args[i - 1] in VALUE_OPTIONS
        if not arg.startswith("-") and not is_value and Path(arg.split("::")[0]).exists():
            paths.append(arg)
        else:
            rest.append(arg)
    return paths, rest


def gpu_ids(requested: str, count: int, visible: str | None) -> list[str | None]:
    """The GPUs to use: the first N (or all) of the `count` visible ones, named as
    CUDA_VISIBLE_DEVICES names them (`visible`), else 0..count-1. [None] (one CPU slot) without a GPU."""
    if requested != "all" and (not requested.isdigit() or int(requested) < 1):
        raise UsageError(f"--gpus {requested}: give a positive number or 'all'")
    if count == 0:
        if requested not in ("all", "1"):
            raise UsageError(f"--gpus {requested}: no CUDA GPU is visible (the cells run on the CPU, one device)")
        return [None]
    names = [v.strip() for v in visible.split(",") if v.strip()][:count] if visible else []
    if len(names) < count:
        names = [str(i) for i in range(count)]
    n = count if requested == "all" else int(requested)
    if n > count:
        raise UsageError(f"--gpus {n}: only {count} GPU(s) visible ({', '.join(names)})")
    return names[:n]


def node_arg(nodeid: str, rootdir: Path) -> str:
    """A node id (relative to pytest's rootdir) as an argument valid from the current folder."""
    path, sep, rest = nodeid.partition("::")
    full = rootdir / path
    try:
        arg = str(full.relative_to(Path.cwd()))
    except ValueError:
        arg = str(full)
    return arg + sep + rest


# --- running -------------------------------------------------------------------------------
@dataclass
class Collection:
    items: list[str]
    run: dict
    cuda_device_count: int
    rootdir: Path

    @property
    def suite(self) -> dict:
        return self.run.get("attn_suite") or {}


def collect(test_paths: list[str], args: list[str], workdir: Path, env: dict) -> Collection:
    """The cells pytest selects for `args`, with the run's header (UsageError with pytest's output)."""
    out = workdir / "collect.json"
    cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "attn_tools.run", "-p", "no:cacheprovider",
           *args, *test_paths]
    proc = subprocess.run(cmd, env={**env, COLLECT_ENV: str(out)}, capture_output=True, text=True, check=False)
    (workdir / "collect.log").write_text(f"$ {shlex.join(cmd)}\n{proc.stdout}{proc.stderr}", encoding="utf-8")
    if proc.returncode != 0 or not out.exists():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise UsageError(f"collection failed (pytest exit code {proc.returncode}): {shlex.join(cmd)}\n{tail}")
    data = json.loads(out.read_text(encoding="utf-8"))
    return Collection(data["items"], data["run"], data["cuda_device_count"], Path(data["rootdir"]))


def worker_env(base: dict, gpu: str | None, workers: int, progress: Path) -> dict:
    """The worker's environment: its GPU pinned, its progress file, unbuffered output, and a share of
    the CPU for OpenMP on CPU runs and for Inductor's compile workers (unless already set)."""
    env = {**base, PROGRESS_ENV: str(progress), "PYTHONUNBUFFERED": "1"}
    env.pop(COLLECT_ENV, None)
    share = str(max(1, (os.cpu_count() or 1) // workers))
    if gpu is None:
        env.setdefault("OMP_NUM_THREADS", share)
    else:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    if workers > 1:
        env.setdefault("TORCHINDUCTOR_COMPILE_THREADS", share)
    return env


@dataclass
class _Worker:
    shard: Shard
    proc: subprocess.Popen
    started: float
    json_path: Path
    progress: Path


def start_worker(shard: Shard, args: list[str], workdir: Path, rootdir: Path, env: dict, workers: int) -> _Worker:
    json_path = workdir / f"shard-{shard.index}.json"
    progress = workdir / f"shard-{shard.index}.progress.jsonl"
    log = workdir / f"shard-{shard.index}.log"
    shard.log = str(log)
    cmd = [sys.executable, "-m", "pytest", "-p", "attn_tools.run", "-p", "no:cacheprovider", *args,
           "--benchmark-only", f"--benchmark-json={json_path}",
           # the shard's own autosave stays in the work folder: only the merged run is stored
           f"--benchmark-storage=file://{workdir / f'shard-{shard.index}-storage'}",
           *(node_arg(cell, rootdir) for cell in shard.cells)]
    with log.open("w", encoding="utf-8") as fh:
        fh.write(f"# {device_label(shard.gpu)}: {shlex.join(cmd)}\n")
        fh.flush()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=worker_env(env, shard.gpu, workers, progress))
    return _Worker(shard, proc, time.perf_counter(), json_path, progress)


def run_shards(plan: list[Shard], args: list[str], workdir: Path, rootdir: Path, env: dict,
               costs: dict[str, float], log=print) -> list[Shard]:
    """Run the planned shards at once; restart a crashed shard's unstarted cells once; all shards, in order."""
    shards = list(plan)
    workers = len(plan)
    running = [start_worker(s, args, workdir, rootdir, env, workers) for s in plan]
    try:
        while running:
            time.sleep(0.2)
            for worker in [w for w in running if w.proc.poll() is not None]:
                running.remove(worker)
                shard = _settle_worker(worker, may_restart=_restart_depth(worker.shard, shards) < RESTARTS)
                log(f"worker {shard.index} ({device_label(shard.gpu)}) done in {shard.wall_s:.0f} s, "
                    f"{exit_description(shard.exit_code)}" + (", CRASHED" if shard.crashed else ""))
                for lost in shard.lost:
                    log(f"  lost {lost['test']}: {lost['message'].splitlines()[0]}")
                if shard.remaining:
                    again = Shard(len(shards), shard.gpu, shard.remaining, restart_of=shard.index,
                                  estimated_s=sum(costs.get(c, 0.0) for c in shard.remaining))
                    shards.append(again)
                    log(f"  restarting its {len(again.cells)} unstarted cell(s) as worker {again.index}")
                    running.append(start_worker(again, args, workdir, rootdir, env, workers))
    except KeyboardInterrupt:
        for worker in running:
            if worker.proc.poll() is None:
                worker.proc.terminate()
        for worker in running:
            worker.proc.wait()
            worker.shard.interrupted = True
            _settle_worker(worker, may_restart=False)
        raise Interrupted(shards) from None
    return shards


def _settle_worker(worker: _Worker, may_restart: bool) -> Shard:
    """Record how `worker`'s process ended (exit code, wall time) and settle its shard."""
    shard = worker.shard
    shard.exit_code = worker.proc.returncode
    shard.wall_s = round(time.perf_counter() - worker.started, 1)
    settle(shard, worker.json_path, worker.progress, may_restart=may_restart)
    return shard


def _restart_depth(shard: Shard, shards: list[Shard]) -> int:
    depth = 0
    while shard.restart_of is not None:
        shard = shards[shard.restart_of]
        depth += 1
    return depth


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m attn_tools.run", description=__doc__.split("\n\n")[0],
                                usage="python -m attn_tools.run [options] -- <pytest args>")
    p.add_argument("--gpus", default="all", help="how many visible GPUs to use: N or 'all' (default)")
    p.add_argument("--workers-per-gpu", type=int, default=1, metavar="K",
                   help="workers per GPU (K > 1 proves sharding on one GPU; it does not measure wall time)")
    p.add_argument("--json", metavar="OUT", help="also write the merged run here")
    p.add_argument("--previous", metavar="RUN.json", action="append",
                   help="earlier run(s) whose timings estimate the costs (default: the newest runs of the same "
                        "GPU model and profile in the storage folder)")
    p.add_argument("--inductor-cache", metavar="DIR",
                   help="Inductor's and Triton's on-disk caches, kept between runs, one folder per implementation "
                        "(pytest's --attn-inductor-cache); default: inductor-cache/ in the GPU model's storage "
                        "folder (.benchmarks/<gpu>/inductor-cache); 'none': Inductor's own folder")
    p.add_argument("--workdir", metavar="DIR", help="where shard JSONs, logs and progress files go (default: a new "
                                                    "temporary folder, kept)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    ours, pytest_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args = parser().parse_args(ours)
    try:
        return _main(args, pytest_args, argv)
    except (UsageError, MergeError) as e:
        print(f"run error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("run interrupted before the workers started or while merging: nothing merged", file=sys.stderr)
        return 130


def _main(args, pytest_args: list[str], argv: list[str]) -> int:
    begin = time.perf_counter()
    if args.workers_per_gpu < 1:
        raise UsageError(f"--workers-per-gpu must be at least 1, got {args.workers_per_gpu}")
    test_paths, rest = split_pytest_args(pytest_args)
    if not test_paths:
        default = ROOT / DEFAULT_TESTS
        test_paths = [DEFAULT_TESTS if Path.cwd() == ROOT else str(default)]
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="attn-run-"))
    workdir.mkdir(parents=True, exist_ok=True)
    workdir = workdir.resolve()
    env = dict(os.environ)

    found = collect(test_paths, rest, workdir, env)
    if not found.items:
        raise UsageError(f"no tests selected by: {shlex.join(pytest_args)}")
    gpu = gpu_model(found.run)
    folder = storage_folder(rest, (found.run["machine_info"].get("gpu") or {}).get("gpu_slug", "unknown"))
    slots = [g for g in gpu_ids(args.gpus, found.cuda_device_count, env.get("CUDA_VISIBLE_DEVICES"))
             for _ in range(args.workers_per_gpu)]
    previous = previous_runs(args.previous, folder, gpu, found.suite.get("profile"))
    costs, measured = estimate_costs(found.items, found.suite.get("availability"), [r for _, r in previous])
    cache = inductor_cache_dir(args.inductor_cache, folder)
    if cache:
        rest = [*rest, f"--attn-inductor-cache={cache}"]
    plan = [Shard(i, slots[i], cells, sum(costs[c] for c in cells))
            for i, cells in enumerate(balance(costs, len(slots))) if cells]
    for i, shard in enumerate(plan):
        shard.index = i
    print(f"attn_tools.run: {len(found.items)} cells on {gpu}, profile {found.suite.get('profile')}, "
          f"{len(plan)} worker(s); work folder {workdir}")
    print(f"Inductor cache: {cache or 'Inductor default (shared by every implementation)'}")
    print(f"costs: {measured} measured in earlier runs ({', '.join(n for n, _ in previous) or 'none'}), "
          f"{len(found.items) - measured} from the cost model")
    for shard in plan:
        print(f"  worker {shard.index}: {device_label(shard.gpu)}, {len(shard.cells)} cell(s), "
              f"~{shard.estimated_s:.0f} s estimated")
    note = NOTE_SHARED_GPU.format(k=args.workers_per_gpu) if args.workers_per_gpu > 1 else None
    if note:
        print(f"note: {note}")

    try:
        shards, interrupted = run_shards(plan, rest, workdir, found.rootdir, env, costs), False
    except Interrupted as e:
        shards, interrupted = e.shards, True
        print("run interrupted: merging the cells that finished; the others are reported failed", file=sys.stderr)
    wall_s = time.perf_counter() - begin
    runner = {"command": shlex.join(["python", "-m", "attn_tools.run", *argv]),
              "gpus": sorted({s.gpu for s in plan}, key=str), "workers_per_gpu": args.workers_per_gpu,
              "workers": len(plan), "workdir": str(workdir), "inductor_cache": cache, "interrupted": interrupted,
              "note": note,
              "cost_previous_runs": [n for n, _ in previous], "cost_measured_cells": measured}
    merged = merge_shards(shards, wall_s, runner)
    path = save_run(merged, folder)
    if args.json:
        from pytest_benchmark.utils import safe_dumps

        Path(args.json).write_text(safe_dumps(merged, ensure_ascii=True, indent=4), encoding="utf-8")
    _print_summary(merged, path, args.json, note)
    if interrupted:
        return 130
    return 1 if merged["attn_suite"]["failed"] else 0


def _print_summary(merged: dict, path: Path, json_out: str | None, note: str | None) -> None:
    from .report import merge, text_report

    suite = merged["attn_suite"]
    print(text_report(merge([merged], names=[str(path)])), end="")
    for s in suite["shards"]:
        print(f"worker {s['shard']}: {device_label(s['gpu'])}, {len(s['cells'])} cell(s), {s['wall_s']:.0f} s, "
              f"{exit_description(s['exit_code'])}" + (f" (restart of worker {s['restart_of']})"
                                                       if s["restart_of"] is not None else ""))
    print(f"{len(merged['benchmarks'])} timed, {len(suite['skipped'])} skipped, {len(suite['failed'])} failed; "
          f"wall {suite['wall_s']:.0f} s")
    print(f"saved {path}" + (f" and {json_out}" if json_out else ""))
    if note:
        print(f"note: {note}")


if __name__ == "__main__":
    # A script's background job starts with SIGINT ignored, and Python then leaves it ignored; the
    # runner takes SIGINT (Ctrl-C, `timeout -s INT` at a deadline) as "stop and merge" wherever it runs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
