"""Writing a checkpoint computed from a run's current record without holding its lease:
read, decide, commit at the sequence number read, and on a race read and decide again.

Operators' decisions, resumes and events are written this way (`holon.control.operator`),
and so are the events an executor delivers from an inbox once a run waits for them."""

from __future__ import annotations

from collections.abc import Callable

from holon.errors import RunNotFound, SeqConflict, StoreError
from holon.stores.base import Checkpoint, RunRecord, Store

__all__ = ["MAX_ATTEMPTS", "Decide", "compare_and_set", "load"]

MAX_ATTEMPTS = 50
"""Races lost in a row before giving up (each means another writer changed the run)."""

Decide = Callable[[RunRecord], Checkpoint | None]
"""Given the current record, the checkpoint to write, or None for nothing to write."""


async def load(store: Store, run_id: str) -> RunRecord:
    record = await store.load_run(run_id)
    if record is None:
        raise RunNotFound(f"no run {run_id!r} in {store.url}", run_id=run_id)
    return record


async def compare_and_set(
    store: Store,
    run_id: str,
    decide: Decide,
    on_conflict: Callable[[], None] | None = None,
) -> RunRecord:
    """Commit what `decide` returns for the current record; retry on a race.

    `on_conflict` is told each time a commit loses a race, before `decide` sees the
    newer record. Returns the record as it is after the write (or as read, when there
    was nothing to write).
    """
    for _ in range(MAX_ATTEMPTS):
        record = await load(store, run_id)
        checkpoint = decide(record)
        if checkpoint is None:
            return record
        try:
            await store.commit(run_id, expected_seq=record.seq, token=None, checkpoint=checkpoint)
        except SeqConflict:
            if on_conflict is not None:
                on_conflict()
            continue
        return await load(store, run_id)
    raise StoreError(
        f"run {run_id!r} kept changing; gave up after {MAX_ATTEMPTS} attempts", run_id=run_id
    )
