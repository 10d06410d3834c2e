"""The study-style tables at the end of a benchmark run (pytest_terminal_summary)."""
from __future__ import annotations

from .envinfo import gpu_info
from .report import merge, text_report


def terminal_summary(terminalreporter, config) -> None:
    """Print one table per (seq_len, mode) for this session's cells; nothing if none was timed."""
    session = getattr(config, "_benchmarksession", None)
    benchmarks = [b.as_dict(include_data=False) for b in getattr(session, "benchmarks", []) if b]
    if not benchmarks:
        return
    run = {
        "machine_info": {"gpu": {"gpu": gpu_info(config._attn_suite.device)["gpu"]}},
        "benchmarks": benchmarks,
        "attn_suite": {"skipped": getattr(config, "_attn_skipped", []),
                       "failed": getattr(config, "_attn_failed", [])},
    }
    terminalreporter.write_sep("=", "attention benchmark report")
    terminalreporter.write(text_report(merge([run])))
