"""The regression gate on real smoke-profile runs: rerun passes, slowdown fails, lost coverage,
other GPU refused, bad baseline files; plus the threshold arithmetic."""
import copy
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from benchruns import ENV, ROOT, run_module, run_suite

from attn_bench import gate

pytestmark = pytest.mark.suite

CELLS = ("--attn-variant", "plain", "--attn-seq-len", "196", "--attn-mode", "eager")
# Same-code medians of these ~30 ms CPU steps moved by up to ~60% between reruns while another
# test session shared the 2-core machine, so the CPU tests gate at 150%, and the injected
# slowdown is +500% (6x): it still fails unless the baseline run was itself >2.4x slower.
# (The H200 threshold comes from `python -m attn_bench.gate spread`, not from these numbers.)
CPU_THRESHOLD = "150"
SLOWDOWN = "5.0"


def _check(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("gate")
    storage = f"--benchmark-storage=file://{d / 'storage'}"
    base, same, slow = d / "base.json", d / "same.json", d / "slow.json"
    _check(run_suite(base, "--attn-impl", "native,sdpa_math", *CELLS, "--benchmark-autosave", storage))
    # --benchmark-compare with a run of the same GPU model is accepted by the conftest hook.
    _check(run_suite(same, "--attn-impl", "native,sdpa_math", *CELLS, "--benchmark-autosave", storage,
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
    proc = run_module("attn_bench.gate", "compare", runs.base, runs.same, "--threshold", CPU_THRESHOLD)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "gate PASS" in proc.stdout
    assert "native-plain-196-eager" in proc.stdout and "sdpa_math-plain-196-eager" in proc.stdout


def test_storage_convenience_compares_the_two_newest(runs):
    proc = run_module("attn_bench.gate", "compare", "--storage", runs.storage, "--threshold", CPU_THRESHOLD)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0001_" in proc.stdout and "0002_" in proc.stdout
    latest = run_module("attn_bench.gate", "latest", runs.storage)
    assert "0002_" in latest.stdout


def test_injected_slowdown_fails(runs):
    slow = json.loads(runs.slow.read_text())["benchmarks"][0]
    assert slow["extra_info"]["injected_slowdown_ms"] > 0
    proc = run_module("attn_bench.gate", "compare", runs.base, runs.slow, "--threshold", CPU_THRESHOLD)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = next(x for x in proc.stdout.splitlines() if "native-plain-196-eager" in x)
    assert line.startswith("REGRESSED") and " ms -> " in line and f"threshold {CPU_THRESHOLD}%" in line
    assert "gate FAIL" in proc.stdout


def test_missing_cell_is_lost_coverage(runs, tmp_path):
    markdown = tmp_path / "gate.md"
    proc = run_module("attn_bench.gate", "compare", runs.base, runs.slow, "--threshold", "1000",
                      "--markdown", markdown)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = next(x for x in proc.stdout.splitlines() if "sdpa_math-plain-196-eager" in x)
    assert line.startswith("LOST") and "missing from the current run" in line
    assert "| LOST | `test_train_step[sdpa_math-plain-196-eager]` |" in markdown.read_text()


def test_skipped_cell_is_lost_coverage_with_its_reason(runs):
    baseline = json.loads(runs.base.read_text())
    current = copy.deepcopy(baseline)
    lost = current["benchmarks"].pop()
    current["attn_suite"]["skipped"].append({"test": lost["fullname"], "reason": "flash-attn not installed"})
    verdicts = {v.test: v for v in gate.compare(baseline, current, 1000)}
    assert verdicts[lost["fullname"]].status == "LOST"
    assert verdicts[lost["fullname"]].note == "skipped now: flash-attn not installed"


def test_other_gpu_model_is_refused(runs):
    other = _edited(runs, "h100.json", lambda d: d["machine_info"]["gpu"].update(gpu="NVIDIA H100 80GB HBM3"))
    proc = run_module("attn_bench.gate", "compare", other, runs.same)
    assert proc.returncode == 2
    assert "NVIDIA H100 80GB HBM3" in proc.stderr and "'cpu'" in proc.stderr and str(other) in proc.stderr


def test_software_differences_are_information_only(runs):
    older = _edited(runs, "old-torch.json", lambda d: d["machine_info"]["libraries"].update(torch="2.5.0"))
    proc = run_module("attn_bench.gate", "compare", older, runs.same, "--threshold", CPU_THRESHOLD)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "info: software differs: torch: 2.5.0 -> " in proc.stdout


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
    proc = run_module("attn_bench.gate", "compare", truncated, runs.same)
    assert proc.returncode == 2
    assert str(truncated) in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_no_baseline_passes_and_says_so(runs, tmp_path):
    proc = run_module("attn_bench.gate", "compare", tmp_path / "absent.json", runs.same)
    assert proc.returncode == 0 and "no baseline" in proc.stdout
    proc = run_module("attn_bench.gate", "compare", "--storage", tmp_path / "empty")
    assert proc.returncode == 0 and "no baseline" in proc.stdout


def test_spread_suggests_a_threshold(runs, tmp_path):
    markdown = tmp_path / "spread.md"
    proc = run_module("attn_bench.gate", "spread", runs.base, runs.same, "--markdown", markdown)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "spread" in proc.stdout and "suggested threshold" in proc.stdout
    assert "| `test_train_step[native-plain-196-eager]` |" in markdown.read_text()


# --- pure logic on small synthetic runs --------------------------------------------
def _run(medians_s: dict, gpu="cpu") -> dict:
    return {"machine_info": {"gpu": {"gpu": gpu}, "libraries": {}},
            "attn_suite": {"profile": "smoke", "skipped": [], "failed": []},
            "benchmarks": [{"fullname": f"t::test_train_step[{n}]", "stats": {"median": m}}
                           for n, m in medians_s.items()]}


def test_threshold_arithmetic():
    base = _run({"a-plain-196-eager": 0.100, "b-plain-196-eager": 0.100, "c-plain-196-eager": 0.100})
    cur = _run({"a-plain-196-eager": 0.105, "b-plain-196-eager": 0.1051, "c-plain-196-eager": 0.090})
    status = {v.test.split("[")[1][0]: v.status for v in gate.compare(base, cur, 5.0)}
    assert status == {"a": "ok", "b": "REGRESSED", "c": "faster"}
    assert gate.change_pct(10.0, 15.0) == pytest.approx(50.0)
    with pytest.raises(ValueError):
        gate.compare(base, cur, -1)


def test_failed_cell_is_lost_even_if_timed():
    base = _run({"a-plain-196-eager": 0.1})
    cur = _run({"a-plain-196-eager": 0.1})
    cur["attn_suite"]["failed"] = [{"test": "t::test_train_step[a-plain-196-eager]", "when": "call",
                                    "message": "loss became NaN during timing\nmore"}]
    (verdict,) = gate.compare(base, cur)
    assert verdict.status == "LOST" and verdict.note == "failed now: loss became NaN during timing"


def test_suggested_threshold_rule():
    assert gate.MIN_THRESHOLD_PCT == 5.0
    assert gate.suggested_threshold(1.3) == 5
    assert gate.suggested_threshold(3.53) == gate.DEFAULT_THRESHOLD_PCT == 8  # the H200 calibration
    assert gate.suggested_threshold(3.2) == 7
    spreads = gate.spreads([_run({"a-plain-196-eager": 0.100}), _run({"a-plain-196-eager": 0.102})])
    assert spreads["t::test_train_step[a-plain-196-eager]"][1] == pytest.approx(2.0)
    with pytest.raises(ValueError):
        gate.spreads([_run({})])


def test_cells_restricts_the_gate_to_a_subset():
    base = _run({"a-plain-196-eager": 0.100, "b-plain-196-eager": 0.100})
    cur = _run({"a-plain-196-eager": 0.101})
    assert [v.status for v in gate.compare(base, cur)] == ["ok", "LOST"]
    assert [v.status for v in gate.compare(base, cur, cells=r"\[a-")] == ["ok"]
    with pytest.raises(ValueError, match="regular expression"):
        gate.compare(base, cur, cells="[")


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
