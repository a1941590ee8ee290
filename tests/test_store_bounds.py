"""Bounded storage on every store: the timeline cap and retention per final status."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import pytest

from holon import Retention
from holon.errors import RunNotFound, StoreError
from holon.stores import MemoryStore, RedisStore, SQLiteStore
from holon.stores.base import TERMINAL_STATUSES, RunStatus, Store
from holon.stores.timeline_cap import DEFAULT_TIMELINE_CAP
from tests.test_store_contract import NOW, checkpoint, create, event

pytestmark = pytest.mark.anyio


def capped(store: Store, cap: int) -> Store:
    """`store` with its timeline cap set to `cap` (every store reads it at each write)."""
    shape: Any = store
    shape.timeline_cap = cap
    return store


async def test_every_store_caps_the_timeline_by_default(store: Store) -> None:
    shape: Any = store
    assert shape.timeline_cap == DEFAULT_TIMELINE_CAP == 10_000


async def test_the_timeline_keeps_the_newest_events_and_goes_on_counting(store: Store) -> None:
    capped(store, 5)
    await create(store, "r1")  # event 1
    for n in range(2, 13):
        assert await store.append_timeline("r1", [event(f"e{n}")]) == n
    kept = await store.timeline("r1")
    assert [(e.seq, e.kind) for e in kept] == [(n, f"e{n}") for n in range(8, 13)]
    # A reader that last saw a trimmed event goes on from what is kept.
    assert [e.seq for e in await store.timeline("r1", after_seq=2)] == [8, 9, 10, 11, 12]
    assert [e.seq for e in await store.timeline("r1", after_seq=9, limit=2)] == [10, 11]
    assert [e.seq for e in await store.timeline("r1", after_seq=12)] == []


async def test_checkpoints_of_several_events_stay_within_the_cap(store: Store) -> None:
    capped(store, 5)
    await create(store, "r1")
    for seq in range(4):
        events = [event("step_started", "A"), event("step_completed", "A"), event("note")]
        committed = await store.commit(
            "r1", expected_seq=seq, token=None, checkpoint=checkpoint(events=events)
        )
    assert committed.event_seq == 13
    kept = [e.seq for e in await store.timeline("r1")]
    # The newest events, in order, ending at the last; SQLite trims whole checkpoints,
    # so it may keep a few fewer than the cap, never more.
    assert 3 <= len(kept) <= 5
    assert kept == list(range(14 - len(kept), 14))
    loaded = await store.load_run("r1")
    assert loaded is not None and loaded.event_seq == 13


async def test_sqlite_keeps_a_write_larger_than_the_cap_whole(tmp_path: Any) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'x.db'}", timeline_cap=3)
    await store.open()
    try:
        await create(store, "r1")
        await store.append_timeline("r1", [event("one")])
        assert await store.append_timeline("r1", [event(f"e{n}") for n in range(5)]) == 7
        assert [e.seq for e in await store.timeline("r1")] == [3, 4, 5, 6, 7]
        await store.append_timeline("r1", [event("next")])
        assert [e.seq for e in await store.timeline("r1")] == [8]
    finally:
        await store.close()


async def test_a_cap_of_zero_keeps_every_event(store: Store) -> None:
    capped(store, 0)
    await create(store, "r1")
    for n in range(2, 30):
        await store.append_timeline("r1", [event(f"e{n}")])
    assert [e.seq for e in await store.timeline("r1")] == list(range(1, 30))


async def test_a_run_nearing_the_cap_is_warned_about_once(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    capped(store, 10)
    await create(store, "r1")
    with caplog.at_level(logging.WARNING, logger="holon.stores.timeline"):
        for _ in range(2, 8):
            await store.append_timeline("r1", [event("e")])
        assert caplog.records == []
        for seq in range(6):
            await store.commit(
                "r1",
                expected_seq=seq,
                token=None,
                checkpoint=checkpoint(events=[event("a"), event("b")]),
            )
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings
    assert "run 'r1'" in warnings[0] and "timeline_cap of 10" in warnings[0]


def test_the_cap_is_set_by_argument_or_url_and_checked(tmp_path: Any) -> None:
    assert MemoryStore(timeline_cap=50).timeline_cap == 50
    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert SQLiteStore(url + "?timeline_cap=20").timeline_cap == 20
    assert SQLiteStore(url + "?timeline_cap=20", timeline_cap=7).timeline_cap == 7
    assert SQLiteStore(url + "?timeline_cap=0").timeline_cap == 0
    with pytest.raises(StoreError, match="timeline_cap must be a whole number"):
        SQLiteStore(url + "?timeline_cap=lots")
    with pytest.raises(StoreError, match="timeline_cap must be a whole number"):
        MemoryStore(timeline_cap=-1)


# -- retention per final status ---------------------------------------------------------


def retaining(store: Store, retention: Retention) -> Any:
    """`store` keeping finished runs as `retention` says (stores read it at each write
    and purge)."""
    shape: Any = store
    shape.retention = retention
    return shape


async def finish(store: Store, run_id: str, status: RunStatus) -> None:
    await create(store, run_id)
    await store.commit(run_id, expected_seq=0, token=None, checkpoint=checkpoint(status))


async def test_each_final_status_is_kept_for_its_own_time(store: Store) -> None:
    shape = retaining(store, Retention(completed=60, failed=120, stopped=0, rejected=30))
    for status in (*sorted(TERMINAL_STATUSES), RunStatus.WAITING):
        await finish(store, status.value, status)
    ended = NOW + 1  # when `checkpoint(...)` commits

    async def left() -> set[str]:
        return {s.run_id for s in (await store.list_runs()).items}

    assert await shape.purge_expired(ended) == ["stopped"]
    assert await shape.purge_expired(ended + 29) == []
    assert await shape.purge_expired(ended + 30) == ["rejected"]
    assert await shape.purge_expired(ended + 60) == ["completed"]
    assert await left() == {"failed", "expired", "waiting"}
    assert await shape.purge_expired(ended + 120) == ["failed"]
    # No retention for `expired`, and a run that has not finished is never deleted.
    assert await shape.purge_expired(ended + 10**9) == []
    assert await left() == {"expired", "waiting"}
    assert await store.load_run("failed") is None
    with pytest.raises(RunNotFound):
        await store.timeline("failed")
    assert await store.count_runs() == {RunStatus.EXPIRED: 1, RunStatus.WAITING: 1}


async def test_claiming_purges_what_is_due(store: Store) -> None:
    retaining(store, Retention(failed=dt.timedelta(minutes=1)))
    await finish(store, "failed", RunStatus.FAILED)
    await finish(store, "completed", RunStatus.COMPLETED)
    await create(store, "queued")
    grants = await store.claim("w", ["wf"], 10, 10, NOW + 61)
    assert [g.run_id for g in grants] == ["queued"]
    assert await store.load_run("failed") is None
    assert await store.load_run("completed") is not None


async def test_by_default_every_finished_run_is_kept(store: Store) -> None:
    shape: Any = store
    assert shape.retention == Retention() and shape.retention.keeps_everything
    for status in sorted(TERMINAL_STATUSES):
        await finish(store, status.value, status)
    assert await shape.purge_expired(NOW + 10**9) == []
    await store.claim("w", ["wf"], 10, 10, NOW + 10**9)
    assert len((await store.list_runs()).items) == len(TERMINAL_STATUSES)


def test_retention_is_set_by_argument_or_url_and_checked(tmp_path: Any) -> None:
    week = Retention(completed=dt.timedelta(days=7))
    assert week.completed == 604_800.0 and week.keep_for("completed") == 604_800.0
    assert week.keep_for(RunStatus.FAILED) is None and week.keep_for("running") is None
    assert week.kept == {RunStatus.COMPLETED: 604_800.0}
    assert MemoryStore(retention=week).retention == week
    url = f"sqlite:///{tmp_path / 'x.db'}"
    from_url = SQLiteStore(url + "?failed_ttl=30&stopped_ttl=0").retention
    assert from_url == Retention(failed=30, stopped=0)
    assert SQLiteStore(url + "?failed_ttl=30", retention=week).retention == week
    redis = RedisStore("redis://h:6379/0?rejected_ttl=5", completed_ttl=9)
    assert redis.retention == Retention(completed=9, rejected=5) and redis.completed_ttl == 9
    with pytest.raises(StoreError, match="failed_ttl must be seconds >= 0, got 'soon'"):
        SQLiteStore(url + "?failed_ttl=soon")
    with pytest.raises(StoreError, match="expired_ttl must be seconds >= 0"):
        RedisStore("redis://h:6379/0?expired_ttl=-1")
    with pytest.raises(ValueError, match="Retention.stopped must be seconds >= 0"):
        Retention(stopped=-5)
    with pytest.raises(ValueError, match="Retention.failed must be seconds"):
        Retention(failed="a week")  # type: ignore[arg-type]
