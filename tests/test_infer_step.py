"""Inference: one timed forward of the full ViT per (impl, variant, seq_len, mode) cell."""
import pytest
from cells import run_cell

pytestmark = pytest.mark.cell


def test_infer_step(benchmark, suite, impl, variant, seq_len, mode):
    run_cell(lambda: suite.cell(impl, variant, seq_len, mode, backward=False), suite.run_infer_cell, benchmark)
