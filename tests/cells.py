"""The shared body of the benchmark tests: build a cell, run it, report a skip or a failure."""
import pytest

from attn_bench.harness import CellFailure, CellSkip


def run_cell(make_cell, run, benchmark) -> None:
    """`run(make_cell(), benchmark)`; CellSkip anywhere skips with its reason, CellFailure fails
    the test with its message alone (no chained traceback)."""
    failure = skip = None
    try:
        run(make_cell(), benchmark)
    except CellFailure as e:
        failure = str(e)
    except CellSkip as e:
        skip = str(e)
    if skip:
        pytest.skip(skip)
    if failure:  # raised outside the except blocks, so pytest shows one clean message
        pytest.fail(failure, pytrace=False)
