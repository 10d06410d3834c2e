"""Reports: unit tests on hand-made runs, then a real smoke-profile run (end-of-run tables, markdown, chart)."""
import json
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
from benchruns import ROOT, run_module, run_suite

from attn_tools import gate, report, runs
from attn_tools.runs import short_name

pytestmark = pytest.mark.suite

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    path = d / "run.json"
    # sdpa_math cannot express softcap: one skipped cell per test kind, with its reason.
    proc = run_suite(path, "--attn-impl", "native,sdpa_math", "--attn-variant", "plain,softcap",
                     "--attn-seq-len", "196", "--attn-mode", "eager", "--benchmark-autosave",
                     tests=("tests/test_infer_step.py", "tests/test_train_step.py", "tests/test_attention.py"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return SimpleNamespace(dir=d, path=path, run=json.loads(path.read_text()), stdout=proc.stdout)


def _bench(run, impl, variant, test="test_train_step", **params):
    return next(b for b in run["benchmarks"] if b["name"].startswith(test + "[")
                and b["params"]["impl"] == impl and b["params"]["variant"] == variant
                and all(b["params"][k] == v for k, v in params.items()))


def _md_row(text, prefix, first="implementation"):
    """The markdown table row starting with `prefix`, as {header: cell} of its table (whose first column is `first`)."""
    lines = text.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith(prefix))
    header = next(lines[j] for j in range(i, -1, -1) if lines[j].startswith(f"| {first} |"))

    def split(line):
        return [c.strip() for c in line.strip().strip("|").split("|")]
    return dict(zip(split(header), split(lines[i])))


def test_end_of_run_tables(smoke):
    out = smoke.stdout
    assert "attention benchmark report" in out
    assert "seq_len 196, eager (cpu)" in out and "speedup vs native/<variant> eager" in out
    assert re.search(r"^native +plain +this run +\d", out, re.M)
    assert "Runs (the run column):" in out and "this run: " in out and "profile smoke" in out
    # train, inference, attention fwd and fwd_bwd: grouped by reason, not a line per cell (pytest -rfE)
    assert "Skipped tests (4), by reason (the run's JSON lists each: attn_suite.skipped):" in out
    counts = re.findall(r"^ +(\d+)  sdpa_math cannot express variant 'softcap'", out, re.M)
    assert sum(map(int, counts)) == 4 and 1 <= len(counts) <= 2, out[-3000:]
    assert "SKIPPED [" not in out and "sdpa_math-softcap-196-eager" not in out
    skipped = {s["test"]: s["reason"] for s in smoke.run["attn_suite"]["skipped"]}  # the full list is in the JSON
    assert len(skipped) == 4 and all("sdpa_math cannot express" in r for r in skipped.values())
    assert skipped["tests/test_train_step.py::test_train_step[sdpa_math-softcap-196-eager]"]
    assert smoke.run["attn_suite"]["complete"] is True and smoke.run["attn_suite"]["workers_per_gpu"] == 1
    # pytest-benchmark's own tools need the one flag, which the run's end names
    assert re.search(r"^Saved under (.+); pytest-benchmark's own tools read it with: pytest-benchmark --storage \1 "
                     r"list \| compare 0001 0002$", out, re.M)
    sections = [out.index(f"== {title} ==") for title in ("Train steps", "Inference steps", "Attention kernels")]
    assert sections == sorted(sections) and out.index("seq_len 196, eager, fwd (cpu)") > sections[2]
    assert re.search(r"^sdpa_math +plain +this run +\d", out[sections[2]:], re.M)


def test_inference_cells_reuse_their_training_cells_parity(smoke):
    """The model parity check runs once per cell key: in the training cell, which conftest runs
    first (the fixture names the inference test first)."""
    train, infer = _bench(smoke.run, "native", "plain"), _bench(smoke.run, "native", "plain", "test_infer_step")
    assert infer["extra_info"]["model_parity"] == train["extra_info"]["model_parity"]
    assert train["extra_info"]["phase_s"]["parity"] > 0.05
    assert infer["extra_info"]["phase_s"]["parity"] < 0.01


def test_new_cells_record_their_fields(smoke):
    """Inference and attention-kernel cells in the JSON: what the report and the gate read."""
    infer = _bench(smoke.run, "native", "softcap", "test_infer_step")["extra_info"]
    assert infer["images_per_s"] == pytest.approx(infer["batch"] / (infer["median_ms"] / 1e3))
    assert infer["model_parity"]["ok"] and infer["parity"]["ok"] and infer["kernel_fwd_names"] == []
    assert infer["steps_per_round"] == 1 and infer["numerics"]["float32_matmul_precision"] == "high"
    fwd_bwd = _bench(smoke.run, "sdpa_math", "plain", "test_attention", direction="fwd_bwd")
    fwd = _bench(smoke.run, "sdpa_math", "plain", "test_attention", direction="fwd")
    for bench in (fwd, fwd_bwd):
        info = bench["extra_info"]
        assert bench["group"] == f"attention-196-eager-{info['direction']}"
        assert bench["stats"]["iterations"] == info["calls_per_round"]
        assert info["median_ms"] == pytest.approx(bench["stats"]["median"] * 1e3)
        assert info["tflops"] == pytest.approx(info["flops"] / bench["stats"]["median"] / 1e12)
        assert info["kernel"] == "matmul+softmax (no fused attention kernel)" and info["parity"]["ok"]
    assert fwd_bwd["extra_info"]["flops"] == 3.5 * fwd["extra_info"]["flops"]
    assert smoke.run["attn_suite"]["matmul_peak_tflops"] is None  # measured on CUDA only


def test_gate_takes_a_run_with_every_kind(smoke):
    verdicts = gate.compare(smoke.run, smoke.run)
    kinds = {short_name(v.test).partition("[")[0] for v in verdicts}
    assert kinds == {"test_train_step", "test_infer_step", "test_attention"}
    assert all(v.status == "ok" for v in verdicts)


def test_markdown_and_chart(smoke):
    md, png = smoke.dir / "report.md", smoke.dir / "report.png"
    proc = run_module("attn_tools.report", smoke.path, "--markdown", md, "--chart", png)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = md.read_text()
    assert "### seq_len 196, eager (cpu)" in text
    assert "| implementation | variant | run | median ms | speedup vs native/<variant> eager |" in text
    native, sdpa = _bench(smoke.run, "native", "plain"), _bench(smoke.run, "sdpa_math", "plain")
    speedup = native["stats"]["median"] / sdpa["stats"]["median"]
    row = _md_row(text, "| sdpa_math | plain |")
    assert row["run"] == "r1"
    assert row["speedup vs native/<variant> eager"] == f"{speedup:.2f}x"
    assert row["peak GiB"] == "n/a"  # no peak memory on CPU
    assert row["kernel"] == sdpa["extra_info"]["kernel"]
    assert f"- r1: {smoke.path}, " in text
    assert "| native | plain |" in text and "| 1.00x |" in text
    assert re.search(r"^- +\d+  sdpa_math cannot express variant 'softcap'", text, re.M)
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    assert text.index("## Train steps") < text.index("## Inference steps") < text.index("## Attention kernels")
    infer = _bench(smoke.run, "native", "softcap", "test_infer_step")["extra_info"]
    assert _md_row(text[text.index("## Inference steps"):], "| native | softcap |")["images/s"] == \
        f"{infer['images_per_s']:.1f}"
    assert "images/s" not in row  # train tables keep their columns
    assert "### seq_len 196, eager, fwd_bwd (cpu)" in text


def test_later_file_wins_and_missing_reference_is_na(smoke):
    later = json.loads(smoke.path.read_text())
    native = _bench(later, "native", "plain")
    later["benchmarks"].remove(native)
    later["attn_suite"]["failed"].append({"test": native["fullname"], "error": "gone in the later run"})
    merged = report.merge([smoke.run, later])
    assert merged.failed[native["fullname"]] == "gone in the later run"
    assert native["fullname"] not in merged.ran
    rows = report.tables(merged)[(196, "eager")]
    assert [r.speedup_eager for r in rows if r.variant == "plain"] == [None]  # sdpa_math: no native/plain
    assert _row(rows, "native", "softcap").speedup_eager == 1.0  # its own variant's reference still ran
    assert merged.source[native["fullname"]] == "r2"
    assert f"{short_name(native['fullname'])} (r2): gone in the later run" in report.text_report(merged)
    assert "Failed tests (1):" in report.text_report(merged)
    assert "| sdpa_math | plain |" in report.markdown_report(merged)
    assert "n/a" in report.text_report(merged)


def test_bad_input(smoke, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{\"benchmarks\": [")
    proc = run_module("attn_tools.report", broken)
    assert proc.returncode == 2 and str(broken) in proc.stderr and "Traceback" not in proc.stderr
    other = json.loads(smoke.path.read_text())
    other["machine_info"]["gpu"]["gpu"] = "NVIDIA H200"
    with pytest.raises(report.IncomparableRuns, match="differ in GPU model: run 1 'cpu', run 2 'NVIDIA H200'"):
        report.merge([smoke.run, other])


# --- unit tests on hand-made runs (no subprocess) ---------------------------------------------

TEST_ID = "tests/test_train_step.py::test_train_step[{}-{}-{}-{}]"
INFER_ID = "tests/test_infer_step.py::test_infer_step[{}-{}-{}-{}]"
ATTENTION_ID = "tests/test_attention.py::test_attention[{}-{}-{}-{}-{}]"
VARLEN_ID = "tests/test_varlen_train_step.py::test_varlen_train_step[{}-{}]"
LENGTHS_ID = "tests/test_varlen_train_step.py::test_varlen_flex_lengths[{}]"


def _cell(impl, variant, seq_len, mode, median_ms, test_id=TEST_ID, direction=None, **extra):
    params = (impl, variant, seq_len, mode) + ((direction,) if direction else ())
    return {"fullname": test_id.format(*params), "stats": {"median": median_ms / 1e3},
            "extra_info": {"kernel": f"{impl} kernel", **extra}}


def _varlen_cell(impl, mode, median_ms, lengths="fixed", images=97, tokens=31238, **extra):
    """A packed-image training step: padded_* implementations pad each image to one row, the others pack."""
    padded = impl.startswith("padded_")
    info = {"impl": impl, "mode": mode, "packing": "padded" if padded else "packed", "lengths": lengths,
            "rows": 97 if padded else 8, "row_len": 700 if padded else 4096, "images_per_step": images,
            "image_tokens_per_step": tokens, "padding_fraction": 0.54 if padded else 0.0467,
            "tokens_per_s": tokens / (median_ms / 1e3), "images_per_s": images / (median_ms / 1e3),
            "kernel": f"{impl} kernel", **extra}
    return {"fullname": VARLEN_ID.format(impl, mode), "stats": {"median": median_ms / 1e3}, "extra_info": info}


def _lengths_cell(strategy, recompiles, first_step_ms, later_ms, distinct):
    return {"fullname": LENGTHS_ID.format(strategy), "stats": {"median": later_ms / 1e3},
            "extra_info": {"strategy": strategy, "strategy_means": f"what {strategy} does", "recompiles": recompiles,
                           "first_step_ms": first_step_ms, "later_steps_median_ms": later_ms,
                           "distinct_lengths": distinct}}


def _made_run(*cells, profile="full", gpu="NVIDIA H200", when="2026-11-30T06:24:49.157532+00:00",
              commit="824a0b5cf9e9f977c06d7a42e97f87dddfc9ee46", dirty=False, skipped=(), failed=(),
              matmul_peak=None):
    return {"machine_info": {"gpu": {"gpu": gpu}}, "datetime": when,
            "commit_info": {"id": commit, "dirty": dirty}, "benchmarks": list(cells),
            "attn_suite": {"profile": profile, "skipped": list(skipped), "failed": list(failed),
                           "matmul_peak_tflops": matmul_peak}}


def _row(rows, impl, variant):
    return next(r for r in rows if (r.impl, r.variant) == (impl, variant))


def test_speedup_is_over_native_of_the_same_variant():
    merged = report.merge([_made_run(
        _cell("native", "plain", 196, "eager", 200.0),
        _cell("native", "neighborhood", 196, "eager", 300.0),
        _cell("sdpa_cudnn", "neighborhood", 196, "eager", 200.0),
        _cell("flex", "softcap", 196, "eager", 100.0),  # no native/softcap: n/a
        _cell("native", "neighborhood", 196, "compiled", 250.0),
        _cell("sdpa_cudnn", "neighborhood", 196, "compiled", 125.0),
    )])
    eager, compiled = report.tables(merged)[(196, "eager")], report.tables(merged)[(196, "compiled")]
    cudnn = _row(eager, "sdpa_cudnn", "neighborhood")
    assert cudnn.speedup_eager == pytest.approx(1.5)  # 300 / 200, not native/plain's 200 / 200
    assert _row(eager, "flex", "softcap").speedup_eager is None
    cudnn_c = _row(compiled, "sdpa_cudnn", "neighborhood")
    assert cudnn_c.speedup_eager == pytest.approx(2.4) and cudnn_c.speedup_mode == pytest.approx(2.0)
    md = report.markdown_report(merged)
    eager_col = "speedup vs native/<variant> eager"
    assert _md_row(md, "| sdpa_cudnn | neighborhood | this run | 200.00 |")[eager_col] == "1.50x"
    assert _md_row(md, "| flex | softcap |")[eager_col] == "n/a"
    compiled_row = _md_row(md, "| sdpa_cudnn | neighborhood | this run | 125.00 |")
    assert compiled_row[eager_col] == "2.40x"
    assert compiled_row["speedup vs native/<variant> compiled"] == "2.00x"
    eager_header = md.splitlines()[2]
    assert "compiled" not in eager_header  # the eager table has one speedup column
    bars = dict(report.speedups(merged)[(196, "eager")])  # the chart: no bar without a reference
    assert bars == {"sdpa_cudnn/neighborhood": pytest.approx(1.5), "native/plain": 1.0, "native/neighborhood": 1.0}
    assert "<same variant>" in report.CHART_XLABEL


def test_study_comparisons():
    merged = report.merge([_made_run(
        _cell("native", "softcap", 196, "eager", 240.0),
        _cell("flex", "softcap", 196, "eager", 200.0),
        _cell("flex", "neighborhood", 196, "eager", 150.0),
        _cell("sdpa_cudnn", "neighborhood", 196, "eager", 120.0),
        _cell("sdpa_math", "neighborhood", 196, "eager", 300.0),
        _cell("native", "neighborhood", 196, "eager", 450.0),  # not a study pair for neighborhood
        _cell("sdpa_cudnn", "plain", 196, "eager", 100.0),     # other variant: not compared to flex/neighborhood
        _cell("flex", "plain", 196, "eager", 100.0),
        _cell("native", "plain", 196, "eager", 150.0),
        _cell("flex", "plain", 3136, "compiled", 40.0),
        _cell("sdpa_flash", "plain", 3136, "compiled", 40.1),
        _cell("native", "plain", 3136, "eager", 80.0),  # other mode: not compared to compiled flex
    )])
    found = report.study_comparisons(merged)
    assert set(found) == {(196, "eager"), (3136, "compiled")}
    sentences = [c.sentence() for c in found[(196, "eager")]]
    assert sentences == [
        "flex/softcap is 1.20x faster than native/softcap (soft-capping via score_mod vs hand-written)",
        "flex/neighborhood is 1.25x slower than sdpa_cudnn/neighborhood (block_mask vs sdpa with a dense mask)",
        "flex/neighborhood is 2.00x faster than sdpa_math/neighborhood (block_mask vs sdpa with a dense mask)",
        "flex/plain is 1.50x faster than native/plain (FlexAttention vs hand-written attention)",
        "flex/plain is as fast as sdpa_cudnn/plain (within 0.5 %) (FlexAttention vs an sdpa backend)",
    ]
    assert [c.baseline for c in found[(3136, "compiled")]] == ["sdpa_flash/plain"]
    text = report.text_report(merged)
    assert "The study's comparisons" in text and "seq_len 196, eager:\n  flex/softcap is 1.20x faster" in text
    assert "### The study's comparisons" in report.markdown_report(merged)
    # the pairs are data: another tuple gives other sentences
    pairs = (("sdpa_cudnn", "neighborhood", "native", "dense mask vs hand-written mask"),)
    [only] = report.study_comparisons(merged, pairs)[(196, "eager")]
    assert only.sentence() == ("sdpa_cudnn/neighborhood is 3.75x faster than native/neighborhood "
                               "(dense mask vs hand-written mask)")


def test_study_section_absent_without_pairs():
    merged = report.merge([_made_run(_cell("native", "plain", 196, "eager", 200.0))])
    assert report.study_comparisons(merged) == {}
    assert "study's comparisons" not in report.text_report(merged)


def test_rows_name_their_run_and_the_legend_gives_date_and_commit():
    first = _made_run(_cell("native", "plain", 196, "eager", 200.0), _cell("flex", "plain", 196, "eager", 150.0),
                      skipped=[{"test": TEST_ID.format("fa4", "plain", 196, "eager"), "reason": "no fa4"}])
    second = _made_run(_cell("flex", "plain", 196, "eager", 140.0), _cell("fa4", "plain", 196, "eager", 100.0),
                       when="2026-12-01T10:00:00.5+00:00", commit="abcdef0123456789", dirty=True)
    merged = report.merge([first, second], names=["runs/a.json", "runs/b.json"])
    rows = report.tables(merged)[(196, "eager")]
    assert [(r.impl, r.run) for r in rows] == [("fa4", "r2"), ("flex", "r2"), ("native", "r1")]
    assert not merged.skipped  # fa4 ran in the later run
    # A later run in an environment without fa4 skips it: the measurement of r2 stays.
    third = _made_run(_cell("flex", "plain", 196, "eager", 145.0),
                      skipped=[{"test": TEST_ID.format("fa4", "plain", 196, "eager"), "reason": "no fa4"}],
                      failed=[{"test": TEST_ID.format("native", "plain", 196, "eager"), "error": "boom"}])
    merged3 = report.merge([first, second, third])
    assert merged3.source[TEST_ID.format("fa4", "plain", 196, "eager")] == "r2" and not merged3.skipped
    assert [(r.impl, r.run) for r in report.tables(merged3)[(196, "eager")]] == [("fa4", "r2"), ("flex", "r3")]
    assert set(merged3.failed) == {TEST_ID.format("native", "plain", 196, "eager")}  # a failure does replace
    text = report.text_report(merged)
    assert re.search(r"^flex +plain +r2 +140\.00 ", text, re.M)
    assert ("  r1: runs/a.json, 2026-11-30T06:24:49+00:00, commit 824a0b5cf9, NVIDIA H200, profile full"
            in text.splitlines())
    assert ("  r2: runs/b.json, 2026-12-01T10:00:00+00:00, commit abcdef0123 (dirty), NVIDIA H200, profile full"
            in text.splitlines())
    assert text.index("Runs (the run column):") > text.index("native")  # under the tables
    md = report.markdown_report(merged)
    assert _md_row(md, "| native | plain |")["run"] == "r1"
    assert "- r2: runs/b.json, 2026-12-01T10:00:00+00:00, commit abcdef0123 (dirty)," in md


def test_the_legend_gives_the_compile_scope_of_compiled_cells():
    new = _made_run(_cell("native", "plain", 196, "compiled", 120.0))
    new["attn_suite"]["compile_scope"] = "model"
    before_the_option = _made_run(_cell("flex", "plain", 196, "compiled", 110.0))
    eager_only = _made_run(_cell("flex", "plain", 196, "eager", 140.0))
    head = "2026-11-30T06:24:49+00:00, commit 824a0b5cf9, NVIDIA H200, profile full"
    lines = report.text_report(report.merge([new, eager_only], names=["a", "c"])).splitlines()
    assert f"  r1: a, {head}, compiled: whole model" in lines
    assert f"  r2: c, {head}" in lines
    assert f"  this run: b, {head}, compiled: per block" in \
        report.text_report(report.merge([before_the_option], names=["b"])).splitlines()
    with pytest.raises(report.IncomparableRuns, match="a and b differ in compile_scope: a 'model', b 'block'"):
        report.merge([new, before_the_option], names=["a", "b"])


def test_single_run_is_labelled_this_run():
    merged = report.merge([_made_run(_cell("native", "plain", 196, "eager", 200.0))])
    assert [r.run for r in report.tables(merged)[(196, "eager")]] == ["this run"]
    assert "  this run: run 1, 2026-11-30T06:24:49+00:00, commit 824a0b5cf9," in report.text_report(merged)


def test_vs_study_column():
    merged = report.merge([_made_run(
        _cell("native", "plain", 196, "eager", 105.0, study_median_ms=100.0),
        _cell("flex", "plain", 196, "eager", 90.0, study_median_ms=100.0),
        _cell("fa4", "plain", 196, "eager", 80.0),
        _cell("native", "plain", 3136, "eager", 50.0),
    )])
    md = report.markdown_report(merged)
    assert _md_row(md, "| native | plain | this run | 105.00 |")["vs study"] == "+5.0%"
    assert _md_row(md, "| flex | plain |")["vs study"] == "-10.0%"
    assert _md_row(md, "| fa4 | plain |")["vs study"] == "n/a"
    assert "vs study" not in _md_row(md, "| native | plain | this run | 50.00 |")  # no study cell at 3136


def test_compile_seconds_with_cache_state_in_compiled_tables():
    merged = report.merge([_made_run(
        _cell("native", "plain", 196, "eager", 200.0, compile_s=0.0, compile_cache="cold"),
        _cell("native", "plain", 196, "compiled", 150.0, compile_s=41.25, compile_cache="cold"),
        _cell("flex", "plain", 196, "compiled", 120.0, compile_s=3.5, compile_cache="warm"),
        _cell("fa4", "plain", 196, "compiled", 110.0, compile_s=2.0),
        _cell("flex", "plain", 3136, "compiled", 40.0, compile_s=9.0),  # no cache state recorded
        _cell("fa3", "plain", 196, "compiled", 112.0, compile_s=15.5, compile_cache="warm", aot_cache="bypass"),
        _cell("fa2", "plain", 196, "compiled", 114.0, compile_s=4.5, compile_cache="warm", aot_cache="hit"),
    )])
    md = report.markdown_report(merged)
    # Inductor served the graphs, but AOTAutograd traced the forward and backward again
    assert _md_row(md, "| fa3 | plain |")["compile s (cache)"] == "15.5 (warm, AOT bypass)"
    assert _md_row(md, "| fa2 | plain |")["compile s (cache)"] == "4.5 (warm)"
    assert _md_row(md, "| native | plain | this run | 150.00 |")["compile s (cache)"] == "41.2 (cold)"
    assert _md_row(md, "| flex | plain | this run | 120.00 |")["compile s (cache)"] == "3.5 (warm)"
    assert _md_row(md, "| fa4 | plain |")["compile s (cache)"] == "2.0 (cache n/a)"
    assert "compile s (cache)" not in _md_row(md, "| native | plain | this run | 200.00 |")  # eager table
    assert "compile s (cache)" not in _md_row(md, "| flex | plain | this run | 40.00 |")


def test_refuses_runs_of_different_profiles_or_gpus():
    full, smoke = _made_run(profile="full"), _made_run(profile="smoke")
    with pytest.raises(report.IncomparableRuns, match=r"a\.json and b\.json differ in profile: a\.json 'full', "
                                                      r"b\.json 'smoke'"):
        report.merge([full, smoke], names=["a.json", "b.json"])
    with pytest.raises(ValueError, match=r"a\.json and c\.json differ in GPU model: a\.json 'NVIDIA H200', "
                                         r"c\.json 'cpu'"):
        report.merge([full, full, _made_run(gpu="cpu")], names=["a.json", "b.json", "c.json"])
    assert report.merge([full, _made_run(profile="full")]).gpu == "NVIDIA H200"


def test_cli_refuses_mixed_profiles(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_made_run(_cell("native", "plain", 196, "eager", 200.0))))
    b.write_text(json.dumps(_made_run(_cell("native", "plain", 196, "eager", 200.0), profile="smoke")))
    assert report.main([str(a), str(b)]) == 2


def test_cell_kind_parses_every_test_kind():
    assert report.cell_kind(TEST_ID.format("native", "plain", 196, "eager")) == (
        report.TRAIN, {"impl": "native", "variant": "plain", "seq_len": 196, "mode": "eager"})
    assert report.cell_kind(INFER_ID.format("fa4", "softcap", 3136, "compiled"))[0] == report.INFER
    assert report.cell_kind(ATTENTION_ID.format("sdpa_cudnn", "neighborhood", 3136, "compiled", "fwd_bwd")) == (
        report.ATTENTION, {"impl": "sdpa_cudnn", "variant": "neighborhood", "seq_len": 3136, "mode": "compiled",
                           "direction": "fwd_bwd"})
    assert report.cell_kind("tests/test_parity.py::test_model_parity[native-plain-196-eager]") is None
    assert report.cell_kind("tests/test_attention.py::test_attention[native-plain-196-eager]") is None
    assert report.cell_kind(VARLEN_ID.format("sdpa_dense_efficient", "compiled")) == (
        report.VARLEN, {"impl": "sdpa_dense_efficient", "mode": "compiled", "lengths": "fixed"})
    assert report.cell_kind(VARLEN_ID.format("sdpa_nested_flash", "eager-changing")) == (
        report.VARLEN, {"impl": "sdpa_nested_flash", "mode": "eager", "lengths": "changing"})
    assert report.cell_kind(LENGTHS_ID.format("exact_length_dynamic")) == (
        report.FLEX_LENGTHS, {"strategy": "exact_length_dynamic"})
    assert report.cell_kind("tests/test_varlen_train_step.py::test_varlen_train_step[flex]") is None


def test_a_section_per_kind_with_speedups_within_the_kind_and_direction():
    merged = report.merge([_made_run(
        _cell("native", "plain", 196, "eager", 200.0, images_per_s=640.0),
        _cell("native", "plain", 196, "eager", 50.0, INFER_ID, images_per_s=2560.0),
        _cell("flex", "plain", 196, "eager", 40.0, INFER_ID, images_per_s=3200.0),
        _cell("native", "neighborhood", 3136, "eager", 10.0, ATTENTION_ID, "fwd", tflops=1.0, tflops_effective=0.19),
        _cell("flex", "neighborhood", 3136, "eager", 2.0, ATTENTION_ID, "fwd", tflops=5.0, tflops_effective=0.97,
              pct_of_matmul_peak=0.7, vs_do_bench_pct=2.5, host_ms=1.234),
        _cell("native", "neighborhood", 3136, "eager", 40.0, ATTENTION_ID, "fwd_bwd"),
        _cell("flex", "neighborhood", 3136, "eager", 10.0, ATTENTION_ID, "fwd_bwd"),
        matmul_peak=712.4)])
    assert report.kinds(merged) == [report.TRAIN, report.INFER, report.ATTENTION]
    attention = report.tables(merged, report.ATTENTION)
    assert list(attention) == [(3136, "eager", "fwd"), (3136, "eager", "fwd_bwd")]
    assert _row(attention[(3136, "eager", "fwd")], "flex", "neighborhood").speedup_eager == 5.0
    assert _row(attention[(3136, "eager", "fwd_bwd")], "flex", "neighborhood").speedup_eager == 4.0
    assert _row(report.tables(merged, report.INFER)[(196, "eager")], "flex", "plain").speedup_eager == 1.25
    assert report.study_comparisons(merged) == {}  # the study's pairs are training steps
    md = report.markdown_report(merged)
    assert md.index("## Train steps") < md.index("## Inference steps") < md.index("## Attention kernels")
    assert "### seq_len 3136, eager, fwd (NVIDIA H200)" in md
    flex = _md_row(md, "| flex | neighborhood | this run | 2.00 |")
    assert (flex["effective TFLOP/s"], flex["% of matmul peak"], flex["vs do_bench"]) == ("0.97", "0.7%", "+2.5%")
    assert _md_row(md, "| native | neighborhood | this run | 10.00 |")["vs do_bench"] == "n/a"
    assert flex["host ms"] == "1.234"  # 62 % of the 2.00 ms median: not host-bound
    assert "Host-bound kernel cells" not in md
    assert "effective TFLOP/s" not in _md_row(md, "| flex | neighborhood | this run | 10.00 |")  # fwd_bwd table
    assert _md_row(md, "| flex | plain | this run | 40.00 |")["images/s"] == "3200.0"
    assert "images/s" not in _md_row(md, "| native | plain | this run | 200.00 |")
    assert "commit 824a0b5cf9, NVIDIA H200, profile full, bf16 matmul peak 712 TFLOP/s" in md
    text = report.text_report(merged)
    assert text.index("== Train steps ==") < text.index("== Inference steps ==") < text.index("== Attention kernels ==")
    assert "seq_len 3136, eager, fwd_bwd (NVIDIA H200)" in text


def test_packed_images_section_fastest_first_with_speedup_over_padded():
    merged = report.merge([_made_run(
        _cell("native", "plain", 196, "eager", 200.0),
        _varlen_cell("padded_math", "eager", 160.0, peak_gib=31.08),
        _varlen_cell("fa3", "eager", 32.0, peak_gib=6.21),
        _varlen_cell("padded_efficient", "eager", 80.0, peak_gib=12.0),
        _varlen_cell("flex", "eager", 50.0),
        _varlen_cell("fa3", "compiled", 25.0, compile_s=5.59, compile_cache="cold"),
        _varlen_cell("padded_math", "compiled", 100.0, compile_s=6.79, compile_cache="cold"),
    )])
    found = report.varlen_tables(merged)
    assert list(found) == [("eager", "fixed"), ("compiled", "fixed")]
    eager, compiled = found[("eager", "fixed")], found[("compiled", "fixed")]
    assert [r.impl for r in eager] == ["fa3", "flex", "padded_efficient", "padded_math"]
    assert [r.speedup_padded for r in eager] == [pytest.approx(2.5), pytest.approx(1.6), 1.0, pytest.approx(0.5)]
    # padded_efficient did not run compiled: the compiled baseline is padded_math
    assert [(r.impl, r.speedup_padded) for r in compiled] == [("fa3", pytest.approx(4.0)), ("padded_math", 1.0)]
    assert report.kinds(merged) == [report.TRAIN]  # the other sections are unchanged
    train_only = report.merge([_made_run(_cell("native", "plain", 196, "eager", 200.0))])
    assert report.tables(merged) == report.tables(train_only)

    md = report.markdown_report(merged)
    assert md.index("## Train steps") < md.index("## Packed variable-size images") < md.index("- this run: ")
    assert "### eager, fixed lengths (NVIDIA H200)" in md and "### compiled, fixed lengths (NVIDIA H200)" in md
    fa3 = _md_row(md, "| fa3 | packed 8x4096 | this run | 32.00 |")
    assert fa3 == {"implementation": "fa3", "layout": "packed 8x4096", "run": "this run", "median ms": "32.00",
                   "tokens/s": "976188", "images/s": "3031.2", "speedup vs padded_efficient": "2.50x",
                   "padding": "4.7%", "peak GiB": "6.21", "kernel": "fa3 kernel"}
    assert _md_row(md, "| padded_math | padded 97x700 | this run | 160.00 |")["padding"] == "54.0%"
    fa3_c = _md_row(md, "| fa3 | packed 8x4096 | this run | 25.00 |")
    assert (fa3_c["speedup vs padded_math"], fa3_c["compile s (cache)"]) == ("4.00x", "5.6 (cold)")
    assert _md_row(md, "| flex | packed 8x4096 |")["peak GiB"] == "n/a"
    text = report.text_report(merged)
    assert text.index("== Train steps ==") < text.index("== Packed variable-size images ==")
    section = text[text.index("== Packed variable-size images =="):]
    assert [m.group(1) for m in re.finditer(r"^(\w+) +(?:packed|padded) ", section, re.M)] == \
        ["fa3", "flex", "padded_efficient", "padded_math", "fa3", "padded_math"]
    assert re.search(r"^fa3 +packed 8x4096 +this run +25\.00 +1249520 +3880\.0 +4\.00x +4\.7% +n/a +5\.6 \(cold\) "
                     r"+fa3 kernel$", section, re.M)


def test_fixed_and_changing_lengths_never_share_a_table():
    merged = report.merge([_made_run(
        _varlen_cell("padded_efficient", "eager", 80.0),
        _varlen_cell("fa3", "eager", 32.0),
        _varlen_cell("flex", "eager", 45.5, lengths="changing", images=94.375),
        _varlen_cell("flex", "compiled", 38.73, lengths="changing", images=94.375),
        _varlen_cell("padded_math", "compiled", 77.46, lengths="changing", images=94.375),
        _varlen_cell("fa3", "compiled", 25.0),
    )])
    found = report.varlen_tables(merged)
    assert list(found) == [("eager", "fixed"), ("eager", "changing"), ("compiled", "fixed"), ("compiled", "changing")]
    assert [r.impl for r in found[("eager", "fixed")]] == ["fa3", "padded_efficient"]
    # no padded cell with changing lengths in eager: the fixed-lengths padded_efficient is not its baseline
    assert [(r.impl, r.speedup_padded) for r in found[("eager", "changing")]] == [("flex", None)]
    assert [(r.impl, r.speedup_padded) for r in found[("compiled", "changing")]] == \
        [("flex", pytest.approx(2.0)), ("padded_math", 1.0)]
    assert [(r.impl, r.speedup_padded) for r in found[("compiled", "fixed")]] == [("fa3", None)]
    md = report.markdown_report(merged)
    assert "### eager, lengths change every step (NVIDIA H200)" in md
    assert "### compiled, lengths change every step (NVIDIA H200)" in md
    flex_eager = _md_row(md, "| flex | packed 8x4096 | this run | 45.50 |")
    assert flex_eager["speedup vs padded (none ran)"] == "-" and flex_eager["images/s"] == "2074.2"
    assert _md_row(md, "| flex | packed 8x4096 | this run | 38.73 |")["speedup vs padded_math"] == "2.00x"
    assert _md_row(md, "| fa3 | packed 8x4096 | this run | 25.00 |")["speedup vs padded (none ran)"] == "-"
    text = report.text_report(merged)
    changing = text[text.index("eager, lengths change every step (NVIDIA H200)"):text.index("compiled, fixed lengths")]
    assert "flex" in changing and "fa3" not in changing and "padded_efficient" not in changing


def test_flex_changing_lengths_table_shows_recompiles():
    merged = report.merge([_made_run(
        _lengths_cell("exact_length", 7, 5804.87, 5058.84, 8),
        _lengths_cell("exact_length_dynamic", 0, 6441.57, 17.67, 8),
        _lengths_cell("fixed_budget", 0, 4496.84, 9.77, 1),
    )])
    rows = report.flex_lengths_rows(merged)
    assert [(r.strategy, r.recompiles) for r in rows] == [("fixed_budget", 0), ("exact_length_dynamic", 0),
                                                          ("exact_length", 7)]
    assert report.varlen_tables(merged) == {} and report.kinds(merged) == []
    text = report.text_report(merged)
    assert text.startswith("== Packed variable-size images ==\n\nFlexAttention with changing lengths (NVIDIA H200)\n")
    assert re.search(r"^exact_length +this run +7 +5804\.87 +5058\.84 +8 +what exact_length does$", text, re.M)
    md = report.markdown_report(merged)
    assert "### FlexAttention with changing lengths (NVIDIA H200)" in md
    assert _md_row(md, "| fixed_budget |", first="strategy") == {
        "strategy": "fixed_budget", "run": "this run", "recompiles": "0", "first step ms": "4496.84",
        "later steps median ms": "9.77", "distinct lengths": "1", "what the strategy does": "what fixed_budget does"}


def test_skipped_and_failed_packed_image_cells_are_listed():
    skipped = [{"test": LENGTHS_ID.format("exact_length"), "reason": "runs with --attn-varlen-lengths changing"}]
    failed = [{"test": VARLEN_ID.format("sdpa_nested_math", "eager"), "message": "RuntimeError: grad types"}]
    merged = report.merge([_made_run(_varlen_cell("fa3", "eager", 32.0), skipped=skipped, failed=failed)])
    assert list(merged.skipped) == [LENGTHS_ID.format("exact_length")]
    assert list(merged.failed) == [VARLEN_ID.format("sdpa_nested_math", "eager")]
    text = report.text_report(merged)
    assert ("Skipped tests (1), by reason (the run's JSON lists each: attn_suite.skipped):\n"
            "     1  runs with --attn-varlen-lengths changing\n" in text)
    assert "Failed tests (1):\n  test_varlen_train_step[sdpa_nested_math-eager]: RuntimeError: grad types" in text
    assert "FlexAttention with changing lengths" not in text  # no strategy ran
    assert "- `test_varlen_train_step[sdpa_nested_math-eager]`: RuntimeError" in report.markdown_report(merged)


def test_failed_cells_show_the_exception_not_the_traceback():
    """A failure is summed up by pytest's crash line; older runs by the traceback's first E line."""
    longrepr = SimpleNamespace(reprcrash=SimpleNamespace(message="RuntimeError: expected input and grad types\nmore"))
    report_ = SimpleNamespace(nodeid=VARLEN_ID.format("sdpa_nested_math", "eager"), skipped=False, failed=True,
                              when="call", longrepr=longrepr)
    kind, record = runs.report_outcome(report_)
    assert kind == "failed" and record["error"] == "RuntimeError: expected input and grad types"
    traceback = ("if same_type:\n    return x\nE   AssertionError: expected len(meta.attrs) == 4, got 3\n"
                 "E   second line\n/torch/runtime_wrappers.py:2386: AssertionError")
    assert runs.failure_summary({"message": traceback}) == "AssertionError: expected len(meta.attrs) == 4, got 3"
    assert runs.failure_summary({"message": "worker 1 died\nlast log lines"}) == "worker 1 died"
    assert runs.failure_summary({"error": "ValueError: x", "message": traceback}) == "ValueError: x"


def test_kernel_cells_whose_host_time_nears_the_median_are_marked_host_bound():
    merged = report.merge([_made_run(
        _cell("native", "plain", 196, "eager", 1.0, ATTENTION_ID, "fwd", host_ms=0.79),
        _cell("fa3", "plain", 196, "eager", 1.0, ATTENTION_ID, "fwd", host_ms=0.80, device_ms=0.25,
              tflops_device=412.0),
        _cell("flex", "plain", 196, "eager", 1.0, ATTENTION_ID, "fwd"))])
    md = report.markdown_report(merged)
    assert _md_row(md, "| fa3 | plain | this run | 1.00 |")["host ms"] == "0.800 host-bound"
    assert _md_row(md, "| native | plain | this run | 1.00 |")["host ms"] == "0.790"
    assert _md_row(md, "| flex | plain | this run | 1.00 |")["host ms"] == "n/a"
    fa3 = _md_row(md, "| fa3 | plain | this run | 1.00 |")
    assert (fa3["device ms"], fa3["device TFLOP/s"]) == ("0.250", "412")
    assert "Host-bound kernel cells: 1 of 2 with a host time (host ms at least 80% of the median)." in md
    assert "Host-bound kernel cells: 1 of 2" in report.text_report(merged)


def test_a_failure_line_ending_in_a_colon_is_joined_with_the_exception_underneath():
    """Dynamo wraps a backend's exception as "BackendCompilerFailed: backend='inductor' raised:" with the
    real one on the next line (session 7's sdpa_math-neighborhood-3136-compiled inference cell)."""
    crash = ("torch._dynamo.exc.BackendCompilerFailed: backend='inductor' raised:\n"
             "RuntimeError: trying to set the current FakeTensorMode, but one already exists\n\n"
             "Set TORCHDYNAMO_VERBOSE=1")
    expected = ("torch._dynamo.exc.BackendCompilerFailed: backend='inductor' raised: "
                "RuntimeError: trying to set the current FakeTensorMode, but one already exists")
    longrepr = SimpleNamespace(reprcrash=SimpleNamespace(message=crash))
    report_ = SimpleNamespace(nodeid=INFER_ID.format("sdpa_math", "neighborhood", 3136, "compiled"), skipped=False,
                              failed=True, when="call", longrepr=longrepr)
    assert runs.report_outcome(report_)[1]["error"] == expected
    # a run recorded before the join: its one-line `error` gives way to the traceback's E lines
    message = "".join(f"E           {line}\n" for line in crash.splitlines())
    assert runs.failure_summary({"error": crash.splitlines()[0], "message": message}) == expected


def test_report_sums_where_the_time_went_over_the_cells():
    merged = report.merge([_made_run(
        _cell("native", "plain", 196, "compiled", 130.0,
              phase_s={"parity": 13.0, "first_step": 46.0, "timed": 5.0, "other": 1.0, "total": 65.0}),
        _cell("flex", "plain", 196, "eager", 140.0,
              phase_s={"parity": 2.0, "first_step": 1.0, "timed": 6.0, "other": 1.0, "total": 10.0}),
        _cell("sdpa_cudnn", "plain", 196, "eager", 135.0),  # from before phase_s: not counted
    )])
    cells, totals = report.phase_totals(merged)
    assert cells == 2 and list(totals) == ["first_step", "parity", "timed", "other", "total"]
    assert totals["first_step"] == 47.0 and totals["total"] == 75.0
    text = report.text_report(merged)
    assert "Where the time went (2 cells, 75 s in cells): first_step 47 s (63%), parity 15 s (20%)" in text
    assert report.phase_totals(report.merge([_made_run(_cell("native", "plain", 196, "eager", 1.0))])) == (0, {})


def test_attention_share_of_the_training_step():
    """fwd_bwd kernel ms x depth / step ms, per (impl, variant, mode), where both cells ran."""
    merged = report.merge([_made_run(
        _cell("fa3", "plain", 3136, "eager", 31.8, depth=6),
        _cell("fa3", "plain", 3136, "eager", 1.86, test_id=ATTENTION_ID, direction="fwd_bwd"),
        _cell("fa3", "plain", 3136, "eager", 0.53, test_id=ATTENTION_ID, direction="fwd"),
        _cell("sdpa_math", "plain", 3136, "eager", 150.9, depth=6),
        _cell("sdpa_math", "plain", 3136, "eager", 21.2, test_id=ATTENTION_ID, direction="fwd_bwd"),
        _cell("fa3", "plain", 3136, "compiled", 1.86, test_id=ATTENTION_ID, direction="fwd_bwd"),  # no step
        # Inductor rewrote the call alone into cuDNN SDPA, not the model's: not the step's attention.
        _cell("native", "plain", 3136, "compiled", 62.6, depth=6, kernel="matmul+softmax"),
        _cell("native", "plain", 3136, "compiled", 2.2, test_id=ATTENTION_ID, direction="fwd_bwd",
              kernel="rewritten to sdpa_cudnn"),
        # Inductor names the same flex template after what it fused: still the step's attention.
        _cell("flex", "plain", 3136, "compiled", 34.6, depth=6,
              kernel="triton_tem_fused__unsafe_view_flex_attention_6"),
        _cell("flex", "plain", 3136, "compiled", 3.14, test_id=ATTENTION_ID, direction="fwd_bwd",
              kernel="triton_tem_fused_flex_attention_4"),
    )])
    (rows,) = report.attention_shares(merged).values()
    assert [(r.impl, r.mode) for r in rows] == [
        ("sdpa_math", "eager"), ("fa3", "eager"), ("flex", "compiled"), ("native", "compiled")]
    assert rows[1].share_pct == pytest.approx(1.86 * 6 / 31.8 * 100) and rows[3].share_pct is None
    assert rows[2].share_pct == pytest.approx(3.14 * 6 / 34.6 * 100)
    text = report.text_report(merged)
    share_table = text.index("attention's share of the training step")
    assert text.index("== Attention kernels ==") < share_table
    assert re.search(r"^sdpa_math +plain +eager +this run +21\.200 +6 +150\.90 +84%$", text[share_table:], re.M)
    assert re.search(r"^native +plain +compiled +this run .* n/a \(other kernel\)$", text[share_table:], re.M)


# --- folders, comparability and speedups within one run ----------------------------------------
def _write(path, run):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run), encoding="utf-8")
    return path


def _storage(tmp_path, *runs):
    """A storage folder like the suite's: <gpu-slug>/<machine-id>/NNNN_*.json, plus a gate verdict and an
    empty file (not runs) and a copy of the first run elsewhere in the folder."""
    folder = tmp_path / "nvidia-h200"
    for i, run in enumerate(runs, 1):
        _write(folder / "Linux-CPython-3.11-64bit" / f"{i:04d}_abc_2026120{i}.json", run)
    _write(folder / "gate-verdict.json", {"verdicts": []})
    (folder / "empty.json").write_text("")
    _write(folder / "copies" / "first.json", runs[0])
    return folder


def test_report_reads_json_without_torch_and_accepts_a_folder(tmp_path):
    older = _made_run(_cell("native", "plain", 196, "eager", 200.0), _cell("flex", "plain", 196, "eager", 150.0),
                      when="2026-12-01T00:00:00+00:00")
    newer = _made_run(_cell("native", "plain", 196, "eager", 210.0), _cell("flex", "plain", 196, "eager", 140.0),
                      when="2026-12-02T00:00:00+00:00")
    folder = _storage(tmp_path, newer, older)  # file order differs from date order: the date decides
    code = ("import runpy, sys; sys.modules['torch'] = None; sys.argv = ['attn-report', *sys.argv[1:]]; "
            "runpy.run_module('attn_tools.report', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code, str(folder), "--markdown", str(tmp_path / "r.md")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"^flex +plain +r2 +140\.00 +1\.50x", proc.stdout, re.M), proc.stdout  # latest per cell
    assert f"  r2: {folder / 'Linux-CPython-3.11-64bit' / '0001_abc_20261201.json'}, 2026-12-02" in proc.stdout
    assert "empty.json: not valid JSON" in proc.stderr and "gate-verdict.json: not a pytest-benchmark" in proc.stderr
    assert f"left out {folder / 'copies' / 'first.json'}: the same run as" in proc.stderr
    assert (tmp_path / "r.md").read_text().count("| flex | plain | r2 |") == 1
    empty = tmp_path / "none"
    empty.mkdir()
    proc = run_module("attn_tools.report", empty)
    assert proc.returncode == 2 and "no pytest-benchmark run in this folder" in proc.stderr


@pytest.mark.parametrize(("setting", "value", "reason"), [
    ("slowdown", 0.05, "slowdown: "),  # an injected slowdown (gate testing)
    ("rounds", 2, "rounds: "),  # a 2-round cold run
])
def test_incomparable_runs_are_refused_or_left_out_and_listed(tmp_path, setting, value, reason):
    real = [_made_run(_cell("native", "plain", 196, "eager", 200.0 + i), _cell("flex", "plain", 196, "eager", 150.0),
                      when=f"2026-12-0{i}T00:00:00+00:00") for i in (1, 3)]
    for run in real:
        run["attn_suite"].update(rounds=10, slowdown=0.0)
    odd = _made_run(_cell("flex", "plain", 196, "eager", 99.0), when="2026-12-02T00:00:00+00:00")
    odd["attn_suite"].update(rounds=10, slowdown=0.0)
    odd["attn_suite"][setting] = value
    folder = _storage(tmp_path, real[0], odd, real[1])
    proc = run_module("attn_tools.report", folder)
    assert proc.returncode == 2 and "runs that are not comparable cannot share a report" in proc.stderr
    assert "0002_abc_20261202.json" in proc.stderr and reason in proc.stderr and "--skip-incomparable" in proc.stderr
    proc = run_module("attn_tools.report", folder, "--skip-incomparable")
    assert proc.returncode == 0, proc.stderr
    assert "99.00" not in proc.stdout and re.search(r"^flex +plain +r2 +150\.00 ", proc.stdout, re.M)
    assert "Runs left out, not comparable with the newest run (1):" in proc.stdout
    assert re.search(rf"^  .*0002_abc_20261202\.json: {reason}", proc.stdout, re.M)


def test_a_single_run_that_is_not_a_plain_measurement_is_marked():
    slowed = _made_run(_cell("native", "plain", 196, "eager", 210.0))
    slowed["attn_suite"].update(slowdown=0.05, complete=False, rounds=2, warmup=0)
    text = report.text_report(report.merge([slowed], names=["slow.json"]))
    assert text.startswith("WARNING: this run (slow.json): INJECTED SLOWDOWN of 5% a step (gate testing, not a "
                           "measurement)\nWARNING: this run (slow.json): INCOMPLETE")
    assert "profile full, 2 rounds after 0 warm-up, INJECTED SLOWDOWN" in text
    assert "WARNING" not in report.text_report(report.merge([_made_run(_cell("native", "plain", 196, "eager", 1.0))]))


def test_speedups_never_divide_by_another_runs_cell():
    """A cell's baseline comes from its own run: r2's cells have no native, padded or step cell of their own."""
    first = _made_run(
        _cell("native", "plain", 196, "eager", 200.0), _cell("flex", "plain", 196, "eager", 100.0, depth=6),
        _cell("sdpa_cudnn", "plain", 196, "eager", 100.0),
        _cell("flex", "plain", 196, "eager", 5.0, test_id=ATTENTION_ID, direction="fwd_bwd"),
        _varlen_cell("padded_efficient", "eager", 80.0), _varlen_cell("fa3", "eager", 40.0))
    second = _made_run(
        _cell("flex", "plain", 196, "eager", 50.0, depth=6),
        _cell("sdpa_cudnn", "plain", 196, "eager", 40.0, test_id=ATTENTION_ID, direction="fwd_bwd"),
        _varlen_cell("fa3", "eager", 20.0), when="2026-12-01T00:00:00+00:00")
    merged = report.merge([first, second])
    rows = report.tables(merged)[(196, "eager")]
    assert (_row(rows, "flex", "plain").run, _row(rows, "flex", "plain").speedup_eager) == ("r2", None)
    assert _row(rows, "sdpa_cudnn", "plain").speedup_eager == pytest.approx(2.0)  # r1's own native
    md_row = _md_row(report.markdown_report(merged), "| flex | plain | r2 |")
    assert md_row["speedup vs native/<variant> eager"] == "n/a"
    varlen = {r.impl: r for r in report.varlen_tables(merged)[("eager", "fixed")]}
    assert varlen["fa3"].run == "r2" and varlen["fa3"].speedup_padded is None
    assert varlen["padded_efficient"].speedup_padded == 1.0
    assert report.study_comparisons(merged) == {}  # flex (r2) vs native (r1 only): not compared
    (share,) = report.attention_shares(merged)[196]  # flex's kernel cell is r1's: over r1's step, not r2's
    assert (share.runs, share.step_ms) == ("r1", 100.0)
    assert dict(report.speedups(merged)[(196, "eager")]) == {"sdpa_cudnn/plain": pytest.approx(2.0),
                                                             "native/plain": 1.0}
    # in one run, the same cells are compared
    alone = report.merge([first])
    assert _row(report.tables(alone)[(196, "eager")], "flex", "plain").speedup_eager == pytest.approx(2.0)
    assert report.attention_shares(alone)[196][0].share_pct == pytest.approx(5.0 * 6 / 100.0 * 100)
    assert report.study_comparisons(alone)


def test_skips_are_grouped_by_reason():
    skipped = [{"test": TEST_ID.format(impl, variant, 196, "eager"), "reason": f"{impl} not installed"}
               for impl in ("fa3", "fa4") for variant in ("plain", "softcap", "neighborhood")]
    skipped += [{"test": TEST_ID.format("fa3", "plain", 3136, "eager"), "reason": "fa3 not installed"},
                {"test": "tests/test_parity.py::test_model_parity[fa3-plain-196-eager]", "reason": "fa3 not installed"}]
    merged = report.merge([_made_run(_cell("native", "plain", 196, "eager", 1.0), skipped=skipped)])
    assert report.skip_groups(merged.skipped) == [(5, "fa3 not installed"), (3, "fa4 not installed")]
    text = report.text_report(merged)
    assert "Skipped tests (8), by reason (the run's JSON lists each: attn_suite.skipped):\n" \
           "     5  fa3 not installed\n     3  fa4 not installed\n" in text
    assert "test_parity" not in text and "fa3-plain" not in text
