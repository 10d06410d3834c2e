"""The benchmark matrix: one timed ViT training step per (impl, variant, seq_len, mode) cell."""
from cells import run_cell


def test_train_step(benchmark, suite, impl, variant, seq_len, mode):
    run_cell(lambda: suite.cell(impl, variant, seq_len, mode), suite.run_cell, benchmark)
