"""Parity on its own (`pytest -m parity`): attention kernels and whole-model training steps."""
import pytest

from attn_bench.harness import Cell, CellSkip
from attn_impls import Unsupported, get_impl

pytestmark = [pytest.mark.parity, pytest.mark.cell]  # the parity checks of the matrix's cells


def test_attention_parity(suite, impl, variant, seq_len, mode):
    try:
        cell = suite.cell(impl, variant, seq_len, mode)
    except CellSkip as skip:
        entry = get_impl(impl)
        if suite.device == "cpu" and not entry.cpu_backward and not entry.unsupported_reason(
                variant, "cpu", backward=False):
            cell = Cell(entry, variant, seq_len, mode)  # forward parity still runs
        else:
            pytest.skip(str(skip))
    try:
        attention = cell.impl.factory(variant, suite.shape(seq_len))
        report = suite.attention_parity(cell, attention)
    except Unsupported as e:
        pytest.skip(str(e))
    assert report.ok, report.summary()


def test_model_parity(suite, impl, variant, seq_len, mode):
    try:
        cell = suite.cell(impl, variant, seq_len, mode)
    except CellSkip as skip:
        pytest.skip(str(skip))
    try:
        report = suite.model_parity_once(cell, cell.impl.factory(variant, suite.shape(seq_len)))
    except Unsupported as e:
        pytest.skip(str(e))
    assert report.ok, report.summary()
