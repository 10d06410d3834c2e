"""The boundary between cells: every object is reconsidered there, and the cell's own collections are cheap."""
import gc
import weakref

import pytest

from attn_bench.isolation import fresh_cell_state, release_memory

pytestmark = pytest.mark.suite


class Cycle:
    """An object that only the cyclic garbage collector can free."""

    def __init__(self):
        self.me = self


def test_cell_boundary_collects_everything_and_a_cell_scans_only_what_it_made():
    try:
        older = Cycle()
        older_ref = weakref.ref(older)
        fresh_cell_state("cpu")  # `older` is alive here, so it is frozen with the rest
        assert gc.get_freeze_count() > 0
        del older
        release_memory("cpu")  # a collection inside the cell skips the frozen objects
        assert older_ref() is not None
        fresh_cell_state("cpu")  # the next boundary frees it
        assert older_ref() is None

        made_in_cell = Cycle()
        made_ref = weakref.ref(made_in_cell)
        del made_in_cell
        release_memory("cpu")  # what the cell made and dropped is freed within the cell
        assert made_ref() is None
    finally:
        gc.unfreeze()
