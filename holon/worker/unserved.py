"""Runs that no live worker may execute: paused after a grace period, resumed when a
worker that can is back.

A run executes only on the version it last ran on or a newer one that takes it over
(`holon.runtime.definitions`). During a rolling deploy the old workers go away: a run
still on the old version, which the new version cannot take (an `.Execute()` run whose
new version declares nothing), then has nobody to run it. Every worker looks, now and
then, for such runs: waiting for an executor (queued, left running by a worker that died,
or woken by a timer) on a version that no live worker claims (the store keeps the list of
live executors and what each claims, `Store.workers`), for longer than the grace period.
It pauses them, never fails them, with the reason `needs version <v>` in their timeline
and `RunBody.needs_version` set. A worker that can execute such a version resumes the
runs paused for it when it starts, and on each look.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from holon.clock import Clock
from holon.control.catalogue import entries, version_order
from holon.errors import SeqConflict
from holon.runtime.definitions import Definitions
from holon.runtime.waits import wake_time
from holon.stores.base import Checkpoint, NewEvent, RunRecord, RunStatus, Store, evolve

__all__ = ["NEEDS_VERSION", "pause_unserved", "resume_served"]

logger = logging.getLogger("holon.worker")

NEEDS_VERSION = "needs version"
"""The reason of a pause for want of a worker: `needs version <v>`."""

_PAGE = 200


async def pause_unserved(store: Store, clock: Clock, grace: float, by: str) -> int:
    """Pause the runs no live worker may execute that have waited for one for longer
    than `grace` seconds; returns how many were paused."""
    now = clock.now()
    claimed: dict[str, set[str]] = {}
    for worker in await store.workers(now):
        for name, versions in (worker.get("claims") or {}).items():
            claimed.setdefault(name, set()).update(versions)
    catalogue = await entries(store)
    paused = 0
    for name in sorted({info.name for info in catalogue}):
        unserved = {v for v in version_order(catalogue, name) if v not in claimed.get(name, ())}
        if not unserved:
            continue
        for status in (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING):
            async for record in _runs(store, name, status, before=now - grace):
                version = record.current_version
                if version not in unserved or not _waits_for_an_executor(record, now):
                    continue
                if await _pause(store, record, version, now, by):
                    paused += 1
    return paused


async def resume_served(store: Store, clock: Clock, definitions: Definitions, by: str) -> int:
    """Resume the runs paused for want of a worker that `definitions` can execute;
    returns how many were resumed."""
    resumed = 0
    for name in definitions.names:
        async for record in _runs(store, name, RunStatus.PAUSED, before=None):
            if not record.body.needs_version or definitions.pick(record) is None:
                continue
            if await _resume(store, record, clock.now(), by):
                resumed += 1
    return resumed


def _waits_for_an_executor(record: RunRecord, now: float) -> bool:
    if record.lease_live(now):
        return False
    if record.status == RunStatus.WAITING:
        return record.wake_at is not None and record.wake_at <= now
    return True


async def _runs(
    store: Store, workflow: str, status: RunStatus, *, before: float | None
) -> AsyncIterator[RunRecord]:
    """Runs of `workflow` in `status` (last changed before `before`, when given)."""
    cursor: str | None = None
    while True:
        page = await store.list_runs(status=status, workflow=workflow, limit=_PAGE, cursor=cursor)
        for summary in page.items:
            if before is not None and summary.updated_at > before:
                continue
            record = await store.load_run(summary.run_id)
            if record is not None and record.status == status:
                yield record
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


async def _pause(store: Store, record: RunRecord, version: str, now: float, by: str) -> bool:
    paused_from = RunStatus.WAITING if record.status == RunStatus.WAITING else None
    step = record.body.cursor.step if record.body.cursor else None
    reason = f"{NEEDS_VERSION} {version}"
    changes: dict[str, object] = {"paused_from": paused_from, "needs_version": version}
    data: dict[str, object] = {"by": by, "reason": reason}
    if record.status == RunStatus.RUNNING and record.lease is not None:
        # Its lease ran out mid-step (not let go): its executor died there. Counted as a take-over
        # would count it, so that a step that kills its workers becomes poison even when
        # the run is paused and resumed between deaths.
        changes["deaths"] = data["deaths"] = record.body.deaths + 1
    checkpoint = Checkpoint(
        status=RunStatus.PAUSED,
        body=evolve(record.body, changes),
        at=now,
        events=[NewEvent("paused", now, step, data)],
        release_lease=True,
    )
    if not await _write(store, record, checkpoint):
        return False  # it moved meanwhile (claimed, or paused by another worker)
    logger.warning(
        "run %s (%s): paused, no live worker executes version %s",
        record.run_id,
        record.workflow,
        version,
    )
    return True


async def _resume(store: Store, record: RunRecord, now: float, by: str) -> bool:
    body = record.body
    back_to_wait = body.paused_from == RunStatus.WAITING and body.wait is not None
    step = body.cursor.step if body.cursor else None
    checkpoint = Checkpoint(
        status=RunStatus.WAITING if back_to_wait else RunStatus.QUEUED,
        body=evolve(body, {"paused_from": None, "needs_version": None}),
        at=now,
        events=[
            NewEvent(
                "resumed",
                now,
                step,
                {"by": by, "reason": f"a worker executes version {body.needs_version} again"},
            )
        ],
        wake_at=wake_time(body.wait) if back_to_wait else None,
        clear_control=True,
    )
    if not await _write(store, record, checkpoint):
        return False
    logger.info(
        "run %s (%s): resumed on a worker that executes its version", record.run_id, record.workflow
    )
    return True


async def _write(store: Store, record: RunRecord, checkpoint: Checkpoint) -> bool:
    """Commit `checkpoint` if nothing else wrote the run since `record` was read."""
    try:
        await store.commit(
            record.run_id, expected_seq=record.seq, token=None, checkpoint=checkpoint
        )
    except SeqConflict:
        return False
    return True
