"""Reports from a real smoke-profile run: end-of-run tables, markdown, chart, merging."""
import json
from types import SimpleNamespace

import pytest
from benchruns import run_module, run_suite

from attn_bench import report

pytestmark = pytest.mark.suite

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    path = d / "run.json"
    # sdpa_math cannot express softcap: one skipped cell with its reason.
    proc = run_suite(path, "--attn-impl", "native,sdpa_math", "--attn-variant", "plain,softcap",
                     "--attn-seq-len", "196", "--attn-mode", "eager")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return SimpleNamespace(dir=d, path=path, run=json.loads(path.read_text()), stdout=proc.stdout)


def _bench(run, impl, variant):
    return next(b for b in run["benchmarks"] if b["params"]["impl"] == impl and b["params"]["variant"] == variant)


def test_end_of_run_tables(smoke):
    out = smoke.stdout
    assert "attention benchmark report" in out
    assert "seq_len 196, eager (cpu)" in out and "speedup vs native eager" in out
    assert "Skipped cells (1):" in out
    assert "test_train_step[sdpa_math-softcap-196-eager]: sdpa_math cannot express variant 'softcap'" in out


def test_markdown_and_chart(smoke):
    md, png = smoke.dir / "report.md", smoke.dir / "report.png"
    proc = run_module("attn_bench.report", smoke.path, "--markdown", md, "--chart", png)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = md.read_text()
    assert "### seq_len 196, eager (cpu)" in text
    assert "| implementation | variant | median ms | speedup vs native eager | peak GiB | TFLOP/s | kernel |" in text
    native, sdpa = _bench(smoke.run, "native", "plain"), _bench(smoke.run, "sdpa_math", "plain")
    speedup = native["stats"]["median"] / sdpa["stats"]["median"]
    sdpa_row = next(line for line in text.splitlines() if line.startswith("| sdpa_math | plain |"))
    cells = [c.strip() for c in sdpa_row.strip("|").split("|")]
    assert cells[3] == f"{speedup:.2f}x"
    assert cells[4] == "n/a"  # no peak memory on CPU
    assert cells[6] == sdpa["extra_info"]["kernel"]
    assert "| native | plain |" in text and "| 1.00x |" in text
    assert "`test_train_step[sdpa_math-softcap-196-eager]`: sdpa_math cannot express" in text
    assert png.read_bytes().startswith(PNG_SIGNATURE)


def test_later_file_wins_and_missing_reference_is_na(smoke):
    later = json.loads(smoke.path.read_text())
    native = _bench(later, "native", "plain")
    later["benchmarks"].remove(native)
    later["attn_suite"]["skipped"].append({"test": native["fullname"], "reason": "gone in the later run"})
    merged = report.merge([smoke.run, later])
    assert merged.skipped[native["fullname"]] == "gone in the later run"
    assert native["fullname"] not in merged.ran
    rows = report.tables(merged)[(196, "eager")]
    assert {r.speedup for r in rows} == {None}
    assert "| sdpa_math | plain |" in report.markdown_report(merged)
    assert "n/a" in report.text_report(merged)


def test_bad_input(smoke, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{\"benchmarks\": [")
    proc = run_module("attn_bench.report", broken)
    assert proc.returncode == 2 and str(broken) in proc.stderr and "Traceback" not in proc.stderr
    other = json.loads(smoke.path.read_text())
    other["machine_info"]["gpu"]["gpu"] = "NVIDIA H200"
    with pytest.raises(ValueError, match="different GPU models"):
        report.merge([smoke.run, other])
