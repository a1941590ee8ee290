"""Garbage-collector settings for a process dedicated to executing runs."""

from __future__ import annotations

import gc

__all__ = ["WORKER_GC_THRESHOLD", "configure_worker_gc"]

WORKER_GC_THRESHOLD = 50_000
"""Net allocations between young collections under `configure_worker_gc` (Python's
default is 700)."""


def configure_worker_gc(threshold: int = WORKER_GC_THRESHOLD) -> tuple[int, int, int]:
    """Set up Python's garbage collector for a worker with many runs in flight, and
    return the thresholds it replaced.

    A process executing a thousand runs at once keeps nearly every object its steps
    make alive until the step's checkpoint is written, so the collector's frequent young
    collections (one per 700 allocations by default) walk the same live objects again
    and again and free nothing. This collects once, freezes everything alive now (the
    loaded modules, the workflows, the store) out of later collections with
    `gc.freeze()`, and makes young collections rarer (`threshold` net allocations;
    older generations keep their ratios of 20 and 100 young collections).

    The settings are the whole process's, which is why holon never applies them on its
    own: call this once, after start-up, in a process that does nothing but execute runs
    (a worker), not in an application that merely starts runs. Memory held by cyclic
    garbage lives a little longer between collections; reference counting still frees
    everything else at once. `gc.set_threshold(*returned)` and `gc.unfreeze()` undo it.

    Raises `ValueError` for a threshold that is not a whole number of at least 700.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 700:
        raise ValueError(
            f"configure_worker_gc: threshold must be a whole number of at least 700 "
            f"(Python's default), got {threshold!r}"
        )
    previous = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(threshold, 20, 100)
    return previous
