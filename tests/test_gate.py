"""The regression gate: on real smoke-profile runs (rerun passes, slowdown fails, lost coverage, other
GPU refused, bad baseline files); its rule's error rates on simulated runs with known run-to-run
variances (issue 30); its policy (baselines, reruns, verdicts) on small synthetic runs."""
import copy
import json
import math
import os
import subprocess
import sys
import time
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
from benchruns import ENV, ROOT, run_module, run_suite

from attn_tools import gate, gate_policy, gate_rule
from attn_tools.runs import short_name

pytestmark = pytest.mark.suite

CELLS = ("--attn-variant", "plain", "--attn-seq-len", "196", "--attn-mode", "eager")
# Same-code medians of these ~30 ms CPU steps moved by up to ~60% between reruns while another
# test run shared the 2-core machine, so the CPU tests gate at 150%, and the injected
# slowdown is +500% (6x): it still fails unless the baseline run was itself >2.4x slower.
# (The H200 threshold comes from `python -m attn_tools.gate calibrate`, not from these numbers.)
CPU_THRESHOLD = "150"
SLOWDOWN = "5.0"


def _check(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("gate")
    # Autosaved runs keep their per-round times only with --benchmark-save-data; the rule needs them.
    storage = (f"--benchmark-storage=file://{d / 'storage'}", "--benchmark-save-data")
    base, same, slow = d / "base.json", d / "same.json", d / "slow.json"
    _check(run_suite(base, "--attn-impl", "native,sdpa_math", *CELLS, "--benchmark-autosave", *storage))
    # --benchmark-compare with a run of the same GPU model is accepted by the conftest hook.
    _check(run_suite(same, "--attn-impl", "native,sdpa_math", *CELLS, "--benchmark-autosave", *storage,
                     f"--benchmark-compare={base}"))
    # sdpa_math is left out on purpose: the gate must report it as lost coverage.
    _check(run_suite(slow, "--attn-impl", "native", *CELLS, "--attn-slowdown", SLOWDOWN))
    return SimpleNamespace(dir=d, storage=d / "storage", base=base, same=same, slow=slow)


def _edited(runs, name, edit):
    data = json.loads(runs.base.read_text())
    edit(data)
    path = runs.dir / name
    path.write_text(json.dumps(data))
    return path


def test_same_code_rerun_passes(runs):
    proc = run_module("attn_tools.gate", "compare", runs.base, runs.same, "--threshold", CPU_THRESHOLD)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "gate PASS" in proc.stdout
    assert "native-plain-196-eager" in proc.stdout and "sdpa_math-plain-196-eager" in proc.stdout


def test_storage_convenience_compares_the_two_newest(runs):
    proc = run_module("attn_tools.gate", "compare", "--storage", runs.storage, "--threshold", CPU_THRESHOLD)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0001_" in proc.stdout and "0002_" in proc.stdout
    latest = run_module("attn_tools.gate", "latest", runs.storage)
    assert "0002_" in latest.stdout


def test_injected_slowdown_fails(runs):
    slow = json.loads(runs.slow.read_text())["benchmarks"][0]
    assert slow["extra_info"]["injected_slowdown_ms"] > 0
    refused = run_module("attn_tools.gate", "compare", runs.base, runs.slow, "--threshold", CPU_THRESHOLD)
    assert refused.returncode == 2 and "slowdown: baseline 0.0, current 5.0" in refused.stderr
    proc = run_module("attn_tools.gate", "compare", runs.base, runs.slow, "--threshold", CPU_THRESHOLD,
                      "--allow-injected-slowdown")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = next(x for x in proc.stdout.splitlines() if "native-plain-196-eager" in x)
    assert line.startswith("REGRESSED") and " ms -> " in line and "95% interval" in line
    assert "gate FAIL" in proc.stdout


def test_missing_cell_is_lost_coverage(runs, tmp_path):
    markdown = tmp_path / "gate.md"
    proc = run_module("attn_tools.gate", "compare", runs.base, runs.slow, "--threshold", "1000",
                      "--markdown", markdown, "--allow-injected-slowdown")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = next(x for x in proc.stdout.splitlines() if "sdpa_math-plain-196-eager" in x)
    assert line.startswith("LOST") and "missing from the current run" in line
    assert "| LOST | `test_train_step[sdpa_math-plain-196-eager]` |" in markdown.read_text()


def test_skipped_cell_is_lost_coverage_with_its_reason(runs):
    baseline = json.loads(runs.base.read_text())
    current = copy.deepcopy(baseline)
    lost = current["benchmarks"].pop()
    current["attn_suite"]["skipped"].append({"test": lost["fullname"], "reason": "flash-attn not installed"})
    verdicts = {v.test: v for v in gate.compare(baseline, current, gate.Rule(1000))}
    assert verdicts[lost["fullname"]].status == "LOST"
    assert verdicts[lost["fullname"]].note == "skipped now: flash-attn not installed"


def test_other_gpu_model_is_refused(runs):
    other = _edited(runs, "h100.json", lambda d: d["machine_info"]["gpu"].update(gpu="NVIDIA H100 80GB HBM3"))
    proc = run_module("attn_tools.gate", "compare", other, runs.same)
    assert proc.returncode == 2
    assert "NVIDIA H100 80GB HBM3" in proc.stderr and "'cpu'" in proc.stderr and str(other) in proc.stderr


def test_runs_on_other_gpus_of_the_model_are_information_only(runs):
    def on(*uuids):
        def edit(data):
            data["machine_info"]["gpu"]["uuid"] = uuids[0]
            if len(uuids) > 1:  # a runner's run: one worker per GPU
                data["attn_suite"]["shards"] = [{"shard": i, "gpu_uuid": u} for i, u in enumerate(uuids)]
        return edit
    base = _edited(runs, "base-gpu-a.json", on("GPU-a"))
    for name, edit, other in [("same-gpu-a.json", on("GPU-a"), False), ("same-gpu-b.json", on("GPU-b"), True),
                              ("same-gpus-ab.json", on("GPU-a", "GPU-b"), True)]:
        markdown = runs.dir / f"{name}.md"
        proc = run_module("attn_tools.gate", "compare", base, _edited(runs, name, edit), "--threshold", CPU_THRESHOLD,
                          "--markdown", markdown)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert ("info: GPU: the runs timed on different GPUs" in proc.stdout) == other, (name, proc.stdout)
        assert ("GPU: the runs timed on different GPUs" in markdown.read_text()) == other, name
    assert "(GPU-a -> GPU-a, GPU-b)" in proc.stdout
    # runs that recorded no UUID (before it was recorded, or on the CPU) say nothing
    proc = run_module("attn_tools.gate", "compare", runs.base, base, "--threshold", CPU_THRESHOLD)
    assert "different GPUs" not in proc.stdout


def test_gpu_uuid_is_written_as_nvidia_smi_shows_it():
    from types import SimpleNamespace

    from attn_bench.envinfo import gpu_uuid

    class Uuid:  # torch's _CUuuid prints the bare UUID
        def __str__(self):
            return "58b2c1d0-0000-1111-2222-333344445555"

    assert gpu_uuid(SimpleNamespace(uuid=Uuid())) == "GPU-58b2c1d0-0000-1111-2222-333344445555"
    assert gpu_uuid(SimpleNamespace(uuid="GPU-1")) == "GPU-1"
    assert gpu_uuid(SimpleNamespace()) is None  # a torch that does not report it


def test_benchmark_compare_refuses_other_gpu_model(runs):
    other = _edited(runs, "h200.json", lambda d: d["machine_info"]["gpu"].update(gpu="NVIDIA H200"))
    proc = run_suite(runs.dir / "unused.json", "--attn-impl", "native", *CELLS, f"--benchmark-compare={other}")
    assert proc.returncode == 4, proc.stdout[-2000:] + proc.stderr[-2000:]
    message = proc.stdout + proc.stderr
    assert "'NVIDIA H200'" in message and "'cpu'" in message and str(other) in message
    assert "passed" not in message


def test_corrupted_baseline_is_a_clear_error(runs):
    truncated = runs.dir / "truncated.json"
    truncated.write_text(runs.base.read_text()[:500])
    proc = run_module("attn_tools.gate", "compare", truncated, runs.same)
    assert proc.returncode == 2
    assert str(truncated) in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# --- pure logic on small synthetic runs ---------------------------------------------
TEST = "tests/test_train_step.py::test_train_step[{}]"


def _run(times_s: dict, gpu="cpu", rounds=5, iterations=1, when="2026-12-01T10:00:00+00:00") -> dict:
    """A run whose cells have `rounds` per-round times: a float is a constant time, a list is used as is."""
    def bench(name, times):
        data = times if isinstance(times, list) else [times] * rounds
        return {"fullname": TEST.format(name), "name": f"test_train_step[{name}]",
                "stats": {"median": sorted(data)[len(data) // 2], "data": data, "iterations": iterations},
                "extra_info": {"steps_per_round": iterations, "mode": name.rsplit("-", 1)[-1]}}
    return {"machine_info": {"gpu": {"gpu": gpu}, "libraries": {}}, "datetime": when,
            "attn_suite": {"profile": "smoke", "rounds": rounds, "warmup": 1, "slowdown": 0.0,
                           "compile_scope": "block", "skipped": [], "failed": []},
            "benchmarks": [bench(n, t) for n, t in times_s.items()]}


def _save(path, run) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run))
    return str(path)


def _gate(capsys, *args) -> SimpleNamespace:
    """`python -m attn_tools.gate ARGS` in this process (faster than a subprocess)."""
    rc = gate.main([str(a) for a in args])
    out = capsys.readouterr()
    return SimpleNamespace(rc=rc, stdout=out.out, stderr=out.err)


def _noisy(median_s: float, rounds: int = 20, spread: float = 0.01) -> list[float]:
    """Evenly spread round times around `median_s` (+-spread/2), in a shuffled but fixed order."""
    steps = [median_s * (1 + spread * (i / (rounds - 1) - 0.5)) for i in range(rounds)]
    return steps[1::2] + steps[::2]


def test_failed_cell_is_lost_even_if_timed():
    base = _run({"a-plain-196-eager": 0.1})
    cur = _run({"a-plain-196-eager": 0.1})
    cur["attn_suite"]["failed"] = [{"test": TEST.format("a-plain-196-eager"), "when": "call",
                                    "message": "loss became NaN during timing\nmore"}]
    (verdict,) = gate.compare(base, cur)
    assert verdict.status == "LOST" and verdict.note == "failed now: loss became NaN during timing"


def test_cells_restricts_the_gate_to_a_subset():
    base = _run({"a-plain-196-eager": 0.100, "b-plain-196-eager": 0.100})
    cur = _run({"a-plain-196-eager": 0.101})
    assert [v.status for v in gate.compare(base, cur)] == ["ok", "LOST"]
    assert [v.status for v in gate.compare(base, cur, cells=r"\[a-")] == ["ok"]
    with pytest.raises(ValueError, match="regular expression"):
        gate.compare(base, cur, cells="[")


# --- issue 13's four faults ----------------------------------------------------------
def test_runs_are_ordered_by_recorded_date_across_machine_folders(tmp_path, capsys):
    """After a Python upgrade pytest-benchmark starts a new machine-id folder at 0001: its
    counter no longer orders the runs, their recorded dates do."""
    older = _save(tmp_path / "Linux-CPython-3.11-64bit" / "0007_older.json",
                  _run({"a-plain-196-eager": 0.100}, when="2026-11-01T10:00:00+00:00"))
    newer = _save(tmp_path / "Linux-CPython-3.12-64bit" / "0001_newer.json",
                  _run({"a-plain-196-eager": 0.200}, when="2026-11-02T10:00:00+00:00"))
    latest = _gate(capsys, "latest", tmp_path)
    assert latest.stdout.strip() == newer
    proc = _gate(capsys, "compare", "--storage", tmp_path)
    assert f"baseline {older} vs current {newer}" in proc.stdout
    assert proc.rc == 1 and "REGRESSED" in proc.stdout  # the newer run is the slower one
    _save(tmp_path / "Linux-CPython-3.12-64bit" / "0002_undated.json", {**_run({}), "datetime": None})
    proc = _gate(capsys, "latest", tmp_path)
    assert proc.rc == 2 and "0002_undated.json: no valid recorded date" in proc.stderr


def test_a_selection_that_matches_nothing_fails(tmp_path, capsys):
    base = _save(tmp_path / "base.json", _run({"a-plain-196-eager": 0.1}))
    cur = _save(tmp_path / "cur.json", _run({"a-plain-196-eager": 0.1}))
    proc = _gate(capsys, "compare", base, cur, "--cells", "fa4-.*-compiled")
    assert proc.rc == 2 and "--cells 'fa4-.*-compiled' matches no timed cell" in proc.stderr
    assert "PASS" not in proc.stdout
    empty = _save(tmp_path / "empty.json", _run({}))
    proc = _gate(capsys, "compare", empty, empty)
    assert proc.rc == 2 and "no timed cell" in proc.stderr


@pytest.mark.parametrize("setting, edit, values", [
    ("profile", lambda r: r["attn_suite"].update(profile="full"), "baseline 'smoke', current 'full'"),
    ("rounds", lambda r: r["attn_suite"].update(rounds=10), "baseline 5, current 10"),
    ("warmup", lambda r: r["attn_suite"].update(warmup=2), "baseline 1, current 2"),
    ("slowdown", lambda r: r["attn_suite"].update(slowdown=0.15), "baseline 0.0, current 0.15"),
    ("compile_scope", lambda r: r["attn_suite"].update(compile_scope="model"), "baseline 'block', current 'model'"),
    # per-cell settings are compared cell by cell and name the cell
    ("iterations of test_train_step[a-plain-196-compiled]", lambda r: r["benchmarks"][0]["stats"].update(iterations=3),
     "baseline 1, current 3"),
    ("steps_per_round of test_train_step[a-plain-196-compiled]",
     lambda r: r["benchmarks"][0]["extra_info"].update(steps_per_round=3), "baseline 1, current 3"),
])
def test_runs_with_different_settings_are_refused(tmp_path, capsys, setting, edit, values):
    base = _run({"a-plain-196-compiled": 0.1})
    cur = copy.deepcopy(base)
    edit(cur)
    base_path, cur_path = _save(tmp_path / "base.json", base), _save(tmp_path / "cur.json", cur)
    proc = _gate(capsys, "compare", base_path, cur_path)
    assert proc.rc == 2, proc.stdout
    assert f"{setting}: {values}" in proc.stderr and base_path in proc.stderr and cur_path in proc.stderr
    # Either way round: a slowed-down run is never accepted as the baseline.
    assert _gate(capsys, "compare", cur_path, base_path, "--allow-injected-slowdown").rc == 2


def test_compile_scope_is_compared_only_for_compiled_model_cells_and_defaults_to_block(tmp_path, capsys):
    eager = _run({"a-plain-196-eager": 0.1})
    eager_model = copy.deepcopy(eager)
    eager_model["attn_suite"]["compile_scope"] = "model"
    assert _gate(capsys, "compare", _save(tmp_path / "e1.json", eager),
                 _save(tmp_path / "e2.json", eager_model)).rc == 0
    before_the_option = _run({"a-plain-196-compiled": 0.1})
    del before_the_option["attn_suite"]["compile_scope"]
    now = _run({"a-plain-196-compiled": 0.1})
    now["attn_suite"]["compile_scope"] = "model"
    proc = _gate(capsys, "compare", _save(tmp_path / "old.json", before_the_option), _save(tmp_path / "now.json", now))
    assert proc.rc == 2 and "compile_scope: baseline 'block', current 'model'" in proc.stderr


def test_a_run_without_round_times_is_refused(tmp_path, capsys):
    base = _run({"a-plain-196-eager": 0.1})
    bare = copy.deepcopy(base)
    del bare["benchmarks"][0]["stats"]["data"]
    base_path, bare_path = _save(tmp_path / "base.json", base), _save(tmp_path / "bare.json", bare)
    proc = _gate(capsys, "compare", base_path, bare_path)
    assert proc.rc == 2 and bare_path in proc.stderr and "--benchmark-save-data" in proc.stderr


def test_rerun_arguments_select_exactly_the_cells():
    cells = [TEST.format("native-plain-196-eager"), TEST.format("sdpa_math-plain-3136-compiled")]
    args = gate.rerun_pytest_args(cells, {"profile": "smoke", "rounds": 3, "warmup": 1, "compile_scope": "model"})
    assert args[args.index("--attn-compile-scope") + 1] == "model"
    proc = subprocess.run([sys.executable, "-m", "pytest", *args, "--collect-only", "-q", "-p", "no:cacheprovider"],
                          check=False, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    collected = [line for line in proc.stdout.splitlines() if "::test_train_step[" in line]
    assert collected == cells, proc.stdout + proc.stderr


def test_interrupted_run_keeps_the_cells_that_finished(tmp_path):
    """Ctrl-C after the first cell: that cell is still saved in storage."""
    (tmp_path / "interrupt_after_first_cell.py").write_text(
        "def pytest_runtest_logfinish(nodeid, location):\n    raise KeyboardInterrupt\n")
    storage = tmp_path / "storage"
    cmd = [sys.executable, "-m", "pytest", "tests/test_train_step.py", "-p", "no:cacheprovider",
           "-p", "interrupt_after_first_cell", "--attn-impl", "native,sdpa_math", *CELLS,
           "--attn-rounds", "2", "--benchmark-autosave", f"--benchmark-storage=file://{storage}"]
    env = {**ENV, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ENV.get('PYTHONPATH', '')}"}
    proc = subprocess.run(cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "KeyboardInterrupt" in proc.stdout, proc.stdout[-2000:]
    (saved,) = storage.rglob("*.json")
    names = [b["name"] for b in json.loads(saved.read_text())["benchmarks"]]
    assert names == ["test_train_step[native-plain-196-eager]"]


def test_cell_params_reads_every_matrix_test_id():
    from attn_tools.runs import cell_params
    assert cell_params("tests/test_train_step.py::test_train_step[sdpa_cudnn-plain-196-eager]") == {
        "impl": "sdpa_cudnn", "variant": "plain", "seq_len": 196, "mode": "eager"}
    assert cell_params("test_infer_step[fa3-softcap-3136-compiled]")["impl"] == "fa3"
    assert cell_params("tests/test_attention.py::test_attention[te_flash-plain-3136-eager-fwd_bwd]") == {
        "impl": "te_flash", "variant": "plain", "seq_len": 3136, "mode": "eager", "direction": "fwd_bwd"}
    assert cell_params("test_varlen_train_step[flex-eager]") is None


def test_rerun_of_attention_cells_names_their_direction():
    tests = ["tests/test_attention.py::test_attention[flex-plain-196-eager-fwd]"]
    args = gate.rerun_pytest_args(tests, {"profile": "smoke"})
    assert args[args.index("--attn-direction") + 1] == "fwd" and args[args.index("--attn-impl") + 1] == "flex"


def _busy(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_injected_slowdown_is_sized_by_measurement():
    """A stand-in of a device that idles 2 ms per call waiting for launches: injected work up to
    2 ms hides in that gap, so work sized from the target alone (1.5 ms) would show none. The
    injection is re-sized until the measured slowdown is the target."""
    from attn_bench.timer import slowed_down
    last = [time.perf_counter()]

    def step():  # 2 ms of work after an idle gap of 2 ms that earlier work can fill
        _busy(max(0.0, 0.002 - (time.perf_counter() - last[0])))
        _busy(0.002)
        last[0] = time.perf_counter()

    slow, info = slowed_down(step, 1, 0.5, "cpu")
    # back to back, a call fills its 2 ms gap and works 2 ms; a loaded host can only make it slower
    assert info["injected_base_ms"] >= 3.6
    assert info["injected_slowdown_ms"] == pytest.approx(0.5 * info["injected_base_ms"])
    assert info["injected_measured_ms"] == pytest.approx(info["injected_slowdown_ms"], rel=0.1)


def test_rerun_of_changing_lengths_varlen_cells_asks_for_changing_lengths():
    cells = ["tests/test_varlen_train_step.py::test_varlen_train_step[sdpa_dense_math-eager-changing]"]
    args = gate.rerun_pytest_args(cells, {"profile": "smoke", "rounds": 3, "warmup": 1})
    assert args[args.index("--attn-varlen-lengths") + 1] == "changing"
    proc = subprocess.run([sys.executable, "-m", "pytest", *args, "--collect-only", "-q", "-p", "no:cacheprovider"],
                          check=False, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    collected = [line for line in proc.stdout.splitlines() if "::test_varlen_train_step[" in line]
    assert collected == cells, proc.stdout + proc.stderr
    assert "--attn-varlen-lengths" not in gate.rerun_pytest_args([cells[0].replace("-changing", "")], {})




# --- the rule's error rates on simulated runs with known run-to-run variances (issue 30) ------------

MATRIX = [f"c{i:03d}-plain-196-eager" for i in range(124)]
# Known truth: each cell's run-to-run sd of log(median) (0.2-0.8 %, as measured on the H200), a
# machine shift shared by all cells of a run (sd 1 %: another process state or another H200), and
# rounds that vary far less than processes do (0.2 %), which a within-run rule mistakes for precision.
CELL_SD = {cell: 0.002 + 0.003 * (i % 7) / 6 for i, cell in enumerate(MATRIX)}
SHIFT_SD = 0.01
# One machine, back to back (the H200's w-warm pair: 0.06 %); the detection tests use it. Against a
# baseline from another state (SHIFT_SD) a 3 % slowdown hides behind a faster machine a quarter of
# the time: `calibrate` gives that probability.
SAME_MACHINE_SD = 0.003
ROUND_SD = 0.002


def _sim_run(rng, cells, shift, slowdown_pct=0.0, commit="new", rounds=10):
    """A run of `cells` with log(median) = log(0.1 s) + shift + N(0, CELL_SD) + the slowdown."""
    times = {}
    for cell in cells:
        y = math.log(0.1) + shift + rng.normal(0, CELL_SD[cell]) + math.log1p(slowdown_pct / 100)
        times[cell] = list(math.exp(y) * (1 + rng.normal(0, ROUND_SD, rounds)))
    run = _run(times, rounds=rounds)
    run["commit_info"] = {"id": commit}
    return run


@pytest.fixture(scope="module")
def history():
    """The history the rule estimates its variances from: 4 same-code runs, each in its own machine state."""
    rng = np.random.default_rng(1)
    return gate_rule.history_variances([[_sim_run(rng, MATRIX, rng.normal(0, SHIFT_SD), commit="h")
                                         for _ in range(4)]])


def _simulated_gate(rng, variances, rule=gate_rule.DEFAULT_RULE, slowdown_pct=0.0, shift_sd=SHIFT_SD):
    """One full gate of a 124-cell run: against a stored baseline, then, if asked, the ABBA confirmation
    of the cells it names (both codes rerun in one machine state)."""
    base = _sim_run(rng, MATRIX, rng.normal(0, shift_sd))
    cur = _sim_run(rng, MATRIX, rng.normal(0, shift_sd), slowdown_pct)
    first = gate.compare(base, cur, rule, variances=variances)
    again = [short_name(t).removeprefix("test_train_step[").removesuffix("]")
             for t in gate.rerun_cells({"baseline": first})]
    if not again:
        return first
    state = rng.normal(0, SHIFT_SD)
    a1, b1, b2, a2 = (_sim_run(rng, again, state, slowdown_pct if who == "A" else 0.0) for who in "ABBA")
    return gate.confirm(first, [base], [a1, a2], [b1, b2], rule, variances)


def _binomial_quantile(n: int, p: float, q: float = 0.99) -> int:
    """The smallest k with P(Binomial(n, p) <= k) >= q: a count above it is evidence that the rate exceeds p."""
    total = 0.0
    for k in range(n + 1):
        total += math.comb(n, k) * p ** k * (1 - p) ** (n - k)
        if total >= q:
            return k
    return n


def test_false_alarms_per_124_cell_run_are_at_most_5_percent(history):
    """Same code, the default rule and policy (unsure fails): a run fails no more often than 5 %,
    within simulation error (the count must not exceed the binomial 99 % quantile at 5 %)."""
    rng = np.random.default_rng(2)
    runs = 60
    failed = sum(_simulated_gate(rng, history).failed() for _ in range(runs))
    assert failed <= _binomial_quantile(runs, 0.05), failed


def test_holm_bounds_the_family_wise_error_without_a_threshold(history):
    """At threshold 0 the threshold no longer shields the rule: only the correction and honest
    (process-level) variances keep false REGRESSED cells to <= 5 % of runs."""
    rng = np.random.default_rng(3)
    rule = gate_rule.Rule(threshold_pct=0.0)
    runs = 60
    flagged = sum(any(v.status == "REGRESSED" for v in _simulated_gate(rng, history, rule)) for _ in range(runs))
    assert flagged <= _binomial_quantile(runs, 0.05), flagged


def test_a_5_percent_slowdown_fails_every_cell_after_confirmation(history):
    rng = np.random.default_rng(4)
    for _ in range(5):
        final = _simulated_gate(rng, history, slowdown_pct=5.0, shift_sd=SAME_MACHINE_SD)
        statuses = Counter(v.status for v in final)
        assert set(statuses) <= {"REGRESSED", "unsure"}, statuses
        assert statuses["REGRESSED"] >= 0.9 * len(MATRIX), statuses
        assert all(v.stage == "abba" for v in final)


def test_a_3_percent_uniform_slowdown_fails_the_run_as_a_common_shift(history):
    rng = np.random.default_rng(5)
    for _ in range(5):
        final = _simulated_gate(rng, history, slowdown_pct=3.0, shift_sd=SAME_MACHINE_SD)
        assert final.failed() and final.shift.status == "REGRESSED", (final.shift, Counter(v.status for v in final))
        assert final.shift.change_pct == pytest.approx(3.0, abs=0.5)


def test_a_machine_shift_is_information_not_a_regression(history):
    """The current run's machine is 2.5 % slower than the stored baseline's; the code is the same.
    Against the stored baseline the whole run moved (yet some cells stay under the threshold: every
    cell is confirmed all the same); in the ABBA reruns nothing moved: the machine."""
    rng = np.random.default_rng(6)
    base = _sim_run(rng, MATRIX, 0.0)
    cur = _sim_run(rng, MATRIX, math.log(1.025))
    first = gate.compare(base, cur, variances=history)
    assert first.shift.status == "shifted" and first.failed()
    assert sum(v.status == "ok" for v in first) > 10
    again = [short_name(t)[len("test_train_step["):-1] for t in gate.rerun_cells({"baseline": first})]
    assert len(again) == len(MATRIX)
    a1, b1, b2, a2 = (_sim_run(rng, again, math.log(1.025)) for _ in "ABBA")
    final = gate.confirm(first, [base], [a1, a2], [b1, b2], variances=history)
    assert final.shift.status == "machine" and not final.failed(), final.shift
    assert "the baseline's own rerun moved +2." in final.shift.note


def test_error_rates_from_variances():
    """`calibrate`'s arithmetic: same code fails rarely, a 5 % slowdown almost always (it hides only
    behind a machine shift of -3 %: z = 2.1 at a shift sd of 1.4 % between two runs); more variance,
    more alarms."""
    quiet = gate_rule.error_rates([0.003 ** 2] * 10, 0.01 ** 2)
    noisy = gate_rule.error_rates([0.015 ** 2] * 10, 0.01 ** 2)
    slow = gate_rule.error_rates([0.003 ** 2] * 10, 0.01 ** 2, slowdown_pct=5.0)
    assert quiet["fail"] < 1e-4 < noisy["fail"] and slow["cell_fail"] > 0.95 and slow["fail"] > 0.99
    assert 0 < quiet["cells_to_confirm"] < 124


def test_holm_and_benjamini_hochberg():
    p = [0.001, 0.011, 0.02, 0.04, 0.9]
    assert gate_rule.reject(p, gate_rule.Rule()) == [True, True, False, False, False]
    assert gate_rule.reject(p, gate_rule.Rule(correction="bh")) == [True, True, True, True, False]
    with pytest.raises(ValueError, match="holm, bh"):
        gate_rule.Rule(correction="none")


def test_history_variances_take_out_each_runs_shift():
    """Two cells, three runs of one code: a run 5 % slower in both cells is a shift, not cell noise."""
    runs = [_run({"a-plain-196-eager": 0.100 * f, "b-plain-196-eager": 0.200 * f}) for f in (1.0, 1.05, 1.0)]
    for run in runs:
        run["commit_info"] = {"id": "x"}
    v = gate_rule.history_variances(gate_policy.code_groups(runs))
    assert v.cell(TEST.format("a-plain-196-eager"))[0] == pytest.approx(0.0, abs=1e-12)
    assert v.shift[0] == pytest.approx(np.var([0, math.log(1.05), 0], ddof=0) * 3 / 2, rel=1e-6)


# --- the policy (issue 30, part 3) ------------------------------------------------------------------
def _two(tmp_path, base_times, cur_times, **edits):
    base, cur = _run(base_times), _run(cur_times, when="2026-12-01T11:00:00+00:00")
    for key, value in edits.items():
        cur["attn_suite"][key] = value
    return _save(tmp_path / "base.json", base), _save(tmp_path / "cur.json", cur)


def test_unsure_after_confirmation_fails_unless_allowed(tmp_path, capsys):
    cell = "a-plain-196-eager"
    # +2.9 %, measured again in the ABBA reruns: p 0.04, significant before the correction only; the
    # other cell did not move, so the run's common shift (+1.4 %) is ok.
    same = "b-plain-196-eager"
    base, cur = _two(tmp_path, {cell: 0.100, same: 0.1}, {cell: 0.1029, same: 0.1})
    first = _gate(capsys, "compare", base, cur)
    assert first.rc == 1 and "unsure" in first.stdout and "confirm" in first.stdout
    reruns = {name: _save(tmp_path / f"{name}.json", _run({cell: t}, when=f"2026-12-01T12:0{i}:00+00:00"))
              for i, (name, t) in enumerate((("a1", 0.1029), ("b1", 0.1), ("b2", 0.1), ("a2", 0.1029)))}
    args = ("compare", base, cur, reruns["a1"], reruns["a2"], "--baseline-rerun", reruns["b1"], reruns["b2"])
    proc = _gate(capsys, *args)
    assert proc.rc == 1 and "unsure    test_train_step[a-" in proc.stdout and "abba" in proc.stdout, proc.stdout
    assert "common shift ok" in proc.stdout
    assert _gate(capsys, *args, "--allow-unsure").rc == 0


def test_confirmation_reruns_must_be_interleaved_abba(tmp_path, capsys):
    cell = "a-plain-196-eager"
    base, cur = _two(tmp_path, {cell: 0.100}, {cell: 0.110})
    dated = {name: _save(tmp_path / f"{name}.json", _run({cell: 0.1}, when=f"2026-12-01T12:0{i}:00+00:00"))
             for i, name in enumerate(("r0", "r1", "r2", "r3"))}
    baseline_first = _gate(capsys, "compare", base, cur, dated["r2"], dated["r3"], "--baseline-rerun", dated["r0"],
                           dated["r1"])
    assert baseline_first.rc == 2 and "order BBAA" in baseline_first.stderr and "A B B A" in baseline_first.stderr
    abba = _gate(capsys, "compare", base, cur, dated["r0"], dated["r3"], "--baseline-rerun", dated["r1"], dated["r2"])
    assert abba.rc == 0, abba.stdout + abba.stderr


def test_a_missing_baseline_is_an_error_unless_none_is_expected(tmp_path, capsys):
    cur = _save(tmp_path / "cur.json", _run({"a-plain-196-eager": 0.1}))
    proc = _gate(capsys, "compare", tmp_path / "absent.json", cur)
    assert proc.rc == 2 and "absent.json" in proc.stderr
    assert _gate(capsys, "compare", tmp_path / "absent.json", cur, "--no-baseline-ok").rc == 0
    empty = tmp_path / "empty"
    proc = _gate(capsys, "compare", "--storage", empty, cur)
    assert proc.rc == 2 and "no eligible baseline" in proc.stderr
    assert _gate(capsys, "compare", "--storage", empty, cur, "--no-baseline-ok").rc == 0


def test_a_cell_that_fails_now_fails_the_gate_even_if_the_baseline_lacks_it(tmp_path):
    base = _run({"a-plain-196-eager": 0.1})
    cur = _run({"a-plain-196-eager": 0.1})
    cur["attn_suite"]["failed"] = [{"test": TEST.format("b-plain-196-eager"), "when": "call", "error": "OOM"}]
    verdicts = {v.test: v for v in gate.compare(base, cur)}
    assert verdicts[TEST.format("b-plain-196-eager")].status == "FAILED"
    assert verdicts[TEST.format("b-plain-196-eager")].failed()


def test_a_lost_cell_stays_lost_when_a_rerun_times_it(tmp_path):
    base = _run({"a-plain-196-eager": 0.1, "b-plain-196-eager": 0.1})
    cur = _run({"a-plain-196-eager": 0.1})
    rerun = _run({"a-plain-196-eager": 0.1, "b-plain-196-eager": 0.1})
    statuses = {short_name(v.test): v.status for v in gate.compare(base, [cur, rerun])}
    assert statuses["test_train_step[b-plain-196-eager]"] == "LOST"


def test_a_selection_of_only_new_cells_fails(tmp_path, capsys):
    base, cur = _two(tmp_path, {"a-plain-196-eager": 0.1}, {"a-plain-196-eager": 0.1, "new-plain-196-eager": 0.1})
    proc = _gate(capsys, "compare", base, cur, "--cells", "new-")
    assert proc.rc == 2 and "matches only cells the baseline lacks" in proc.stderr and "PASS" not in proc.stdout


def _stored(folder, i, factor=1.0, **suite):
    run = _run({"a-plain-196-eager": 0.1 * factor}, when=f"2026-12-0{i}T10:00:00+00:00")
    run["attn_suite"].update(suite)
    run["commit_info"] = {"id": f"c{i}"}
    return _save(folder / "Linux-CPython-3.11-64bit" / f"000{i}_run.json", run)


def test_the_rolling_baseline_is_the_median_of_eligible_runs(tmp_path, capsys):
    """Runs 1-5 stored: an odd slow run (3), an incomplete one (4, faster) and a shared-GPU one (5,
    faster) never count; the baseline is the median of 1, 2, 3 = run 1's or 2's time, not run 3's."""
    store = tmp_path / "store"
    _stored(store, 1), _stored(store, 2), _stored(store, 3, 1.10)
    _stored(store, 4, 0.8, complete=False)
    _stored(store, 5, 0.8, workers_per_gpu=2)
    current = _stored(store, 6, 1.0)
    found = gate_policy.rolling_baseline(store, gate.load_run(current), current, count=5)
    assert [p.name[:4] for p, _ in found] == ["0001", "0002", "0003"]
    proc = _gate(capsys, "compare", "--storage", store, "--json", tmp_path / "v.json")
    assert proc.rc == 0, proc.stdout + proc.stderr
    (cell,) = json.loads((tmp_path / "v.json").read_text())["comparisons"]["baseline"]
    assert cell["baseline_ms"] == pytest.approx(100.0) and cell["decision"] == "ok"
    assert "0004_" not in proc.stdout and "0005_" not in proc.stdout


def test_pin_writes_the_reference_and_refuses_a_run_that_cannot_be_one(tmp_path, capsys, monkeypatch):
    run = _run({"a-plain-196-eager": 0.1}, gpu="NVIDIA H200")
    run["machine_info"]["gpu"]["gpu_slug"] = "nvidia-h200"
    path = _save(tmp_path / "run.json", run)
    monkeypatch.chdir(tmp_path)
    assert _gate(capsys, "pin", path).rc == 0
    assert json.loads((tmp_path / "results" / "nvidia-h200" / "reference.json").read_text()) == run
    run["attn_suite"]["workers_per_gpu"] = 2
    proc = _gate(capsys, "pin", _save(tmp_path / "shared.json", run))
    assert proc.rc == 2 and "shared GPU (2 workers per GPU)" in proc.stderr


@pytest.mark.parametrize("edit, reason", [
    (lambda r: r["attn_suite"].update(workers_per_gpu=2), "workers_per_gpu: baseline 1, current 2"),
    (lambda r: r["attn_suite"].update(bare_loop=True), "bare_loop: baseline False, current True"),
    (lambda r: r["attn_suite"].update(study=True), "study: baseline False, current True"),
    (lambda r: r["machine_info"]["libraries"].update(torch="2.12.0"), "software torch: baseline '2.11.0'"),
    (lambda r: r["machine_info"]["gpu"].update(cudnn=91901), "software cudnn: baseline 91900, current 91901"),
])
def test_comparable_covers_workers_bare_loop_study_and_software(edit, reason):
    base = _run({"a-plain-196-eager": 0.1})
    base["machine_info"]["libraries"]["torch"] = "2.11.0"
    base["machine_info"]["gpu"]["cudnn"] = 91900
    cur = copy.deepcopy(base)
    edit(cur)
    assert any(r.startswith(reason) for r in gate.comparable(base, cur)), gate.comparable(base, cur)
    if reason.startswith("software"):
        assert gate.comparable(base, cur, allow_software_change=True) == []


def test_pytest_ini_does_not_autosave_every_run():
    addopts = next(line for line in (ROOT / "pytest.ini").read_text().splitlines() if line.startswith("addopts"))
    assert "--benchmark-autosave" not in addopts and "--benchmark-save-data" in addopts
