"""The end of a benchmark run (pytest_terminal_summary): the report's tables for this run's cells,
its skipped tests grouped by reason (a few lines; the JSON lists each), its failed tests one a line,
and where pytest-benchmark stored the run with the flag its own `list` and `compare` need."""
from __future__ import annotations

from datetime import datetime, timezone

from attn_tools.report import SINGLE_RUN_LABEL, merge, text_report

from .envinfo import gpu_info


def terminal_summary(terminalreporter, config) -> None:
    """Print the report for this run's cells; nothing if no cell was timed, skipped or failed.

    The rows are labelled `this run`; the legend gives the run's date, commit, GPU and profile.
    """
    recorder = getattr(config, "_benchmarksession", None)
    benchmarks = [b.as_dict(include_data=False) for b in getattr(recorder, "benchmarks", []) if b]
    skipped, failed = getattr(config, "_attn_skipped", []), getattr(config, "_attn_failed", [])
    if not (benchmarks or skipped or failed):
        return
    suite = config._attn_suite
    run = {
        "machine_info": {"gpu": {"gpu": gpu_info(suite.device)["gpu"]}},
        "commit_info": _commit_info(config),
        "datetime": datetime.now(timezone.utc).isoformat(),
        "benchmarks": benchmarks,
        "attn_suite": {"profile": suite.profile, "rounds": suite.rounds, "warmup": suite.warmup,
                       "slowdown": suite.slowdown, "compile_scope": suite.compile_scope,
                       "matmul_peak_tflops": suite.matmul_peak_tflops,
                       "complete": getattr(config, "_attn_complete", True),
                       "skipped": skipped, "failed": failed},
    }
    json_path = config.getoption("benchmark_json", None)
    name = str(json_path) if json_path else "this pytest run"
    terminalreporter.write_sep("=", "attention benchmark report")
    terminalreporter.write(text_report(merge([run], names=[name], labels=[SINGLE_RUN_LABEL])))
    storage = storage_line(recorder) if benchmarks else None
    if storage:
        terminalreporter.write_line(storage)


def storage_line(recorder) -> str | None:
    """Where pytest-benchmark saved the run and how its own tools read that storage, None if not saved.

    The suite keeps one storage folder per GPU model (.benchmarks/<gpu-slug>/<machine-id>/NNNN_*.json),
    one level deeper than pytest-benchmark's `list` and `compare` look, hence their `--storage` flag.
    """
    storage = getattr(recorder, "storage", None)
    path = getattr(storage, "path", None)
    if path is None or not (getattr(recorder, "save", None) or getattr(recorder, "autosave", None)):
        return None
    try:
        shown = getattr(storage, "location", None) or str(path)
    except ValueError:  # not under the current folder
        shown = str(path)
    return (f"Saved under {shown}; pytest-benchmark's own tools read it with: "
            f"pytest-benchmark --storage {shown} list | compare 0001 0002")


def _commit_info(config) -> dict:
    """pytest-benchmark's commit info for this run (what its JSON records), {} if unavailable."""
    try:
        return config.hook.pytest_benchmark_generate_commit_info(config=config) or {}
    except Exception:  # noqa: BLE001 - a missing git must not break the summary
        return {}
