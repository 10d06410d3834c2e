"""The benchmark matrix: one timed ViT training step per (impl, variant, seq_len, mode) cell."""
import pytest

from attn_bench.harness import CellFailure, CellSkip


def test_train_step(benchmark, suite, impl, variant, seq_len, mode):
    try:
        cell = suite.cell(impl, variant, seq_len, mode)
    except CellSkip as skip:
        pytest.skip(str(skip))
    failure = skip = None
    try:
        suite.run_cell(cell, benchmark)
    except CellFailure as e:
        failure = str(e)
    except CellSkip as e:
        skip = str(e)
    if skip:
        pytest.skip(skip)
    if failure:  # failed outside the except block: one clean message, no chained traceback
        pytest.fail(failure, pytrace=False)
