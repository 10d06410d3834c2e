"""Running the workers: the collection, one pytest process per shard with its GPU pinned, a restart
for the cells a crashed worker never started, and a line per finished cell as it finishes."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..runs import short_name
from .args import UsageError, node_arg
from .plugin import COLLECT_ENV, PROGRESS_ENV
from .shards import Shard, device_label, exit_description, settle

RESTARTS = 1  # new workers for the cells a crashed worker never started
PLUGIN = "attn_tools.run.plugin"


class Interrupted(Exception):
    """The run was interrupted (SIGINT) while workers ran; `shards` are settled, ready to merge."""

    def __init__(self, shards: list[Shard]):
        super().__init__("interrupted")
        self.shards = shards


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
    cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", PLUGIN, "-p", "no:cacheprovider",
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
    cmd = [sys.executable, "-m", "pytest", "-p", PLUGIN, "-p", "no:cacheprovider", *args,
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


def clock(seconds: float) -> str:
    """Seconds as 'm:ss' ('h:mm:ss' from an hour)."""
    hours, rest = divmod(max(0, round(seconds)), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


# A lost cell's outcome word, by its `when` (shards.settle).
LOST_OUTCOMES = {"crash": "crashed", "interrupted": "interrupted", "not run": "not run"}


class Progress:
    """One line per cell as it finishes, read from the workers' progress files while they run:

        [done/total] <cell id> <outcome> <seconds>s  elapsed <m:ss>  ETA <m:ss>

    outcome: passed, skipped, xfailed or failed (as pytest reported it), or crashed, interrupted
    or not run for a cell a worker lost. elapsed counts from `begin` (the runner's start). ETA is
    the most any running worker still has to do: the planned `costs` of its cells not done yet.
    """

    def __init__(self, total: int, costs: dict[str, float], begin: float, log=None):
        self.total, self.costs, self.begin = total, costs, begin
        self.log = log or (lambda line: print(line, flush=True))  # flushed: the runner's output is often a pipe
        self.done: set[str] = set()
        self.workers: dict[int, tuple[list[str], Path]] = {}  # shard index -> (cells, progress file)
        self.offsets: dict[Path, int] = {}
        self.outcomes: dict[str, str] = {}
        self.started: dict[str, float] = {}  # wall-clock time a cell started

    def watch(self, shard: Shard, progress: Path) -> None:
        """Follow `shard`'s progress file from now on."""
        self.workers[shard.index] = (shard.cells, progress)

    def poll(self) -> None:
        """Print a line for each cell that finished since the last poll."""
        for _, path in list(self.workers.values()):
            for event in self._new_events(path):
                self._event(event)

    def settled(self, shard: Shard) -> None:
        """After `shard`'s worker exited: its last finished cells, then a line per cell it lost; it is
        no longer waited for (a restart is watched as a worker of its own)."""
        self.poll()
        for lost in shard.lost:
            started = self.started.get(lost["test"])
            self.finish(lost["test"], LOST_OUTCOMES.get(lost["when"], lost["when"]),
                        time.time() - started if started else 0.0)
        self.workers.pop(shard.index, None)

    def finish(self, test: str, outcome: str, seconds: float) -> None:
        """Count `test` done and print its line (once)."""
        if test in self.done:
            return
        self.done.add(test)
        self.log(f"[{len(self.done)}/{self.total}] {short_name(test)} {outcome} {seconds:.1f}s  "
                 f"elapsed {clock(time.perf_counter() - self.begin)}  ETA {clock(self.eta())}")

    def eta(self) -> float:
        """Seconds the busiest running worker still has planned: the costs of its cells not done."""
        return max((sum(self.costs.get(c, 0.0) for c in cells if c not in self.done)
                    for cells, _ in self.workers.values()), default=0.0)

    def _event(self, event: dict) -> None:
        test = event.get("test")
        if event["event"] == "start":
            self.started[test] = event.get("time") or time.time()
        elif event["event"] == "outcome":
            if event["outcome"] == "failed":
                self.outcomes[test] = "failed"
            elif self.outcomes.get(test) != "failed":
                known = str(event.get("reason", "")).startswith("known failure")
                self.outcomes[test] = "xfailed" if known else "skipped"
        elif event["event"] == "finish":
            self.finish(test, self.outcomes.get(test, "passed"), event.get("wall_s", 0.0))

    def _new_events(self, path: Path) -> list[dict]:
        """The events appended to `path` since the last read, up to its last complete line."""
        try:
            with path.open("rb") as fh:
                fh.seek(self.offsets.get(path, 0))
                data = fh.read()
        except OSError:
            return []
        end = data.rfind(b"\n") + 1
        self.offsets[path] = self.offsets.get(path, 0) + end
        events = []
        for line in data[:end].decode("utf-8", errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return events


def run_shards(plan: list[Shard], args: list[str], workdir: Path, rootdir: Path, env: dict,
               costs: dict[str, float], log=print, progress: Progress | None = None) -> list[Shard]:
    """Run the planned shards at once; restart a crashed shard's unstarted cells once; all shards, in order.

    `progress` prints a line per finished cell as it finishes (a silent one by default)."""
    progress = progress or Progress(sum(len(s.cells) for s in plan), costs, time.perf_counter(), log=lambda _: None)
    shards = list(plan)
    workers = len(plan)
    running = [start_worker(s, args, workdir, rootdir, env, workers) for s in plan]
    for worker in running:
        progress.watch(worker.shard, worker.progress)
    try:
        while running:
            time.sleep(0.2)
            progress.poll()
            for worker in [w for w in running if w.proc.poll() is not None]:
                running.remove(worker)
                shard = _settle_worker(worker, may_restart=_restart_depth(worker.shard, shards) < RESTARTS)
                progress.settled(shard)
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
                    progress.watch(again, running[-1].progress)
    except KeyboardInterrupt:
        for worker in running:
            if worker.proc.poll() is None:
                worker.proc.terminate()
        for worker in running:
            worker.proc.wait()
            worker.shard.interrupted = True
            progress.settled(_settle_worker(worker, may_restart=False))
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

