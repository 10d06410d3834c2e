"""The benchmark matrix: one timed ViT training step per (impl, variant, seq_len, mode) cell."""
import pytest
from cells import run_cell

pytestmark = pytest.mark.cell


def test_train_step(benchmark, suite, impl, variant, seq_len, mode):
    run_cell(lambda: suite.cell(impl, variant, seq_len, mode), suite.run_cell, benchmark)
