"""The CI pieces on CPU: --attn-shard (a partition of the selected cells), attn-merge and attn-trend
on synthetic runs, the environment sets' declaration and the GPU workflow's plan."""
import json
import re
import subprocess
import sys

import pytest
from benchruns import ENV, ROOT

from attn_impls import REGISTRY
from attn_tools import envsets, merge, run, trend
from attn_tools.runs import outcomes

pytestmark = pytest.mark.suite

TRAIN = "tests/test_train_step.py::test_train_step[{}]"
ATTN = "tests/test_attention.py::test_attention[{}]"
INFER = "tests/test_infer_step.py::test_infer_step[{}]"


def _matrix() -> list[str]:
    """A collection-ordered matrix like the suite's: train, inference and attention cells."""
    cells = []
    for impl in ("native", "sdpa_flash", "flex", "fa4"):
        for variant in ("plain", "softcap"):
            for seq in (196, 3136):
                for mode in ("eager", "compiled"):
                    cells.append(TRAIN.format(f"{impl}-{variant}-{seq}-{mode}"))
                    cells.append(INFER.format(f"{impl}-{variant}-{seq}-{mode}"))
                    cells += [ATTN.format(f"{impl}-{variant}-{seq}-{mode}-{d}") for d in ("fwd", "fwd_bwd")]
    return cells


# --- shards ---------------------------------------------------------------------------------
@pytest.mark.parametrize("count", [1, 2, 3, 5, 7])
def test_shards_select_every_cell_exactly_once(count):
    tests = _matrix()
    picked = [merge.shard_cells(tests, k, count) for k in range(1, count + 1)]
    flat = [t for shard in picked for t in shard]
    assert sorted(flat) == sorted(tests)  # every cell, none twice
    assert len(flat) == len(set(flat))
    for shard in picked:  # each keeps collection order
        assert shard == sorted(shard, key=tests.index)


def test_shards_keep_parity_groups_together_and_are_balanced():
    tests = _matrix()
    picked = [merge.shard_cells(tests, k, 4) for k in range(1, 5)]
    owner = {}
    for k, shard in enumerate(picked):
        for test in shard:
            assert owner.setdefault(run.parity_group(test), k) == k, f"{test}'s parity group is split"
    costs, _ = run.estimate_costs(tests)
    loads = [sum(costs[t] for t in shard) for shard in picked]
    biggest_group = max(sum(costs[t] for t in tests if run.parity_group(t) == g) for g in owner)
    assert max(loads) - min(loads) <= biggest_group  # longest-first over groups


def test_shards_are_deterministic_and_use_stored_costs():
    tests = _matrix()
    assert [merge.shard_cells(tests, k, 3) for k in (1, 2, 3)] == [merge.shard_cells(tests, k, 3) for k in (1, 2, 3)]
    # a stored run that measured the native cells as very slow moves them apart
    slow = {"machine_info": {}, "benchmarks": [], "attn_suite": {
        "cell_wall_s": {t: 500.0 for t in tests if "native-" in t and "-196-" in t}}}
    plain = [merge.shard_cells(tests, k, 2) for k in (1, 2)]
    measured = [merge.shard_cells(tests, k, 2, [slow]) for k in (1, 2)]
    assert measured != plain
    assert sorted(t for s in measured for t in s) == sorted(tests)
    native_196 = [sum(1 for t in shard if "native-" in t and "-196-" in t) for shard in measured]
    assert native_196 == [8, 8]  # the four heavy groups of 4 cells, two per shard


@pytest.mark.parametrize("text", ["0/2", "3/2", "1/0", "a/b", "2", "", "1/2/3", "-1/2"])
def test_bad_shard_is_a_usage_error(text):
    with pytest.raises(ValueError, match=re.escape("expected K/N with 1 <= K <= N")):
        merge.parse_shard(text)


def _collect(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
           "tests/test_train_step.py", "--attn-impl", "native,flex", *args]
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300, check=False)


def _ids(proc) -> list[str]:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [line for line in proc.stdout.splitlines() if "::" in line]


def test_attn_shard_option_partitions_the_collection_after_k():
    """pytest --attn-shard K/N: the N collections (after -k) are a partition of the unsharded one."""
    everything = _ids(_collect("-k", "not neighborhood"))
    shards = [_ids(_collect("-k", "not neighborhood", "--attn-shard", f"{k}/3")) for k in (1, 2, 3)]
    assert len(everything) == 16
    assert sorted(t for s in shards for t in s) == sorted(everything)
    assert all(shards) and len({t for s in shards for t in s}) == 16  # three non-empty, disjoint shards


def test_attn_shard_bad_spec_and_costs_file_are_usage_errors(tmp_path):
    proc = _collect("--attn-shard", "3/2")
    assert proc.returncode == 4 and "--attn-shard '3/2': expected K/N with 1 <= K <= N" in proc.stderr
    proc = _collect("--attn-shard", "1/2", "--attn-shard-costs", str(tmp_path / "none.json"))
    assert proc.returncode == 4 and "--attn-shard-costs" in proc.stderr and "none.json" in proc.stderr


# --- merge ----------------------------------------------------------------------------------
def _run(cells: dict, *, gpu="NVIDIA H100", shard=None, env_set=None, skipped=(), failed=(), node="host-a",
         commit="abc123", rounds=10, when="2026-12-01T10:00:00+00:00", wall_s=100.0, availability=None) -> dict:
    """A synthetic shard run: `cells` maps a train-step id to its median seconds."""
    def bench(name, median):
        return {"fullname": TRAIN.format(name), "name": f"test_train_step[{name}]",
                "stats": {"median": median, "data": [median] * rounds, "iterations": 1},
                "extra_info": {"steps_per_round": 1}}
    spec = None
    if shard:
        k, n = merge.parse_shard(shard)
        spec = {"spec": shard, "index": k, "count": n, "costs_from": []}
    return {"machine_info": {"node": node, "gpu": {"gpu": gpu, "uuid": f"GPU-{node}"}, "libraries": {}},
            "commit_info": {"id": commit}, "datetime": when, "version": "5.2.3",
            "attn_suite": {"profile": "full", "rounds": rounds, "warmup": 2, "slowdown": 0.0,
                           "compile_scope": "model", "skipped": [{"test": TRAIN.format(s), "reason": "r"}
                                                                 for s in skipped],
                           "failed": [{"test": TRAIN.format(f), "when": "call", "message": "boom"} for f in failed],
                           "shard": spec, "env_set": env_set, "wall_s": wall_s,
                           "availability": availability or {}},
            "benchmarks": [bench(n, m) for n, m in cells.items()]}


def _write(tmp_path, name, data) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def test_merge_makes_one_run_that_the_gate_and_report_read(tmp_path, capsys):
    from attn_tools import gate, report

    a = _run({"native-plain-196-eager": 0.010}, shard="1/2", env_set="torch", skipped=["flex-plain-196-eager"],
             availability={"fa4": {"status": "not installed"}, "native": {"status": "available"}})
    b = _run({"sdpa_flash-plain-196-eager": 0.008}, shard="2/2", env_set="torch", node="host-b", wall_s=140.0)
    c = _run({"fa4-plain-196-eager": 0.006}, shard="1/1", env_set="fa4", node="host-c",
             failed=["fa4-softcap-196-eager"], availability={"fa4": {"status": "available", "variants": ["plain"]}})
    files = [_write(tmp_path, f"{n}.json", r) for n, r in (("a", a), ("b", b), ("c", c))]
    out = tmp_path / "merged.json"
    assert merge.main([*files, "--output", str(out)]) == 0
    merged = json.loads(out.read_text())
    ran, skipped, failed = outcomes(merged)
    assert sorted(ran) == sorted(TRAIN.format(n) for n in ("native-plain-196-eager", "sdpa_flash-plain-196-eager",
                                                           "fa4-plain-196-eager"))
    assert list(skipped) == [TRAIN.format("flex-plain-196-eager")]
    assert list(failed) == [TRAIN.format("fa4-softcap-196-eager")]
    suite = merged["attn_suite"]
    assert [(h["host"], h["env_set"], h["shard"]) for h in suite["hosts"]] == [
        ("host-a", "torch", "1/2"), ("host-b", "torch", "2/2"), ("host-c", "fa4", "1/1")]
    assert suite["missing_shards"] == [] and suite["wall_s"] == 140.0 and suite["env_set"] == ["fa4", "torch"]
    assert suite["availability"]["fa4"]["status"] == "available"  # from the set that installs it
    assert suite["availability"]["native"]["status"] == "available"
    # the gate reads it like any run (its failed cell keeps it from being a baseline); the report renders it
    capsys.readouterr()
    assert gate.main(["compare", str(out), str(out)]) == 2
    assert "cannot be a baseline: 1 failed cell" in capsys.readouterr().err
    assert "fa4" in report.text_report(report.merge([merged], names=["merged"]))


def test_merge_refuses_a_cell_present_twice(tmp_path, capsys):
    a = _run({"native-plain-196-eager": 0.010}, shard="1/2")
    b = _run({}, shard="2/2", skipped=["native-plain-196-eager"])
    rc = merge.main([_write(tmp_path, "a.json", a), _write(tmp_path, "b.json", b), "-o", str(tmp_path / "m.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "native-plain-196-eager" in err and "a.json" in err and "b.json" in err
    assert not (tmp_path / "m.json").exists()


@pytest.mark.parametrize("edit, expected", [
    (dict(gpu="NVIDIA H200"), "GPU model"),
    (dict(rounds=20), "rounds"),
    (dict(commit="def456"), "commit def456"),
])
def test_merge_refuses_incomparable_inputs(tmp_path, capsys, edit, expected):
    a = _run({"native-plain-196-eager": 0.010}, shard="1/2")
    b = _run({"flex-plain-196-eager": 0.010}, shard="2/2", **edit)
    rc = merge.main([_write(tmp_path, "a.json", a), _write(tmp_path, "b.json", b), "-o", str(tmp_path / "m.json")])
    assert rc == 2 and expected in capsys.readouterr().err


def test_merge_checks_the_shards_of_a_set(tmp_path, capsys):
    a = _run({"native-plain-196-eager": 0.010}, shard="1/3", env_set="torch")
    b = _run({"flex-plain-196-eager": 0.010}, shard="1/3", env_set="torch")
    with pytest.raises(merge.MergeRefused, match="both shard 1/3"):
        merge.merge_runs([("a", a), ("b", b)])
    b["attn_suite"]["shard"] = {"spec": "2/4", "index": 2, "count": 4}
    with pytest.raises(merge.MergeRefused, match="one of 3"):
        merge.merge_runs([("a", a), ("b", b)])
    b["attn_suite"]["shard"] = {"spec": "3/3", "index": 3, "count": 3}
    merged = merge.merge_runs([("a", a), ("b", b)])
    assert merged["attn_suite"]["missing_shards"] == ["torch 2/3"]
    assert merge.main([_write(tmp_path, "a.json", a), _write(tmp_path, "b.json", b), "-o",
                       str(tmp_path / "m.json")]) == 0
    assert "missing shards" in capsys.readouterr().out


def test_merge_storage_is_found_by_the_gate(tmp_path, capsys):
    from attn_tools import gate

    a = _run({"native-plain-196-eager": 0.010})
    assert merge.main([_write(tmp_path, "a.json", a), "-o", str(tmp_path / "m.json"),
                       "--storage", str(tmp_path / "store")]) == 0
    capsys.readouterr()
    assert gate.main(["latest", str(tmp_path / "store")]) == 0
    assert capsys.readouterr().out.strip().endswith(".json")


# --- trend ----------------------------------------------------------------------------------
def test_trend_tables_per_cell_over_commits(tmp_path, capsys):
    folder = tmp_path / "runs" / "machine"
    folder.mkdir(parents=True)
    days = [("2026-12-01T03:00:00+00:00", "c1", 0.010), ("2026-12-02T03:00:00+00:00", "c2", 0.011),
            ("2026-12-03T03:00:00+00:00", "c3", None)]
    # saved out of date order: the trend orders by recorded date
    for number, (when, commit, native) in zip((3, 1, 2), days):
        cells = {"flex-plain-196-eager": 0.020}
        if native:
            cells["native-plain-196-eager"] = native
        data = _run(cells, commit=commit, when=when, failed=[] if native else ["native-plain-196-eager"])
        (folder / f"{number:04d}_{commit}.json").write_text(json.dumps(data))
    (folder / "0009_broken.json").write_text("{")
    assert trend.main([str(tmp_path / "runs"), "--cells", "native"]) == 0
    out, err = capsys.readouterr()
    assert "0009_broken.json" in err and "flex" not in out
    table = out.split(f"## {TRAIN.format('native-plain-196-eager')}")[1].strip().splitlines()
    assert table[2].startswith("| 2026-12-01 03:00 | c1 | 10.00 |  |")
    assert table[3].startswith("| 2026-12-02 03:00 | c2 | 11.00 | +10.0 % |")
    assert table[4].startswith("| 2026-12-03 03:00 | c3 | | | failed: boom")
    assert trend.main([str(tmp_path / "runs"), "--last", "1"]) == 0
    assert "1 run(s)" in capsys.readouterr().out


def test_trend_marks_a_settings_change_and_refuses_empty_input(tmp_path, capsys):
    old = _run({"native-plain-196-eager": 0.010}, when="2026-12-01T00:00:00+00:00")
    new = _run({"native-plain-196-eager": 0.020}, rounds=20, when="2026-12-02T00:00:00+00:00")
    text = trend.trend_tables([("old", old), ("new", new)])
    assert "settings changed: rounds: previous 10, this 20" in text and "+100.0 %" not in text
    assert trend.main([str(tmp_path)]) == 2
    assert "no run" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        trend.main([str(tmp_path), "--cells", "("])


# --- environment sets and the workflow's plan ------------------------------------------------
def test_every_implementation_is_in_exactly_one_set_and_adapter():
    in_sets = [impl for s in envsets.ENV_SETS.values() for impl in s.impls]
    assert sorted(in_sets) == sorted(REGISTRY)
    in_adapters = {impl: module for module, impls in envsets.ADAPTER_IMPLS.items() for impl in impls}
    assert {impl: entry.factory.__module__ for impl, entry in REGISTRY.items()} == {
        impl: f"attn_impls.{module}" for impl, module in in_adapters.items()}
    assert envsets.DEFAULT_SET == "torch" and list(envsets.ENV_SETS)[0] == "torch"
    with pytest.raises(ValueError, match="valid: native"):
        envsets.set_of("fa5")


def test_full_plan_is_every_set_times_every_shard():
    jobs = envsets.plan(shards=3)
    assert [(j["set"], j["shard"]) for j in jobs] == [(s, f"{k}/3") for s in envsets.ENV_SETS for k in (1, 2, 3)]
    with pytest.raises(ValueError, match="at least 1"):
        envsets.plan(shards=0)


@pytest.mark.parametrize("changed, expected", [
    (["attn_impls/te.py"], {"te": "--attn-impl te_flash,te_fused,te_unfused"}),
    (["attn_impls/flash.py"], {"fa2": "--attn-impl fa2", "fa3": "--attn-impl fa3", "fa4": "--attn-impl fa4"}),
    (["attn_impls/sdpa.py"], {"torch": "--attn-impl sdpa_flash,sdpa_efficient,sdpa_math,sdpa_cudnn"}),
    (["attn_bench/harness.py"], {"torch": ""}),
    (["attn_impls/xformers.py", "README.md"], {"torch": "", "xformers": "--attn-impl xformers,xformers_cutlass,"
                                                                       "xformers_flash,xformers_flash3"}),
    (["attn_impls/registry.py"], {"torch": ""}),
])
def test_pull_request_plan_is_narrowed_by_the_changed_paths(changed, expected):
    jobs = envsets.plan(changed=changed)
    small = "--attn-seq-len 3136 --attn-mode eager tests/test_train_step.py"
    assert {j["set"]: j["pytest_args"] for j in jobs} == {s: f"{a} {small}".strip() for s, a in expected.items()}
    assert all(j["shard"] == "1/1" for j in jobs)


def test_plan_command_prints_the_actions_matrix(tmp_path, capsys):
    changed = tmp_path / "changed.txt"
    changed.write_text("attn_impls/flex.py\n")
    assert envsets.main(["plan", "--changed-files", str(changed)]) == 0
    assert json.loads(capsys.readouterr().out) == {"include": [
        {"set": "torch", "shard": "1/1",
         "pytest_args": "--attn-impl flex --attn-seq-len 3136 --attn-mode eager tests/test_train_step.py"}]}


def test_workflow_calls_the_scripts_and_never_uploads_results():
    text = (ROOT / ".github/workflows/gpu-benchmark.yml").read_text()
    for needed in ("scripts/ci-bench.sh", "scripts/ci-gate.sh", "scripts/ci-store.sh", "attn_tools.envsets plan",
                   "cancel-in-progress", "attn_tools.merge"):
        assert needed in text, needed
    assert '--attn-shard "$shard"' in (ROOT / "scripts/ci-bench.sh").read_text()
    assert (ROOT / "scripts/ci-gate.sh").read_text().count("-m attn_tools.gate compare") == 2  # first pass, rerun
    uploads = re.findall(r"upload-artifact@\S+.*?path: ([^\n]+)", text, flags=re.S)
    assert uploads and not any("results" in p or "base-tree" in p for p in uploads), uploads
