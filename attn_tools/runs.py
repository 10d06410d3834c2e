"""Reading this suite's pytest-benchmark JSON files (one file = one run).

A *cell* is one `test_train_step[impl-variant-seq_len-mode]` test; cells are keyed by
their full pytest node id, which is also what `--benchmark-compare` matches on.
"""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

RUN_GLOB = "[0-9][0-9][0-9][0-9]_*.json"  # pytest-benchmark's autosaved file names
# Matrix tests and the number of "-"-separated parameters in their ids:
# impl-variant-seq_len-mode, and -direction for attention-kernel cells.
# The kernel label of a cell whose attention the compiler rewrote into another implementation's op.
REWRITTEN = "rewritten to"
CELL_TESTS = {"test_train_step[": 4, "test_infer_step[": 4, "test_attention[": 5}


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
    """A cell's median step time in milliseconds."""
    return bench["stats"]["median"] * 1e3


def round_times_s(bench: dict) -> list[float] | None:
    """The cell's per-round step times in seconds (`stats.data`), None if the run did not keep them.

    pytest-benchmark divides each round's time by its `iterations` (training steps per round),
    so these are per-step times whatever the number of steps per round. `--benchmark-json`
    always keeps them; autosaved runs only with `--benchmark-save-data`.
    """
    data = bench["stats"].get("data")
    return list(data) if data else None


# What must be equal for two runs' step times to be comparable: the run-level settings in
# `attn_suite` and the per-cell ones that pytest-benchmark and the harness record.
RUN_SETTINGS = ("profile", "rounds", "warmup", "slowdown")
# Run-level switches that change what a cell's process does around its timed rounds (a bare
# perf_counter loop, the study's yardstick after each cell); absent = off (runs before the option).
SWITCH_SETTINGS = ("bare_loop", "study")
SCOPED_TESTS = ("test_train_step[", "test_infer_step[")  # cells whose model --attn-compile-scope compiles
# test_varlen_train_step[<impl>-<mode>-changing]: the cell with new image sizes every step
CHANGING_ID_SUFFIX = "-changing"
CELL_SETTINGS = {"iterations": ("stats", "iterations"), "steps_per_round": ("extra_info", "steps_per_round")}
# The baseline of every speedup and "energy saved": native/<same variant>, same seq_len and mode, same run.
BASELINE_IMPL = "native"
GPU_SOFTWARE_KEYS = ("driver", "cuda", "cudnn")  # machine_info["gpu"] entries that are software versions


def workers_per_gpu(run: dict) -> int:
    """How many pytest workers shared each GPU (`attn_suite.workers_per_gpu`, else the runner's record; 1 if
    neither: plain pytest runs one process)."""
    suite = run.get("attn_suite") or {}
    value = suite.get("workers_per_gpu", (suite.get("runner") or {}).get("workers_per_gpu"))
    return int(value) if value else 1


def is_complete(run: dict) -> bool:
    """False when the run says it was cut short (`attn_suite.complete == False`: interrupted, crashed or
    past a deadline); a run that does not say is taken as complete."""
    return (run.get("attn_suite") or {}).get("complete", True) is not False


def run_settings(run: dict) -> dict:
    """The timing settings a run recorded: {name: value}; a setting it did not record is absent.

    Run-level: profile, rounds, warmup, slowdown, and compile_scope when the run has compiled
    training or inference cells (the only ones it changes; a run written before the option compiled
    each block); workers_per_gpu, bare_loop and study always (defaults 1, False, False). The per-cell
    settings (CELL_SETTINGS) belong to cells, not runs: `cell_setting_differences` compares them.
    """
    suite = run.get("attn_suite") or {}
    settings = {name: suite[name] for name in RUN_SETTINGS if suite.get(name) is not None}
    if suite and any(short_name(b["fullname"]).startswith(SCOPED_TESTS)
                     and (cell_params(b["fullname"]) or {}).get("mode") == "compiled" for b in run["benchmarks"]):
        settings["compile_scope"] = suite.get("compile_scope", "block")
    settings["workers_per_gpu"] = workers_per_gpu(run)
    settings.update({name: bool(suite.get(name)) for name in SWITCH_SETTINGS})
    return settings


NOT_INSTALLED = "not installed"  # what machine_info.libraries records for a missing library


def software_versions(run: dict) -> dict:
    """{name: version} of the software that times a cell: every library in `machine_info.libraries`
    (torch, timm, the attention libraries, "not installed" included) and the GPU's driver, CUDA and cuDNN."""
    info = run["machine_info"]
    versions = dict(info.get("libraries") or {})
    gpu = info.get("gpu") or {}
    versions.update({key: gpu[key] for key in GPU_SOFTWARE_KEYS if gpu.get(key) is not None})
    return versions


def software_differences(a: dict, b: dict, labels: tuple[str, str] = ("baseline", "current")) -> list[str]:
    """'name: LA old, LB new' for each version that both runs recorded and that differs."""
    va, vb = software_versions(a), software_versions(b)
    la, lb = labels
    # A library installed in one environment set only is no change: each run's cells of it need it installed.
    return [f"{key}: {la} {va[key]!r}, {lb} {vb[key]!r}" for key in sorted(set(va) & set(vb))
            if va[key] != vb[key] and NOT_INSTALLED not in (va[key], vb[key])]


def cell_setting_differences(a: dict, b: dict, labels: tuple[str, str] = ("baseline", "current")) -> list[str]:
    """'setting of cell: LA x, LB y' for each per-cell setting (CELL_SETTINGS) of a cell both runs
    timed that differs. Compared cell by cell: runs of other cells (a kernel cell picks its own
    iterations) share no cell-level setting."""
    la, lb = labels
    cells_b = {bench["fullname"]: bench for bench in b["benchmarks"]}
    found = []
    for bench in a["benchmarks"]:
        other = cells_b.get(bench["fullname"])
        if other is None:
            continue
        for name, (section, key) in CELL_SETTINGS.items():
            x, y = (bench.get(section) or {}).get(key), (other.get(section) or {}).get(key)
            if x is not None and y is not None and x != y:
                found.append(f"{name} of {short_name(bench['fullname'])}: {la} {x!r}, {lb} {y!r}")
    return found


def comparable(a: dict, b: dict, allow_injected_slowdown: bool = False,
               labels: tuple[str, str] = ("baseline", "current"), allow_software_change: bool = False,
               compare_cells: bool = True) -> list[str]:
    """Why runs `a` and `b` must not be compared, one reason a line; [] when they may be.

    The one comparability rule of the gate, the report and the runner's merge: the same GPU
    model, every timing setting that both runs recorded equal (RUN_SETTINGS, CELL_SETTINGS,
    compile_scope, and always workers per GPU, the bare loop and the study yardstick), and the
    same software versions (`software_versions`: libraries, driver, CUDA, cuDNN) where both
    recorded one. A version change is not comparable by default because it moves step times by
    itself: a regression it causes would otherwise be blamed on the code, or hide one. Pass
    `allow_software_change` when the change is the thing under test (an upgrade's gate).
    With `allow_injected_slowdown`, `b` may carry an injected slowdown that `a` lacks (to test
    the gate). `labels` name the two runs in the reasons. `compare_cells=False` leaves out the
    per-cell settings of cells both runs timed: for the report, where the later run's cell
    replaces the earlier one's and the two measurements are never compared.
    """
    la, lb = labels
    reasons = []
    gpu_a, gpu_b = gpu_model(a), gpu_model(b)
    if gpu_a != gpu_b:
        reasons.append(f"GPU model: {la} {gpu_a!r}, {lb} {gpu_b!r}")
    settings_a, settings_b = run_settings(a), run_settings(b)
    ignored = {"slowdown"} if allow_injected_slowdown and not settings_a.get("slowdown") else set()
    reasons += [f"{name}: {la} {settings_a[name]!r}, {lb} {settings_b[name]!r}" for name in settings_a
                if name in settings_b and name not in ignored and settings_a[name] != settings_b[name]]
    if compare_cells:
        reasons += cell_setting_differences(a, b, labels)
    if not allow_software_change:
        reasons += [f"software {d}" for d in software_differences(a, b, labels)]
    return reasons


def recorded_date(run: dict, path: str | Path) -> datetime:
    """When the run was saved (pytest-benchmark's `datetime`, UTC); RunFileError if unrecorded."""
    text = run.get("datetime")
    try:
        date = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise RunFileError(f"{path}: no valid recorded date ('datetime': {text!r})") from None
    return date if date.tzinfo else date.replace(tzinfo=timezone.utc)


def short_name(fullname: str) -> str:
    """'tests/test_train_step.py::test_train_step[a-b-1-c]' -> 'test_train_step[a-b-1-c]'."""
    return fullname.rpartition("::")[2]


def cell_params(fullname: str) -> dict | None:
    """{impl, variant, seq_len, mode} (and direction for attention cells) parsed from a matrix
    test id (training, inference or attention-kernel cell), None for other tests."""
    name = short_name(fullname)
    for prefix, count in CELL_TESTS.items():
        if not name.startswith(prefix) or not name.endswith("]"):
            continue
        parts = name[len(prefix):-1].rsplit("-", count - 1)
        if len(parts) != count or not parts[2].isdigit():
            return None
        params = {"impl": parts[0], "variant": parts[1], "seq_len": int(parts[2]), "mode": parts[3]}
        if count == 5:
            params["direction"] = parts[4]
        return params
    return None


def report_outcome(report) -> tuple[str, dict] | None:
    """("skipped", {test, reason}) or ("failed", {test, when, message}) for a pytest report of a
    matrix cell (an id with parameters) that skipped or failed; None otherwise. These are the
    records kept in `attn_suite["skipped"]` and `["failed"]`, which pytest-benchmark's JSON lacks."""
    if "[" not in report.nodeid:
        return None
    if report.skipped:
        if hasattr(report, "wasxfail"):
            reason = f"known failure (xfail): {report.wasxfail}"
        else:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        return "skipped", {"test": report.nodeid, "reason": reason.removeprefix("Skipped: ")}
    if report.failed:
        crash = getattr(report.longrepr, "reprcrash", None)
        return "failed", {"test": report.nodeid, "when": report.when,
                          "error": _summary_line(crash.message.splitlines()) if crash else "",
                          "message": str(report.longrepr)[-2000:]}
    return None


def outcomes(run: dict) -> tuple[dict, dict, dict]:
    """(ran, skipped, failed) cells of a run, each keyed by full test id.

    ran: benchmark entries; skipped: reason; failed: `failure_summary`.
    A cell that failed after it was timed is only in `failed`.
    """
    suite = run.get("attn_suite") or {}
    failed = {f["test"]: failure_summary(f) for f in suite.get("failed", [])}
    skipped = {s["test"]: s.get("reason", "") for s in suite.get("skipped", [])}
    ran = {b["fullname"]: b for b in run["benchmarks"] if b["fullname"] not in failed}
    return ran, skipped, failed


def failure_summary(record: dict) -> str:
    """One line saying why a cell failed: the exception pytest reported (`error`), else, for runs
    recorded before that field, the `E ` lines of the traceback, else the message's first line.
    A line that ends with a colon (Dynamo's "backend='inductor' raised:") is joined with the
    next, which names the exception underneath."""
    error = record.get("error") or ""
    if error and not error.endswith(":"):
        return error
    message = record.get("message") or ""
    error_lines = [line[1:].strip() for line in message.splitlines() if line.startswith("E ")]
    return _summary_line(error_lines) or error or _summary_line(message.splitlines())


def _summary_line(lines: list[str]) -> str:
    """The first non-empty line, joined with the next ones while it ends with a colon."""
    lines = [line.strip() for line in lines if line.strip()]
    out = []
    for line in lines:
        out.append(line)
        if not line.endswith(":"):
            break
    return " ".join(out)


def latest_runs(folder: str | Path, count: int) -> list[Path]:
    """The `count` newest autosaved runs under `folder` (any machine-id subfolder), oldest first.

    Newest = latest recorded date (the JSON's `datetime`). pytest-benchmark's NNNN prefix only
    counts within one machine-id folder, which changes with the Python version, so it cannot
    order runs across folders. A missing folder has none; an unreadable run is a RunFileError.
    """
    folder = Path(folder)
    files = folder.rglob(RUN_GLOB) if folder.is_dir() else []
    by_date = sorted((recorded_date(load_run(path), path), str(path), path) for path in files)
    return [path for _, _, path in by_date[-count:]] if count else []

def short_kernel_name(names) -> str:
    """The clearest name for tables: a forward op or kernel if any, trimmed of template noise."""
    if not names:
        return ""
    forward = [n for n in names if not re.search(r"(?i)backward|bwd|bprop", n)]
    name = min(forward or names, key=len)
    name = re.sub(r"^kernel_cutlass_kernel_|_object_at_.*$|[<(].*$", "", name.removeprefix("void "))
    return name[:80]
