"""The regression gate on real smoke-profile runs (rerun passes, slowdown fails, lost coverage,
other GPU refused, bad baseline files), its statistical rule on the H200 runs in results/h200/2026-11-30/,
and the faults of issue 13 (run order, empty selection, unlike settings, reference baseline)."""
import copy
import itertools
import json
import os
import subprocess
import sys
import time
from collections import Counter
from types import SimpleNamespace

import pytest
from benchruns import ENV, ROOT, run_module, run_suite

from attn_tools import gate

pytestmark = pytest.mark.suite

CELLS = ("--attn-variant", "plain", "--attn-seq-len", "196", "--attn-mode", "eager")
# Same-code medians of these ~30 ms CPU steps moved by up to ~60% between reruns while another
# test session shared the 2-core machine, so the CPU tests gate at 150%, and the injected
# slowdown is +500% (6x): it still fails unless the baseline run was itself >2.4x slower.
# (The H200 threshold comes from `python -m attn_tools.gate calibrate`, not from these numbers.)
CPU_THRESHOLD = "150"
SLOWDOWN = "5.0"
H200 = ROOT / "results" / "h200" / "2026-11-30"


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
    assert line.startswith("REGRESSED") and " ms -> " in line and f"threshold {CPU_THRESHOLD}%" in line
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


def test_software_differences_are_information_only(runs):
    older = _edited(runs, "old-torch.json", lambda d: d["machine_info"]["libraries"].update(torch="2.5.0"))
    proc = run_module("attn_tools.gate", "compare", older, runs.same, "--threshold", CPU_THRESHOLD)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "info: software differs: torch: 2.5.0 -> " in proc.stdout


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


def test_no_baseline_passes_and_says_so(runs, tmp_path):
    proc = run_module("attn_tools.gate", "compare", tmp_path / "absent.json", runs.same)
    assert proc.returncode == 0 and "no baseline" in proc.stdout
    proc = run_module("attn_tools.gate", "compare", "--storage", tmp_path / "empty")
    assert proc.returncode == 0 and "no baseline" in proc.stdout


def test_spread_suggests_a_threshold(runs, tmp_path):
    markdown = tmp_path / "spread.md"
    proc = run_module("attn_tools.gate", "spread", runs.base, runs.same, "--markdown", markdown)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "spread" in proc.stdout and "suggested threshold" in proc.stdout
    assert "| `test_train_step[native-plain-196-eager]` |" in markdown.read_text()


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


def test_threshold_arithmetic():
    """With constant rounds the interval is the point: the rule reduces to the old threshold."""
    base = _run({"a-plain-196-eager": 0.100, "b-plain-196-eager": 0.100, "c-plain-196-eager": 0.100})
    cur = _run({"a-plain-196-eager": 0.105, "b-plain-196-eager": 0.1051, "c-plain-196-eager": 0.090})
    verdicts = gate.compare(base, cur, gate.Rule(5.0))
    status = {v.test.split("[")[1][0]: v.status for v in verdicts}
    assert status == {"a": "ok", "b": "REGRESSED", "c": "faster"}
    assert verdicts[1].interval_pct == pytest.approx((5.1, 5.1))
    assert gate.change_pct(10.0, 15.0) == pytest.approx(50.0)
    with pytest.raises(ValueError, match="threshold"):
        gate.Rule(-1)
    with pytest.raises(ValueError, match="confidence"):
        gate.Rule(confidence=95)


def test_decision_needs_the_whole_interval_above_the_threshold():
    assert gate.decide(1.05, (1.021, 1.08), 2.0) == "REGRESSED"
    assert gate.decide(1.05, (1.019, 1.08), 2.0) == "unsure"  # looks slow: a confirmation rerun decides
    assert gate.decide(1.01, (0.99, 1.03), 2.0) == "ok"
    assert gate.decide(0.95, (0.94, 0.97), 2.0) == "faster"


def test_bootstrap_interval_is_reproducible_and_brackets_the_ratio():
    base, cur = _noisy(0.100, spread=0.04), _noisy(0.103, spread=0.04)
    low, high = gate.ratio_interval([base], [cur])
    assert (low, high) == gate.ratio_interval([base], [cur])  # fixed seed
    assert low < 1.03 < high and high - low > 0.01
    narrow = gate.ratio_interval([base], [cur], gate.Rule(confidence=0.5))
    assert low < narrow[0] < narrow[1] < high


def test_rule_uses_the_rounds_each_run_recorded():
    """10 rounds of 3 steps (the current suite) and 20 of 1 (the H200 runs of 2026-11-30) both work;
    a slowdown well beyond the rounds' spread is flagged, the same times are not."""
    for rounds, steps in ((10, 3), (20, 1)):
        base = _run({"a-plain-196-eager": _noisy(0.100, rounds)}, rounds=rounds, iterations=steps)
        same = _run({"a-plain-196-eager": _noisy(0.1005, rounds)}, rounds=rounds, iterations=steps)
        slow = _run({"a-plain-196-eager": _noisy(0.105, rounds)}, rounds=rounds, iterations=steps)
        assert [v.status for v in gate.compare(base, same)] == ["ok"]
        assert [v.status for v in gate.compare(base, slow)] == ["REGRESSED"]


def test_several_current_runs_are_pooled():
    base = _run({"a-plain-196-eager": _noisy(0.100)})
    first = _run({"a-plain-196-eager": _noisy(0.104, spread=0.10), "b-plain-196-eager": 0.1})
    rerun = _run({"a-plain-196-eager": _noisy(0.100, spread=0.10)})
    (alone,) = [v for v in gate.compare(base, first) if "[a-" in v.test]
    (pooled,) = gate.compare(base, [first, rerun], cells=r"\[a-")
    assert alone.status == "unsure" and pooled.status == "ok"
    assert pooled.note == "2 current runs pooled"
    assert pooled.current_ms == pytest.approx(102.0, rel=0.01)  # the median of both runs' rounds


def test_failed_cell_is_lost_even_if_timed():
    base = _run({"a-plain-196-eager": 0.1})
    cur = _run({"a-plain-196-eager": 0.1})
    cur["attn_suite"]["failed"] = [{"test": TEST.format("a-plain-196-eager"), "when": "call",
                                    "message": "loss became NaN during timing\nmore"}]
    (verdict,) = gate.compare(base, cur)
    assert verdict.status == "LOST" and verdict.note == "failed now: loss became NaN during timing"


def test_suggested_threshold_rule():
    """`spread`'s fixed-percentage rule (for pytest-benchmark's --benchmark-compare-fail)."""
    assert gate.MIN_THRESHOLD_PCT == 5.0
    assert gate.suggested_threshold(1.3) == 5
    assert gate.suggested_threshold(3.53) == 8  # the H200 runs of 2026-11-30
    assert gate.suggested_threshold(3.2) == 7
    spreads = gate.spreads([_run({"a-plain-196-eager": 0.100}), _run({"a-plain-196-eager": 0.102})])
    assert spreads[TEST.format("a-plain-196-eager")][1] == pytest.approx(2.0)
    with pytest.raises(ValueError):
        gate.spreads([_run({})])


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
    ("iterations", lambda r: r["benchmarks"][0]["stats"].update(iterations=3), "baseline 1, current 3"),
    ("steps_per_round", lambda r: r["benchmarks"][0]["extra_info"].update(steps_per_round=3),
     "baseline 1, current 3"),
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


def test_a_baseline_rerun_corrects_a_baseline_measured_in_a_slower_state(tmp_path, capsys):
    """As on the H200 (results/h200/gate, fourth session): the baseline process ran 2 % slower
    than the machine's state when the current run was measured, so a real 5 % slowdown showed as
    +3 % and the current-side rerun could not fix it. With the baseline's code rerun next to the
    current rerun, the cells both reran are judged on those interleaved reruns alone: the
    slowdown is measured whole, and good code passes."""
    cell = "a-plain-196-compiled"
    slow_state_baseline = _run({cell: _noisy(0.102, 10, 0.06)}, rounds=10)
    regressed = _run({cell: _noisy(0.105, 10, 0.01)}, rounds=10)
    base = _save(tmp_path / "base.json", slow_state_baseline)
    cur = _save(tmp_path / "cur.json", regressed)
    cur_rerun = _save(tmp_path / "cur-rerun.json", regressed)
    first = _gate(capsys, "compare", base, cur, cur_rerun)
    assert first.rc == 0 and "unsure" in first.stdout, first.stdout
    base_reruns = [_save(tmp_path / f"base-rerun-{i}.json", _run({cell: _noisy(0.100, 10, 0.01)}, rounds=10))
                   for i in (1, 2)]
    proc = _gate(capsys, "compare", base, cur, cur_rerun, "--baseline-rerun", *base_reruns,
                 "--json", tmp_path / "gate.json")
    assert proc.rc == 1 and "REGRESSED" in proc.stdout, proc.stdout
    assert "(+5.0%," in proc.stdout and "judged on the interleaved reruns; 2 baseline runs pooled" in proc.stdout
    assert json.loads((tmp_path / "gate.json").read_text())["files"]["baseline_reruns"].count("base-rerun") == 2

    good = _save(tmp_path / "good.json", _run({cell: _noisy(0.100, 10, 0.01)}, rounds=10))
    proc = _gate(capsys, "compare", base, good, good, "--baseline-rerun", *base_reruns)
    assert proc.rc == 0 and "REGRESSED" not in proc.stdout and "unsure" not in proc.stdout, proc.stdout
    # A current run that looked slow only because of its own state passes on the interleaved reruns.
    proc = _gate(capsys, "compare", base, cur, good, "--baseline-rerun", *base_reruns)
    assert proc.rc == 0 and "ok " in proc.stdout, proc.stdout
    proc = _gate(capsys, "compare", base, cur, "--baseline-rerun", *base_reruns)
    assert proc.rc == 2 and "needs the current code's rerun too" in proc.stderr

    slowed = _run({cell: _noisy(0.100, 10, 0.01)}, rounds=10)
    slowed["attn_suite"]["slowdown"] = 0.05
    proc = _gate(capsys, "compare", base, good, good, "--baseline-rerun", _save(tmp_path / "slowed.json", slowed))
    assert proc.rc == 2 and "slowdown: baseline 0.0, current 0.05" in proc.stderr
    proc = _gate(capsys, "compare", "--storage", tmp_path / "none", "--baseline-rerun", base_reruns[0])
    assert proc.rc == 2 and "--baseline-rerun needs a BASELINE file" in proc.stderr


def test_a_run_without_round_times_is_refused(tmp_path, capsys):
    base = _run({"a-plain-196-eager": 0.1})
    bare = copy.deepcopy(base)
    del bare["benchmarks"][0]["stats"]["data"]
    base_path, bare_path = _save(tmp_path / "base.json", base), _save(tmp_path / "bare.json", bare)
    proc = _gate(capsys, "compare", base_path, bare_path)
    assert proc.rc == 2 and bare_path in proc.stderr and "--benchmark-save-data" in proc.stderr


def test_reference_catches_drift_the_rolling_baseline_lets_by(tmp_path, capsys):
    """Four runs, each 0.8 % slower than the one before: every rolling step passes the 2 %
    threshold, the pinned reference fails the last one (+2.4 %)."""
    times = [0.100 * 1.008 ** i for i in range(4)]
    paths = [_save(tmp_path / f"run{i}.json", _run({"a-plain-196-eager": t})) for i, t in enumerate(times)]
    for previous, current in itertools.pairwise(paths[:3]):
        assert _gate(capsys, "compare", previous, current, "--reference", paths[0]).rc == 0
    verdict = tmp_path / "verdict.json"
    proc = _gate(capsys, "compare", paths[2], paths[3], "--reference", paths[0], "--json", verdict)
    assert proc.rc == 1, proc.stdout
    assert "1 ok against the baseline; 1 regressed against the reference" in proc.stdout
    result = json.loads(verdict.read_text())
    assert result["verdict"] == "fail" and result["flagged"] == 1 and result["files"]["reference"] == paths[0]
    assert [c["decision"] for c in result["comparisons"]["reference"]] == ["REGRESSED"]
    missing = _gate(capsys, "compare", paths[2], paths[3], "--reference", tmp_path / "absent.json")
    assert missing.rc == 2 and "absent.json" in missing.stderr


# --- the verdict as JSON, and the confirmation rerun ---------------------------------------
def test_json_verdict(tmp_path, capsys):
    verdict = tmp_path / "verdict.json"
    proc = _gate(capsys, "compare", H200 / "g-same-1.json", H200 / "g-slow15.json", "--allow-injected-slowdown",
                 "--json", verdict)
    assert proc.rc == 1
    result = json.loads(verdict.read_text())
    assert (result["verdict"], result["cells"], result["flagged"], result["lost"]) == ("fail", 16, 16, 0)
    assert result["rule"]["threshold_pct"] == gate.DEFAULT_THRESHOLD_PCT
    cell = next(c for c in result["comparisons"]["baseline"] if "native-plain-196-eager" in c["test"])
    assert cell["decision"] == "REGRESSED" and cell["change_pct"] == pytest.approx(15.0, abs=0.1)
    low, high = cell["interval_pct"]
    assert gate.DEFAULT_THRESHOLD_PCT < low < cell["change_pct"] < high
    proc = _gate(capsys, "compare", H200 / "g-same-1.json", H200 / "g-same-3.json", "--json", verdict)
    result = json.loads(verdict.read_text())
    assert proc.rc == 0 and (result["verdict"], result["cells"], result["flagged"]) == ("pass", 16, 0)
    proc = _gate(capsys, "compare", tmp_path / "absent.json", H200 / "g-same-3.json", "--json", verdict)
    assert proc.rc == 0 and json.loads(verdict.read_text())["verdict"] == "pass"


def test_confirmation_rerun_selection_and_pooled_verdict(tmp_path, capsys):
    base = _save(tmp_path / "base.json", _run({"native-plain-196-eager": 0.100, "sdpa_math-plain-3136-compiled": 0.1}))
    cur = _save(tmp_path / "cur.json", _run({"native-plain-196-eager": 0.110, "sdpa_math-plain-3136-compiled": 0.1}))
    verdict = tmp_path / "verdict.json"
    proc = _gate(capsys, "compare", base, cur, "--json", verdict)
    assert proc.rc == 1 and "1 cell(s) to confirm" in proc.stdout
    rerun = json.loads(verdict.read_text())["rerun"]
    assert rerun["cells"] == [TEST.format("native-plain-196-eager")]
    assert rerun["pytest_args"] == [
        "tests/test_train_step.py", "--benchmark-only", "--attn-profile", "smoke", "--attn-rounds", "5",
        "--attn-warmup", "1", "--attn-compile-scope", "block", "--attn-impl", "native",
        "--attn-variant", "plain", "--attn-seq-len", "196",
        "--attn-mode", "eager", "-k", "test_train_step[native-plain-196-eager]"]
    # A rerun as slow as the first run confirms the regression; one that is fast again leaves
    # the pooled median between the two and the interval across the threshold: not confirmed.
    slow_again = _save(tmp_path / "slow-again.json", _run({"native-plain-196-eager": 0.110}))
    proc = _gate(capsys, "compare", base, cur, slow_again)
    assert proc.rc == 1 and "2 current runs pooled" in proc.stdout
    fast_again = _save(tmp_path / "fast-again.json", _run({"native-plain-196-eager": 0.100}))
    proc = _gate(capsys, "compare", base, cur, fast_again)
    assert proc.rc == 0 and "unsure    test_train_step[native-plain-196-eager]" in proc.stdout


def test_rerun_arguments_select_exactly_the_cells():
    cells = [TEST.format("native-plain-196-eager"), TEST.format("sdpa_math-plain-3136-compiled")]
    args = gate.rerun_pytest_args(cells, {"profile": "smoke", "rounds": 3, "warmup": 1, "compile_scope": "model"})
    assert args[args.index("--attn-compile-scope") + 1] == "model"
    proc = subprocess.run([sys.executable, "-m", "pytest", *args, "--collect-only", "-q", "-p", "no:cacheprovider"],
                          check=False, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    collected = [line for line in proc.stdout.splitlines() if "::test_train_step[" in line]
    assert collected == cells, proc.stdout + proc.stderr


# --- the rule on the H200 runs of 2026-11-30 (results/h200/2026-11-30/, 20 rounds of 1 step) ------------
def test_h200_same_code_pairings_flag_nothing_and_slowdowns_are_caught():
    """The measured rates in README and the gate's docstring."""
    same = [gate.load_run(H200 / f"g-same-{i}.json") for i in (1, 2, 3)]
    slow = [gate.load_run(H200 / name) for name in ("g-slow.json", "g-slow15.json")]
    result = gate.calibrate(same, slow)
    counts = {key: (case.flagged, case.compared) for key, case in result.items() if key != "worst_same_low"}
    assert counts == {"same": (0, 96), "same_confirmed": (0, 96), "synthetic": (88, 96),
                      "synthetic_confirmed": (92, 96), "slow0": (47, 48), "slow1": (48, 48)}
    assert result["worst_same_low"][0] == pytest.approx(1.47, abs=0.01)


def test_h200_current_settings_same_code_flags_nothing():
    """results/h200/gate/ (10 rounds of 3 steps, seq 196): the rates in README and its README."""
    gate_runs = ROOT / "results" / "h200" / "gate"
    same = [gate.load_run(gate_runs / f"g-same-{i}.json") for i in (1, 2, 3)]
    result = gate.calibrate(same, [gate.load_run(gate_runs / "g-slow5.json")])
    counts = {key: (case.flagged, case.compared) for key, case in result.items() if key != "worst_same_low"}
    assert counts == {"same": (0, 36), "same_confirmed": (0, 36), "synthetic": (35, 36),
                      "synthetic_confirmed": (36, 36), "slow0": (15, 18)}
    assert result["worst_same_low"][0] == pytest.approx(-0.59, abs=0.01)


def test_calibrate_command(capsys, tmp_path):
    markdown = tmp_path / "calibration.md"
    proc = _gate(capsys, "calibrate", H200 / "g-same-1.json", H200 / "g-same-2.json",
                 "--slow", H200 / "g-slow15.json", "--markdown", markdown)
    assert proc.rc == 0, proc.stderr
    assert "same code: 0 of 32 cell comparisons flagged" in proc.stdout
    assert "injected slowdown 0.15 (" in proc.stdout and "32 of 32" in proc.stdout
    assert "- same code: 0 of 32" in markdown.read_text()


def test_interrupted_run_keeps_the_cells_that_finished(tmp_path):
    """Ctrl-C after the first cell: that cell is still saved in storage."""
    (tmp_path / "interrupt_after_first_cell.py").write_text(
        "def pytest_runtest_logfinish(nodeid, location):\n    raise KeyboardInterrupt\n")
    storage = tmp_path / "storage"
    cmd = [sys.executable, "-m", "pytest", "tests/test_train_step.py", "-p", "no:cacheprovider",
           "-p", "interrupt_after_first_cell", "--attn-impl", "native,sdpa_math", *CELLS,
           "--attn-rounds", "2", f"--benchmark-storage=file://{storage}"]
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
    from attn_bench.harness import slowed_down
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


def test_h200_interleaved_reruns_flag_every_slowed_cell():
    """results/h200/gate/, fifth session: the verdicts its README and the top README give."""
    gate_runs = ROOT / "results" / "h200" / "gate"
    base, slow, base_rerun, slow_rerun = (gate.load_run(gate_runs / f"{name}.json") for name in
                                          ("g-same-5", "g-slow5d", "g-same-5-rerun", "g-slow5d-rerun"))
    first = gate.compare(base, slow)
    assert Counter(v.status for v in first) == {"REGRESSED": 5, "unsure": 1}
    final = gate.confirm_interleaved(first, [base_rerun], [slow_rerun])
    assert [v.status for v in final] == ["REGRESSED"] * 6
    assert min(v.change_pct for v in final) == pytest.approx(3.4, abs=0.05)
    same = gate.calibrate([base, base_rerun])
    assert (same["same"].flagged, same["same"].compared) == (0, 12)
