"""Parity on its own (`pytest -m parity`): attention kernels and whole-model training steps."""
import pytest

from attn_bench.harness import CellSkip
from attn_bench.model import TrainStep

pytestmark = pytest.mark.parity


def test_attention_parity(suite, impl, variant, seq_len):
    try:
        cell = suite.cell(impl, variant, seq_len, "eager")
    except CellSkip as skip:
        if suite.device == "cpu" and "no backward pass on CPU" in str(skip):
            cell = None  # forward parity still runs below
        else:
            pytest.skip(str(skip))
    from attn_impls import get_impl
    entry = cell.impl if cell else get_impl(impl)
    report = suite.attention_parity(entry, variant, seq_len)
    assert report.ok, report.summary()


def test_model_parity(suite, impl, variant, seq_len, mode):
    try:
        cell = suite.cell(impl, variant, seq_len, mode)
    except CellSkip as skip:
        pytest.skip(str(skip))
    step: TrainStep = suite.new_step(cell)
    report = suite.model_parity(cell, step)
    assert report.ok, report.summary()
