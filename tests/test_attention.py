"""Attention kernels alone: one timed attention call per (impl, variant, seq_len, mode, direction) cell."""
import pytest
from cells import run_cell

pytestmark = pytest.mark.cell


def test_attention(benchmark, suite, impl, variant, seq_len, mode, direction):
    run_cell(lambda: suite.attention_cell(impl, variant, seq_len, mode, direction), suite.run_attention_cell,
             benchmark)
