"""The multi-worker runner (attn_tools.run): balancing, costs, merging and crash bookkeeping on
hand-made data, then real sharded smoke runs on CPU: two workers merged, and a worker killed
mid-run whose finished cell is kept, running cell reported failed and remaining cell rerun."""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from benchruns import ENV, ROOT, run_module

from attn_tools import report, run
from attn_tools.runs import RUN_GLOB, latest_runs, outcomes

pytestmark = pytest.mark.suite

TESTS = "tests/test_train_step.py::test_train_step"


def cell(name: str) -> str:
    return f"{TESTS}[{name}]"


# --- balancing and costs ---------------------------------------------------------------------
def test_balance_longest_first_keeps_collection_order():
    costs = {"a": 7.0, "b": 5.0, "c": 4.0, "d": 3.0, "e": 1.0}
    # LPT: a->0 (7), b->1 (5), c->1 (9), d->0 (10), e->1 (10)
    assert run.balance(costs, 2) == [["a", "d"], ["b", "c", "e"]]
    assert run.balance({"x": 1.0, "y": 5.0, "z": 1.0}, 1) == [["x", "y", "z"]]
    shards = run.balance(costs, 4)
    assert sorted(t for shard in shards for t in shard) == sorted(costs)
    assert run.balance({"x": 1.0}, 3) == [["x"], [], []]
    with pytest.raises(ValueError, match="at least one worker"):
        run.balance(costs, 0)


def test_balance_keeps_the_cells_that_share_parity_checks_on_one_worker():
    """A worker memoizes parity per (impl, variant, seq_len, mode); split over two workers, the
    same check would run twice (session 7's two-worker proof: fwd on one worker, fwd_bwd on the other)."""
    attention = "tests/test_attention.py::test_attention[{}-plain-196-{}-{}]"
    tests = [attention.format(impl, mode, direction) for impl in ("native", "flex") for mode in ("eager", "compiled")
             for direction in ("fwd", "fwd_bwd")]
    tests += [cell(f"{impl}-plain-196-eager") for impl in ("native", "flex")]
    costs = dict.fromkeys(tests, 1.0)
    shards = run.balance(costs, 2)
    assert sorted(t for shard in shards for t in shard) == sorted(tests)
    owner = {run.parity_group(t): i for i, shard in enumerate(shards) for t in shard}
    assert all(owner[run.parity_group(t)] == i for i, shard in enumerate(shards) for t in shard)
    assert len(owner) == 4 and [len(shard) for shard in shards] == [5, 5]  # groups of 3, 2, 3, 2
    # without groups the same costs split the pairs: the old behaviour
    assert run.balance(costs, 2, group=lambda t: t)[0] == tests[0::2]


def test_balance_is_near_optimal():
    costs = {f"t{i}": float(c) for i, c in enumerate([30, 30, 16, 16, 15, 15, 8, 8, 8, 0.5, 0.5])}
    loads = [sum(costs[t] for t in shard) for shard in run.balance(costs, 3)]
    # LPT is within 4/3 of the optimum, which is at least the mean load
    assert max(loads) <= 4 / 3 * sum(costs.values()) / 3 + max(costs.values()) / 3
    assert abs(sum(loads) - sum(costs.values())) < 1e-9


def test_cost_model():
    availability = {"native": {"status": "available", "variants": ["plain", "softcap", "neighborhood"]},
                    "sdpa_math": {"status": "available", "variants": ["plain", "neighborhood"]},
                    "fa4": {"status": "flash-attn-4 not installed", "variants": ["plain", "softcap"]}}
    cost = {name: run.model_cost(cell(name), availability) for name in (
        "native-plain-196-compiled", "native-plain-196-eager", "native-plain-3136-compiled",
        "native-plain-3136-eager", "sdpa_math-softcap-196-compiled", "fa4-plain-196-compiled")}
    assert cost["native-plain-196-compiled"] > cost["native-plain-196-eager"] > cost["native-plain-3136-eager"]
    assert cost["native-plain-196-compiled"] > cost["native-plain-3136-compiled"] > cost["native-plain-3136-eager"]
    assert cost["sdpa_math-softcap-196-compiled"] == run.SKIP_CELL_S  # the variant is not supported
    assert cost["fa4-plain-196-compiled"] == run.SKIP_CELL_S  # the library is missing
    assert run.model_cost("tests/test_registry.py::test_ids_unique") == run.OTHER_TEST_S


def test_costs_from_previous_run():
    timed, formula, skipped, new = (cell(n) for n in (
        "native-plain-196-eager", "native-plain-196-compiled", "sdpa_math-softcap-196-eager",
        "native-plain-3136-eager"))
    previous = {
        "machine_info": {}, "benchmarks": [
            {"fullname": formula, "stats": {"median": 0.1, "rounds": 10, "iterations": 3},
             "extra_info": {"first_step_s": 4.0}}],
        "attn_suite": {"warmup": 2, "cell_wall_s": {timed: 20.0},
                       "skipped": [{"test": skipped, "reason": "no softcap"}], "failed": []}}
    costs, measured = run.estimate_costs([timed, formula, skipped, new], None, [previous])
    assert measured == 3
    assert costs[timed] == 20.0  # the recorded wall time
    assert costs[formula] == pytest.approx(4.0 + (10 + 2) * 3 * 0.1)  # first step + warm-up and timed steps
    assert costs[skipped] == run.SKIP_CELL_S
    # unmeasured: the model, scaled by measured / modelled over the timed cells (15 s and 30 s modelled)
    scale = (20.0 + 7.6) / (run.CELL_S[196] + run.CELL_S[196] * run.COMPILED_FACTOR)
    assert costs[new] == pytest.approx(run.CELL_S[3136] * scale)
    assert run.estimate_costs([new], None, [])[0][new] == run.CELL_S[3136]


def test_progress_prints_a_line_per_finished_cell_with_eta(tmp_path):
    a, b, c = cell("native-plain-196-eager"), cell("native-softcap-196-eager"), cell("sdpa_math-plain-196-eager")
    lines = []
    progress = run.Progress(3, {a: 10.0, b: 20.0, c: 5.0}, begin=time.perf_counter() - 65, log=lines.append)
    first, second = run.Shard(0, None, [a, b]), run.Shard(1, None, [c])
    files = [tmp_path / "0.jsonl", tmp_path / "1.jsonl"]
    for shard, path in zip((first, second), files):
        path.write_text("")
        progress.watch(shard, path)

    def append(path, *events, tail=""):
        with path.open("a") as fh:
            fh.write("".join(json.dumps(e) + "\n" for e in events) + tail)

    append(files[0], {"event": "start", "test": a, "time": time.time()}, {"event": "finish", "test": a, "wall_s": 9.52},
           {"event": "start", "test": b, "time": time.time() - 3}, tail='{"event": "fin')  # b's line cut short
    progress.poll()
    assert lines == ["[1/3] test_train_step[native-plain-196-eager] passed 9.5s  elapsed 1:05  ETA 0:20"]
    append(files[1], {"event": "outcome", "outcome": "skipped", "test": c, "reason": "no softcap"},
           {"event": "finish", "test": c, "wall_s": 0.04})
    progress.poll()
    assert lines[1] == "[2/3] test_train_step[sdpa_math-plain-196-eager] skipped 0.0s  elapsed 1:05  ETA 0:20"
    first.lost.append({"test": b, "when": "crash", "message": "worker 0 died"})
    progress.settled(first)
    assert re.fullmatch(r"\[3/3\] test_train_step\[native-softcap-196-eager\] crashed 3\.\ds  elapsed 1:05  "
                        r"ETA 0:00", lines[2]), lines[2]
    assert run.workers.clock(3725) == "1:02:05" and run.workers.clock(59.6) == "1:00"


# --- merging -----------------------------------------------------------------------------------
def _bench(name: str, median: float = 0.02) -> dict:
    return {"group": "196-eager", "name": f"test_train_step[{name}]", "fullname": cell(name),
            "params": {}, "extra_info": {"median_ms": median * 1e3},
            "stats": {"median": median, "rounds": 3, "iterations": 1, "data": [median] * 3}}


def _run(node: str, benches=(), skipped=(), failed=(), gpu="cpu", rounds=3) -> dict:
    return {"machine_info": {"node": node, "gpu": {"gpu": gpu, "gpu_slug": gpu}},
            "commit_info": {"id": "abc", "dirty": False}, "datetime": "2026-12-01T00:00:00+00:00",
            "version": "5.3.1", "benchmarks": list(benches),
            "attn_suite": {"profile": "smoke", "device": "cpu", "rounds": rounds, "warmup": 1, "slowdown": 0.0,
                           "availability": {}, "skipped": list(skipped), "failed": list(failed)}}


def _shards() -> list:
    a = run.Shard(0, "0", [cell("native-plain-196-eager"), cell("sdpa_math-softcap-196-eager")], wall_s=5.0,
                  exit_code=0, log="shard-0.log",
                  run=_run("host-a", [_bench("native-plain-196-eager")],
                           skipped=[{"test": cell("sdpa_math-softcap-196-eager"), "reason": "no softcap"}]),
                  cell_wall_s={cell("native-plain-196-eager"): 2.0})
    b = run.Shard(1, "1", [cell("native-softcap-196-eager"), cell("flex-plain-196-eager")], wall_s=6.0,
                  exit_code=1, log="shard-1.log",
                  run=_run("host-b", [_bench("native-softcap-196-eager")],
                           failed=[{"test": cell("flex-plain-196-eager"), "when": "call", "message": "parity"}]))
    return [a, b]


def test_merge_unions_the_shards():
    a, b = _shards()
    lost = {"test": cell("native-plain-3136-eager"), "when": "crash", "message": "worker 1 died"}
    b.lost.append(lost)
    a.run["attn_suite"]["matmul_peak_tflops"], b.run["attn_suite"]["matmul_peak_tflops"] = None, 700.0
    a.run["machine_info"]["gpu"]["uuid"] = "GPU-a"
    merged = run.merge_shards([a, b], wall_s=12.34, runner={"workers": 2})
    assert [x["fullname"] for x in merged["benchmarks"]] == [cell("native-plain-196-eager"),
                                                             cell("native-softcap-196-eager")]
    assert merged["machine_info"]["node"] == "host-a" and merged["commit_info"]["id"] == "abc"
    suite = merged["attn_suite"]
    assert suite["profile"] == "smoke" and suite["rounds"] == 3
    assert suite["matmul_peak_tflops"] == 700.0  # measured by shard 1 only
    assert [s["test"] for s in suite["skipped"]] == [cell("sdpa_math-softcap-196-eager")]
    assert [f["test"] for f in suite["failed"]] == [cell("flex-plain-196-eager"), cell("native-plain-3136-eager")]
    assert suite["wall_s"] == 12.3 and suite["runner"] == {"workers": 2}
    assert suite["complete"] is False and suite["workers_per_gpu"] == 1  # shard 1 lost a cell
    a.lost, b.lost = [], []
    assert run.merge_shards([a, b], wall_s=1.0, workers_per_gpu=2)["attn_suite"]["complete"] is True
    assert run.merge_shards([a, b], wall_s=1.0, workers_per_gpu=2)["attn_suite"]["workers_per_gpu"] == 2
    assert [(s["shard"], s["gpu"], s["cells"], s["wall_s"], s["exit_code"]) for s in suite["shards"]] == [
        (0, "0", a.cells, 5.0, 0), (1, "1", b.cells, 6.0, 1)]
    assert [s["gpu_uuid"] for s in suite["shards"]] == ["GPU-a", None]  # each worker's GPU, where recorded
    assert suite["cell_wall_s"] == {cell("native-plain-196-eager"): 2.0}
    assert a.run["attn_suite"]["failed"] == []  # the shards' runs are not changed
    ran, skipped, failed = outcomes(merged)
    assert len(ran) == 2 and len(skipped) == 1 and failed[cell("native-plain-3136-eager")] == "worker 1 died"
    # the report reads the merged run like any other
    text = report.text_report(report.merge([merged]))
    assert "native" in text and "Failed tests (2):" in text


@pytest.mark.parametrize(("edit", "message"), [
    (lambda r: r["machine_info"]["gpu"].update(gpu="NVIDIA H100"), "GPU model: shard 0 has 'cpu', shard 1 has "
                                                                   "'NVIDIA H100'"),
    (lambda r: r["attn_suite"].update(rounds=10), "rounds: shard 0 has 3, shard 1 has 10"),
    (lambda r: r["attn_suite"].update(profile="full"), "profile: shard 0 has 'smoke', shard 1 has 'full'"),
    (lambda r: r["benchmarks"].append(_bench("native-plain-196-eager")), "timed by shard 0 and shard 1"),
])
def test_merge_refuses_disagreeing_shards(edit, message):
    a, b = _shards()
    edit(b.run)
    with pytest.raises(run.MergeError, match=message.replace("(", r"\(")):
        run.merge_shards([a, b], wall_s=1.0)


def test_merge_needs_a_result():
    with pytest.raises(run.MergeError, match="no worker produced a result"):
        run.merge_shards([run.Shard(0, None, [cell("native-plain-196-eager")], log="shard-0.log")], wall_s=1.0)


def test_crashed_worker_keeps_finished_cells(tmp_path):
    """A worker killed in its second cell: the first is rebuilt from the progress file, the second
    is lost with the exit code and log, the third is left for a restart (or lost without one)."""
    first, second, third = cell("native-plain-196-eager"), cell("native-softcap-196-eager"), \
        cell("native-neighborhood-196-eager")
    events = [{"event": "header", "run": _run("host"), "items": [first, second, third]},
              {"event": "start", "test": first},
              {"event": "benchmark", "test": first, "bench": _bench("native-plain-196-eager")},
              {"event": "finish", "test": first, "wall_s": 1.5}, {"event": "start", "test": second}]
    progress = tmp_path / "p.jsonl"
    progress.write_text("\n".join(json.dumps(e) for e in events) + '\n{"event": "fini', encoding="utf-8")
    log = tmp_path / "shard.log"
    log.write_text("collected 3 items\nSegmentation fault\n", encoding="utf-8")
    for may_restart in (True, False):
        shard = run.Shard(0, "0", [first, second, third], exit_code=-9, log=str(log))
        run.settle(shard, tmp_path / "missing.json", progress, may_restart=may_restart)
        assert shard.crashed and shard.from_progress
        assert [b["fullname"] for b in shard.run["benchmarks"]] == [first]
        assert shard.cell_wall_s == {first: 1.5}
        lost = {x["test"]: x for x in shard.lost}
        assert lost[second]["when"] == "crash"
        assert "killed by SIGKILL (exit code -9)" in lost[second]["message"].splitlines()[0]
        assert "Segmentation fault" in lost[second]["message"]
        if may_restart:
            assert shard.remaining == [third] and third not in lost
        else:
            assert shard.remaining == [] and lost[third]["when"] == "not run"


def test_arguments_gpus_and_storage(tmp_path, monkeypatch):
    assert run.gpu_ids("all", 0, None) == [None]
    assert run.gpu_ids("all", 2, "3,5") == ["3", "5"] and run.gpu_ids("1", 2, "3,5") == ["3"]
    assert run.gpu_ids("all", 2, None) == ["0", "1"]
    for requested, count in (("2", 0), ("3", 2), ("0", 2), ("x", 2)):
        with pytest.raises(run.UsageError):
            run.gpu_ids(requested, count, None)
    monkeypatch.chdir(ROOT)
    paths, rest = run.split_pytest_args(["--attn-impl", "native", "tests/test_train_step.py", "-k", "tests", "-q"])
    assert paths == ["tests/test_train_step.py"] and rest == ["--attn-impl", "native", "-k", "tests", "-q"]
    with pytest.raises(run.UsageError, match="--benchmark-json"):
        run.split_pytest_args(["--benchmark-json=x.json"])
    assert run.storage_folder([], "nvidia-h200") == Path(".benchmarks/nvidia-h200")
    assert run.storage_folder([f"--benchmark-storage=file://{tmp_path}"], "nvidia-h200") == tmp_path
    with pytest.raises(run.UsageError, match="file://"):
        run.storage_folder(["--benchmark-storage", "elasticsearch+http://host/index/doc"], "x")
    assert run.inductor_cache_dir(None, tmp_path) == str(tmp_path / "inductor-cache")
    assert run.inductor_cache_dir(str(tmp_path / "c"), tmp_path) == str(tmp_path / "c")
    assert run.inductor_cache_dir("none", tmp_path) is None
    with pytest.raises(run.UsageError, match="--inductor-cache"):
        run.split_pytest_args(["--attn-inductor-cache=x"])


def test_save_run_numbers_like_autosave(tmp_path):
    merged = run.merge_shards(_shards(), wall_s=1.0)
    first, second = run.save_run(merged, tmp_path), run.save_run(merged, tmp_path)
    assert first.parent == second.parent and first.parent.parent == tmp_path
    assert first.name.startswith("0001_abc_") and second.name.startswith("0002_abc_")
    assert first.match(RUN_GLOB) and latest_runs(tmp_path, 1) == [second]
    assert json.loads(second.read_text())["benchmarks"][0]["stats"]["data"]  # kept: the gate needs them


# --- real sharded runs on CPU ------------------------------------------------------------------
def _runner(tmp_path, *args, env=None):
    cmd = [sys.executable, "-m", "attn_tools.run", "--json", str(tmp_path / "out.json"),
           "--workdir", str(tmp_path / "work"), *args[:args.index("--")], "--",
           f"--benchmark-storage=file://{tmp_path / 'storage'}", *args[args.index("--") + 1:]]
    proc = subprocess.run(cmd, cwd=ROOT, env=env or ENV, capture_output=True, text=True, timeout=240, check=False)
    stored = sorted((tmp_path / "storage").rglob(RUN_GLOB))
    out = json.loads((tmp_path / "out.json").read_text()) if (tmp_path / "out.json").exists() else None
    return SimpleNamespace(proc=proc, out=out, stored=stored, log=proc.stdout[-4000:] + proc.stderr[-4000:])


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    # sdpa_math cannot express softcap: one skipped cell travels through the merge too.
    return _runner(tmp_path_factory.mktemp("run2"), "--workers-per-gpu", "2", "--",
                   "--attn-impl", "native,sdpa_math", "--attn-variant", "plain,softcap",
                   "--attn-seq-len", "196", "--attn-mode", "eager")


def test_two_workers_merge_into_one_run(two_workers):
    r = two_workers
    assert r.proc.returncode == 0, r.log
    assert "proves sharding and merging (correctness), not wall time" in r.proc.stdout
    suite = r.out["attn_suite"]
    timed = sorted(b["fullname"] for b in r.out["benchmarks"])
    assert timed == sorted(cell(n) for n in ("native-plain-196-eager", "native-softcap-196-eager",
                                             "sdpa_math-plain-196-eager"))
    assert [s["test"] for s in suite["skipped"]] == [cell("sdpa_math-softcap-196-eager")]
    assert suite["failed"] == []
    assert len(suite["shards"]) == 2 and all(s["exit_code"] == 0 and s["wall_s"] > 0 for s in suite["shards"])
    assigned = sorted(c for s in suite["shards"] for c in s["cells"])
    assert assigned == sorted([*timed, cell("sdpa_math-softcap-196-eager")])
    assert suite["wall_s"] >= max(s["wall_s"] for s in suite["shards"])
    assert set(suite["cell_wall_s"]) == {c for s in suite["shards"] for c in s["cells"]}
    assert suite["runner"]["workers_per_gpu"] == suite["workers_per_gpu"] == 2 and suite["profile"] == "smoke"
    assert suite["complete"] is True
    # a line per cell as it finished, counted over both workers
    found = re.findall(r"^\[(\d)/4\] test_train_step\[([\w-]+)\] (\w+) \d+\.\ds  elapsed \d+:\d\d  ETA \d+:\d\d$",
                       r.proc.stdout, re.M)
    assert sorted(found) == [(str(i), name, outcome) for i, (name, outcome) in enumerate(sorted(
        [("native-plain-196-eager", "passed"), ("native-softcap-196-eager", "passed"),
         ("sdpa_math-plain-196-eager", "passed"), ("sdpa_math-softcap-196-eager", "skipped")],
        key=lambda c: [n for _, n, _ in found].index(c[0])), 1)], r.proc.stdout
    assert "pytest-benchmark's own tools read it with: pytest-benchmark --storage " in r.proc.stdout
    # Inductor's caches persist in the storage folder, one folder per implementation inside
    cache = str(r.stored[0].parent.parent / "inductor-cache")
    assert suite["runner"]["inductor_cache"] == suite["inductor_cache"] == cache
    # saved where autosave puts runs (storage/<machine-id>/0001_...), identical to --json
    assert len(r.stored) == 1 and r.stored[0].name.startswith("0001_")
    assert json.loads(r.stored[0].read_text()) == r.out


def test_merged_run_reads_like_any_other(two_workers):
    stored = two_workers.stored[0]
    proc = run_module("attn_tools.report", stored)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "seq_len 196, eager (cpu)" in proc.stdout
    assert re.search(r"^ +1  sdpa_math cannot express variant 'softcap'", proc.stdout, re.M), proc.stdout
    assert "WARNING: r1 " in proc.stdout and "SHARED GPUS (2 workers per GPU" in proc.stdout
    proc = run_module("attn_tools.gate", "latest", stored.parent.parent)
    assert proc.stdout.strip() == str(stored), proc.stdout + proc.stderr


CRASH_PLUGIN = '''
import os, signal

def pytest_runtest_setup(item):
    if item.nodeid.endswith(os.environ["CRASH_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)
'''


def _runner_with_plugin(tmp_path, name: str, source: str, **env):
    """The runner over native's three seq-196 eager cells, its workers loading the pytest plugin
    `source` as `name`, with `env` added to their environment."""
    (tmp_path / f"{name}.py").write_text(source, encoding="utf-8")
    env = {**ENV, **env, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), ENV.get("PYTHONPATH")]))}
    return _runner(tmp_path, "--", "-p", name, "--attn-impl", "native", "--attn-seq-len", "196",
                   "--attn-mode", "eager", env=env)


def test_killed_worker_loses_only_its_running_cell(tmp_path):
    r = _runner_with_plugin(tmp_path, "crash_plugin", CRASH_PLUGIN, CRASH_AT="[native-softcap-196-eager]")
    assert r.proc.returncode == 1, r.log
    suite = r.out["attn_suite"]
    # plain finished before the kill (kept from the progress file), neighborhood ran in the restart
    assert sorted(b["fullname"] for b in r.out["benchmarks"]) == [cell("native-neighborhood-196-eager"),
                                                                 cell("native-plain-196-eager")]
    (failed,) = suite["failed"]
    assert failed["test"] == cell("native-softcap-196-eager") and failed["when"] == "crash"
    assert "killed by SIGKILL (exit code -9)" in failed["message"].splitlines()[0]
    first, again = suite["shards"]
    assert first["crashed"] and first["exit_code"] == -9 and first["from_progress_file"] and len(first["cells"]) == 3
    assert suite["complete"] is False
    assert re.search(r"^\[\d/3\] test_train_step\[native-softcap-196-eager\] crashed ", r.proc.stdout, re.M)
    assert again["restart_of"] == 0 and again["cells"] == [cell("native-neighborhood-196-eager")]
    assert again["exit_code"] == 0 and not again["crashed"]
    proc = run_module("attn_tools.report", r.stored[0])
    assert proc.returncode == 0 and "Failed tests (1):" in proc.stdout, proc.stdout + proc.stderr


INTERRUPT_PLUGIN = '''
import os, signal, time

def pytest_runtest_setup(item):
    if item.nodeid.endswith(os.environ["INTERRUPT_AT"]):
        os.kill(os.getppid(), signal.SIGINT)  # the runner: Ctrl-C, or `timeout -s INT` at a deadline
        time.sleep(120)  # the runner stops this worker long before
'''


def test_interrupted_run_keeps_the_finished_cells(tmp_path):
    r = _runner_with_plugin(tmp_path, "interrupt_plugin", INTERRUPT_PLUGIN, INTERRUPT_AT="[native-softcap-196-eager]")
    assert r.proc.returncode == 130, r.log
    assert "run interrupted: merging the cells that finished" in r.proc.stderr
    suite = r.out["attn_suite"]
    assert [b["fullname"] for b in r.out["benchmarks"]] == [cell("native-plain-196-eager")]
    running, unstarted = suite["failed"]
    assert running["test"] == cell("native-softcap-196-eager") and running["when"] == "interrupted"
    assert "stopped: the run was interrupted while this cell was running" in running["message"]
    assert unstarted["test"] == cell("native-neighborhood-196-eager") and unstarted["when"] == "not run"
    assert "never started: the run was interrupted" in unstarted["message"]
    (shard,) = suite["shards"]  # no restart after an interrupt
    assert shard["interrupted"] and suite["runner"]["interrupted"] and suite["complete"] is False
    assert len(r.stored) == 1 and json.loads(r.stored[0].read_text()) == r.out


WAIT_PLUGIN = '''
import os, time

def pytest_runtest_setup(item):
    if item.nodeid.endswith(os.environ["WAIT_AT"]):  # the worker is still running: the line must be out
        deadline = time.time() + 60
        while time.time() < deadline:
            with open(os.environ["RUNNER_OUT"]) as fh:
                if "] test_train_step[native-plain-196-eager] passed " in fh.read():
                    return
            time.sleep(0.2)
        raise AssertionError("the runner printed no line for a finished cell while its worker ran")
'''


def test_a_cells_line_is_printed_while_its_worker_runs(tmp_path):
    (tmp_path / "wait_plugin.py").write_text(WAIT_PLUGIN, encoding="utf-8")
    out = tmp_path / "runner.out"
    env = {**ENV, "WAIT_AT": "[native-softcap-196-eager]", "RUNNER_OUT": str(out),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), ENV.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "attn_tools.run", "--json", str(tmp_path / "out.json"), "--workdir",
           str(tmp_path / "work"), "--", f"--benchmark-storage=file://{tmp_path / 'storage'}", "-p", "wait_plugin",
           "--attn-impl", "native", "--attn-seq-len", "196", "--attn-mode", "eager", "--attn-variant", "plain,softcap"]
    with out.open("w") as fh:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, timeout=240, check=False)
    text = out.read_text()
    assert proc.returncode == 0, text[-4000:]
    assert text.index("[1/2] test_train_step[native-plain-196-eager] passed") < \
        text.index("[2/2] test_train_step[native-softcap-196-eager] passed") < text.index("worker 0 (CPU) done")
