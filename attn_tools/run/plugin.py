"""The runner's pytest plugin, loaded into the collecting pytest and into each worker with
`-p attn_tools.run.plugin`: the collection (cells, the run's header, the GPU count) and each
worker's progress file, one JSON line per event, which survives the worker's death."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..runs import report_outcome

COLLECT_ENV = "ATTN_RUN_COLLECT"  # the collecting pytest writes the cells and the run's header here
PROGRESS_ENV = "ATTN_RUN_PROGRESS"  # a worker appends one JSON line per event here


def pytest_configure(config):
    if os.environ.get(COLLECT_ENV):
        config.pluginmanager.register(_Collector(config, Path(os.environ[COLLECT_ENV])), "attn-run-collect")
    elif os.environ.get(PROGRESS_ENV):
        config.pluginmanager.register(_Progress(config, Path(os.environ[PROGRESS_ENV])), "attn-run-progress")


def empty_run(config) -> dict:
    """This pytest run's pytest-benchmark JSON without benchmarks, built by the hooks that build the real one.

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
    return json.loads(safe_dumps(run))  # a snapshot: attn_suite holds the run's live lists


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

    header (the empty run, collected items), start (a cell began, with the wall-clock time), benchmark (its
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
        self._write("start", test=nodeid, time=time.time())

    def pytest_runtest_logreport(self, report):
        outcome = report_outcome(report)  # the records conftest keeps in attn_suite
        if outcome:
            kind, record = outcome
            self._write("outcome", outcome=kind, **record)

    def pytest_runtest_logfinish(self, nodeid, location):
        # pytest-benchmark keeps each timed benchmark in config._benchmarksession (what its JSON is made of).
        benchmarks = getattr(getattr(self.config, "_benchmarksession", None), "benchmarks", [])
        for bench in benchmarks[self.stored:]:
            if not bench.has_error:
                self._write("benchmark", test=bench.fullname, bench=bench.as_dict(include_data=True))
        self.stored = len(benchmarks)
        self._write("finish", test=nodeid, wall_s=time.perf_counter() - self.started.get(nodeid, time.perf_counter()))

    def pytest_unconfigure(self, config):
        self.file.close()

