"""Reading this suite's pytest-benchmark JSON files (one file = one run).

A *cell* is one `test_train_step[impl-variant-seq_len-mode]` test; cells are keyed by
their full pytest node id, which is also what `--benchmark-compare` matches on.
"""
from __future__ import annotations

import json
from pathlib import Path

RUN_GLOB = "[0-9][0-9][0-9][0-9]_*.json"  # pytest-benchmark's autosaved file names
CELL_TEST = "test_train_step["


class RunFileError(Exception):
    """A run file that cannot be used; the message names the file and is meant for the user."""


def load_run(path: str | Path) -> dict:
    """The parsed run at `path`; RunFileError (one line, naming the file) if it is not one."""
    path = Path(path)
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise RunFileError(f"{path}: cannot read: {e.strerror or e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunFileError(f"{path}: not valid JSON (corrupted or truncated?): {e}") from None
    if not isinstance(run, dict) or not isinstance(run.get("benchmarks"), list) \
            or not isinstance(run.get("machine_info"), dict):
        raise RunFileError(f"{path}: not a pytest-benchmark JSON (no 'benchmarks' and 'machine_info')")
    for bench in run["benchmarks"]:
        if not isinstance(bench, dict) or "fullname" not in bench \
                or "median" not in (bench.get("stats") or {}):
            raise RunFileError(f"{path}: a benchmark entry lacks 'fullname' or 'stats.median'")
    return run


def gpu_model(run: dict) -> str:
    """The GPU model a run was measured on ("cpu" for CPU runs, "unknown" if unrecorded)."""
    return (run["machine_info"].get("gpu") or {}).get("gpu", "unknown")


def median_ms(bench: dict) -> float:
    return bench["stats"]["median"] * 1e3


def short_name(fullname: str) -> str:
    """'tests/test_train_step.py::test_train_step[a-b-1-c]' -> 'test_train_step[a-b-1-c]'."""
    return fullname.rpartition("::")[2]


def cell_params(fullname: str) -> dict | None:
    """{impl, variant, seq_len, mode} parsed from a train-step test id, None for other tests."""
    name = short_name(fullname)
    if not name.startswith(CELL_TEST) or not name.endswith("]"):
        return None
    parts = name[len(CELL_TEST):-1].rsplit("-", 3)
    if len(parts) != 4 or not parts[2].isdigit():
        return None
    impl, variant, seq_len, mode = parts
    return {"impl": impl, "variant": variant, "seq_len": int(seq_len), "mode": mode}


def outcomes(run: dict) -> tuple[dict, dict, dict]:
    """(ran, skipped, failed) cells of a run, each keyed by full test id.

    ran: benchmark entries; skipped: reason; failed: first line of the message.
    A cell that failed after it was timed is only in `failed`.
    """
    suite = run.get("attn_suite") or {}
    failed = {f["test"]: _first_line(f.get("message")) for f in suite.get("failed", [])}
    skipped = {s["test"]: s.get("reason", "") for s in suite.get("skipped", [])}
    ran = {b["fullname"]: b for b in run["benchmarks"] if b["fullname"] not in failed}
    return ran, skipped, failed


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else ""


def latest_runs(folder: str | Path, count: int) -> list[Path]:
    """The `count` newest autosaved runs under `folder` (any machine-id subfolder), oldest first.

    Newest = highest NNNN prefix, as pytest-benchmark numbers them; a missing folder has none.
    """
    folder = Path(folder)
    files = sorted(folder.rglob(RUN_GLOB), key=lambda p: (p.name, str(p))) if folder.is_dir() else []
    return files[-count:] if count else []
