"""A service's heap once started: what start-up made is out of every collection."""

from __future__ import annotations

import gc

from shared import heap


def test_settle_freezes_what_exists_and_widens_the_youngest_generation() -> None:
    before = gc.get_threshold()
    try:
        heap.settle()
        assert gc.get_freeze_count() >= 10_000  # the interpreter's and pytest's own objects, at least
        assert gc.get_threshold() == heap.THRESHOLDS
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
