"""The study-style tables at the end of a benchmark run (pytest_terminal_summary)."""
from __future__ import annotations

from datetime import datetime, timezone

from .envinfo import gpu_info
from attn_tools.report import SINGLE_RUN_LABEL, merge, text_report


def terminal_summary(terminalreporter, config) -> None:
    """Print the report's tables (a section per test kind) for this session's cells; nothing if none was timed.

    The rows are labelled `this run`; the legend gives the session's date, commit, GPU and profile.
    """
    session = getattr(config, "_benchmarksession", None)
    benchmarks = [b.as_dict(include_data=False) for b in getattr(session, "benchmarks", []) if b]
    if not benchmarks:
        return
    suite = config._attn_suite
    run = {
        "machine_info": {"gpu": {"gpu": gpu_info(suite.device)["gpu"]}},
        "commit_info": _commit_info(config),
        "datetime": datetime.now(timezone.utc).isoformat(),
        "benchmarks": benchmarks,
        "attn_suite": {"profile": suite.profile,
                       "compile_scope": suite.compile_scope,
                       "matmul_peak_tflops": suite.matmul_peak_tflops,
                       "skipped": getattr(config, "_attn_skipped", []),
                       "failed": getattr(config, "_attn_failed", [])},
    }
    json_path = config.getoption("benchmark_json", None)
    name = str(json_path) if json_path else "this session"
    terminalreporter.write_sep("=", "attention benchmark report")
    terminalreporter.write(text_report(merge([run], names=[name], labels=[SINGLE_RUN_LABEL])))


def _commit_info(config) -> dict:
    """pytest-benchmark's commit info for this session (what its JSON records), {} if unavailable."""
    try:
        return config.hook.pytest_benchmark_generate_commit_info(config=config) or {}
    except Exception:  # noqa: BLE001 - a missing git must not break the summary
        return {}
