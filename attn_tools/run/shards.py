"""A worker's share of the cells (`Shard`) and how it ended: its run (its JSON, or rebuilt from its
progress file when it died), the cells it lost and those it never started."""
from __future__ import annotations

import copy
import json
import signal
from dataclasses import dataclass, field
from pathlib import Path

from ..runs import RunFileError, load_run

LOG_TAIL_LINES = 15


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

