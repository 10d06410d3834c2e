"""Run the real benchmark suite in a subprocess (for the gate and report tests)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# One thread: on a shared 2-core machine, two multi-threaded torch processes make each other's
# OpenMP barriers spin and single steps jump from ~30 ms to over 1 s; one thread stays steady.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run_suite(json_path: Path, *args: str, tests=("tests/test_train_step.py",)) -> subprocess.CompletedProcess:
    """`pytest TESTS ARGS --benchmark-json JSON_PATH` in the repo root (TESTS: the train step by default).

    With --benchmark-autosave among ARGS, and unless ARGS name another storage, runs are saved beside
    JSON_PATH, never into the repository's own `.benchmarks/` (a slowed-down run must not become a baseline).
    """
    cmd = [sys.executable, "-m", "pytest", *tests, "-p", "no:cacheprovider",
           "--attn-rounds", "15", "--attn-warmup", "2", f"--benchmark-json={json_path}",
           f"--benchmark-storage=file://{json_path.parent / 'scratch-storage'}", *args]
    return subprocess.run(cmd, check=False, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)


def run_module(module: str, *args: str) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` in the repo root."""
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], check=False,
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
