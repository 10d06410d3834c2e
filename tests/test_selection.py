"""Selections: --attn-group's named parts of the matrix, and the markers that keep the unit tests
(`suite`, `parity`) apart from the matrix's cells (`cell`)."""
import importlib
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from attn_impls import REGISTRY, VARIANTS

pytestmark = pytest.mark.suite
ROOT = Path(__file__).resolve().parents[1]
MATRIX_TESTS = ("test_train_step", "test_infer_step", "test_attention", "test_varlen_train_step",
                "test_varlen_flex_lengths", "test_attention_parity", "test_model_parity")


def collect(*args):
    """The node ids `pytest --collect-only -q ARGS` selects, and its whole output."""
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--co", "-q", *args],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode in (0, 5), result.stdout + result.stderr  # 5: nothing selected
    ids = [line for line in result.stdout.splitlines() if "::" in line]
    return ids, result.stdout + result.stderr


def fake_config(group="auto", benchmark_only=False, named_paths=False, attn_impl="all", impls=()):
    options = {"attn_group": group, "benchmark_only": benchmark_only, "attn_impl": attn_impl}
    source = pytest.Config.ArgsSource.ARGS if named_paths else pytest.Config.ArgsSource.TESTPATHS
    return SimpleNamespace(getoption=lambda name, default=None: options.get(name, default), args_source=source,
                           _attn_selection={"impl": list(impls)})


def fake_item(name, impl=None):
    return SimpleNamespace(originalname=name, callspec=SimpleNamespace(params={"impl": impl} if impl else {}))


def test_the_default_group_is_the_study_when_benchmarking_and_everything_otherwise():
    from conftest import chosen_groups
    assert chosen_groups(fake_config(benchmark_only=True)) == (["study"], "default with --benchmark-only")
    assert chosen_groups(fake_config()) == (["all"], "default")
    assert chosen_groups(fake_config(benchmark_only=True, named_paths=True))[0] == ["all"]
    assert chosen_groups(fake_config("kernels, packed", benchmark_only=True)) == (["kernels", "packed"], "")


def test_an_unknown_group_is_a_usage_error_listing_the_valid_ones():
    from conftest import GROUPS, chosen_groups
    for bad in ("bogus", "study,bogus", ","):
        with pytest.raises(pytest.UsageError, match="valid: " + ", ".join(GROUPS)):
            chosen_groups(fake_config(bad))


def test_groups_select_their_tests_and_the_study_its_implementations():
    from conftest import STUDY_IMPLS, in_groups
    assert set(STUDY_IMPLS) <= set(REGISTRY)
    study, other = fake_item("test_train_step", "sdpa_cudnn"), fake_item("test_train_step", "fa4")
    kernel, unit = fake_item("test_attention", "fa4"), fake_item("test_registry_entry")
    assert in_groups(study, ["study"], STUDY_IMPLS) and not in_groups(other, ["study"], STUDY_IMPLS)
    assert in_groups(other, ["study"], ["fa4"])  # --attn-impl names the implementations
    assert in_groups(other, ["train"], STUDY_IMPLS) and not in_groups(kernel, ["train"], STUDY_IMPLS)
    assert in_groups(kernel, ["inference", "kernels"], STUDY_IMPLS)
    assert in_groups(fake_item("test_varlen_flex_lengths"), ["packed"], STUDY_IMPLS)
    assert not any(in_groups(unit, [g], STUDY_IMPLS) for g in ("study", "train", "kernels", "inference", "packed"))
    assert in_groups(unit, ["all"], STUDY_IMPLS)


def test_benchmarking_selects_the_study_cells_and_says_so():
    from conftest import STUDY_IMPLS
    ids, output = collect("--benchmark-only")
    assert "attn group: study (default with --benchmark-only)" in output and "deselected" in output
    cells = {tuple(node.split("[")[1].rstrip("]").split("-")) for node in ids}
    assert all(node.startswith("tests/test_train_step.py::test_train_step[") for node in ids), ids
    assert cells == {(impl, variant, seq_len, mode) for impl in STUDY_IMPLS for variant in VARIANTS
                     for seq_len in ("196", "3136") for mode in ("eager", "compiled")}


def test_each_test_file_is_marked_unit_tests_or_cells():
    """`-m "not cell"` runs the unit tests alone: a file of matrix tests is marked `cell`, every other
    file `suite` or `parity` (pytest.ini)."""
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        module = importlib.import_module(path.stem)
        marks = getattr(module, "pytestmark", [])
        names = {mark.name for mark in (marks if isinstance(marks, list) else [marks])}
        matrix = {name for name in MATRIX_TESTS if hasattr(module, name)}
        assert names & {"suite", "parity", "cell"}, f"{path.name}: no suite, parity or cell marker"
        assert ("cell" in names) == bool(matrix), f"{path.name}: marks {sorted(names)}, matrix tests {sorted(matrix)}"


def test_the_runner_knows_which_options_take_a_value():
    """attn_tools.run must never take an option's value (e.g. `--attn-group study`) for a test path."""
    import conftest
    from attn_tools.run import REFUSED_ARGS, VALUE_OPTIONS
    options = []
    group = SimpleNamespace(addoption=lambda name, **kw: options.append((name, kw.get("action"))))
    conftest.pytest_addoption(SimpleNamespace(getgroup=lambda *args: group))
    missing = [name for name, action in options
               if action != "store_true" and name not in VALUE_OPTIONS and name not in REFUSED_ARGS]
    assert options and not missing, f"conftest options missing from attn_tools.run.VALUE_OPTIONS: {missing}"
