"""Conventions a user relies on: pytest-benchmark's own `list` and `compare` on the suite's storage (with
the one flag), `--attn-impl` over the packed-image cells, the console entry points and pinned extras,
and `attn_suite.complete` in a plain pytest run that was interrupted."""
import importlib
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from benchruns import ENV, ROOT

pytestmark = pytest.mark.suite

CELL = ["--attn-impl", "native", "--attn-variant", "plain", "--attn-seq-len", "196", "--attn-mode", "eager",
        "--attn-rounds", "3", "--attn-warmup", "0"]


def _pytest(*args, cwd=ROOT, env=ENV, timeout=300):
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _pytest_benchmark(*args, cwd):
    """pytest-benchmark's own command line (the `pytest-benchmark` console script's main)."""
    return subprocess.run([sys.executable, "-m", "pytest_benchmark", *map(str, args)], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=120, check=False)


def test_pytest_benchmark_list_and_compare_read_the_suites_storage_with_one_flag(tmp_path):
    """The suite keeps a storage folder per GPU model, .benchmarks/<gpu-slug>/<machine-id>/NNNN_*.json, one
    level deeper than pytest-benchmark looks: `pytest-benchmark --storage .benchmarks/<gpu-slug> list` and
    `... compare 0001 0002` find the runs, which the end of a run prints."""
    proc = _pytest(ROOT / "tests" / "test_train_step.py", *CELL, "--benchmark-autosave", cwd=tmp_path)  # ./.benchmarks
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (first,) = (tmp_path / ".benchmarks").rglob("0001_*.json")
    assert first.parent.parent == tmp_path / ".benchmarks" / "cpu"  # <gpu-slug>/<machine-id>/
    second = first.with_name("0002" + first.name[4:])
    shutil.copy(first, second)  # a second run, as the next autosave would number it
    assert "pytest-benchmark --storage .benchmarks/cpu list | compare 0001 0002" in proc.stdout

    listed = _pytest_benchmark("--storage", ".benchmarks/cpu", "list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert [line.rsplit("/", 1)[-1] for line in listed.stdout.split()] == [first.name, second.name]
    compared = _pytest_benchmark("--storage", ".benchmarks/cpu", "compare", "0001", "0002", cwd=tmp_path)
    assert compared.returncode == 0, compared.stderr
    assert compared.stdout.count("test_train_step[native-plain-196-eager]") == 2, compared.stdout
    # without the flag pytest-benchmark looks one level too high and finds nothing
    assert _pytest_benchmark("list", cwd=tmp_path).stdout.strip() == ""


def _collect(*args):
    return _pytest("--collect-only", "-q", *args)


def test_attn_impl_filters_packed_image_cells_and_accepts_their_ids():
    varlen = ROOT / "tests" / "test_varlen_train_step.py"
    proc = _collect(varlen, "--attn-impl", "padded_efficient,fa3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cells = re.findall(r"test_varlen_train_step\[([\w-]+)\]", proc.stdout)
    assert cells == ["padded_efficient-eager", "padded_efficient-compiled", "fa3-eager", "fa3-compiled"]
    # a packed-image id and a matrix id together: each test takes the ids it has
    proc = _collect(varlen, ROOT / "tests" / "test_train_step.py", "--attn-impl", "padded_math,native",
                    "--attn-mode", "eager", "--attn-variant", "plain")
    assert re.findall(r"test_varlen_train_step\[([\w-]+)\]", proc.stdout) == ["padded_math-eager"]
    assert re.findall(r"test_train_step\[([\w-]+)\]", proc.stdout) == ["native-plain-196-eager",
                                                                        "native-plain-3136-eager"]
    assert "NOTSET" not in proc.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["tests/test_train_step.py", "--attn-impl", "nope"], "--attn-impl: unknown name 'nope'; valid: native,"),
    (["tests/test_train_step.py", "--attn-impl", "padded_efficient"],
     "--attn-impl: padded_efficient selects no collected cell; the collected tests take: native, sdpa_flash,"),
    (["tests/test_varlen_train_step.py", "--attn-impl", "sdpa_cudnn,fa3"],
     "--attn-impl: sdpa_cudnn selects no collected cell; the collected tests take: sdpa_dense_efficient,"),
])
def test_an_impl_id_that_selects_nothing_is_a_usage_error(args, message):
    proc = _collect(*args)
    assert proc.returncode == 4 and message in proc.stderr, proc.stdout + proc.stderr  # pytest's usage error
    valid = proc.stderr.split(": ", 2)[-1]
    assert "padded_efficient" in valid or "padded_efficient" in args


def test_console_entry_points_and_extras():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    scripts = project["scripts"]
    assert set(scripts) == {"attn-run", "attn-gate", "attn-report", "attn-impls", "attn-merge", "attn-trend"}
    for target in scripts.values():
        module, _, name = target.partition(":")
        assert callable(getattr(importlib.import_module(module), name)), target
    # setuptools installs only the packages listed, subpackages included
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {".".join(init.parent.relative_to(ROOT).parts) for top in ("attn_impls", "attn_bench", "attn_tools")
                for init in (ROOT / top).rglob("__init__.py")}
    assert packages <= listed, packages - listed
    # pip skips pre-releases unless one is pinned: flash-attn-4 has only those
    (fa4,) = project["optional-dependencies"]["fa4"]
    assert re.fullmatch(r"flash-attn-4==4\.0\.0b\d+", fa4)


INTERRUPT_PLUGIN = '''
def pytest_runtest_setup(item):
    if item.nodeid.endswith("[native-softcap-196-eager]"):
        raise KeyboardInterrupt
'''


def test_an_interrupted_pytest_run_is_recorded_incomplete(tmp_path):
    (tmp_path / "interrupt_plugin.py").write_text(INTERRUPT_PLUGIN, encoding="utf-8")
    env = {**ENV, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), ENV.get("PYTHONPATH")]))}
    args = [*CELL, "--attn-variant", "plain,softcap", f"--benchmark-storage=file://{tmp_path / 'storage'}"]
    proc = _pytest("tests/test_train_step.py", *args, "-p", "interrupt_plugin",
                   f"--benchmark-json={tmp_path / 'run.json'}", env=env)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]  # pytest's "interrupted"
    suite = json.loads((tmp_path / "run.json").read_text())["attn_suite"]
    assert suite["complete"] is False and suite["workers_per_gpu"] == 1
    assert "INCOMPLETE" in proc.stdout  # the end-of-run report marks it
