"""`configure_worker_gc`: the collector settings of a process dedicated to executing runs."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from holon import configure_worker_gc
from holon.worker.collector import WORKER_GC_THRESHOLD


@pytest.fixture
def restored_gc() -> Iterator[None]:
    before = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_it_freezes_what_is_alive_and_makes_young_collections_rarer(restored_gc: None) -> None:
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    alive = [[n] for n in range(1_000)]  # tracked objects made before the call
    assert configure_worker_gc() == before
    assert gc.get_threshold() == (WORKER_GC_THRESHOLD, 20, 100)
    assert gc.get_freeze_count() >= frozen + len(alive)
    assert configure_worker_gc(10_000) == (WORKER_GC_THRESHOLD, 20, 100)
    assert gc.get_threshold() == (10_000, 20, 100)


@pytest.mark.parametrize("bad", [0, 699, -1, 1.5, "50000", True])
def test_a_threshold_below_the_default_or_not_a_whole_number_is_refused(
    restored_gc: None, bad: object
) -> None:
    before = gc.get_threshold()
    with pytest.raises(ValueError, match="threshold must be a whole number of at least 700"):
        configure_worker_gc(bad)  # type: ignore[arg-type]
    assert gc.get_threshold() == before
