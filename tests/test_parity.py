"""Parity on its own (`pytest -m parity`): attention kernels and whole-model training steps."""
import pytest

from attn_bench.harness import CellSkip
from attn_impls import Unsupported, get_impl

pytestmark = pytest.mark.parity


def test_attention_parity(suite, impl, variant, seq_len):
    try:
        cell = suite.cell(impl, variant, seq_len, "eager")
    except CellSkip as skip:
        if suite.device == "cpu" and "no backward pass on CPU" in str(skip):
            cell = None  # forward parity still runs below
        else:
            pytest.skip(str(skip))
    entry = cell.impl if cell else get_impl(impl)
    try:
        report = suite.attention_parity(entry, variant, seq_len)
    except Unsupported as e:
        pytest.skip(str(e))
    assert report.ok, report.summary()


def test_model_parity(suite, impl, variant, seq_len, mode):
    try:
        cell = suite.cell(impl, variant, seq_len, mode)
    except CellSkip as skip:
        pytest.skip(str(skip))
    try:
        report = suite.model_parity(cell, suite.new_step(cell))
    except Unsupported as e:
        pytest.skip(str(e))
    assert report.ok, report.summary()
