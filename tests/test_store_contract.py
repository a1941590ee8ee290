"""The store contract (DESIGN §4): every store passes every test here."""

from __future__ import annotations

import pytest

from holon.errors import RunNotFound, SeqConflict, StaleLease
from holon.stores.base import (
    Checkpoint,
    Control,
    Cursor,
    NewEvent,
    RunBody,
    RunRecord,
    RunStatus,
    Store,
)

pytestmark = pytest.mark.anyio

NOW = 1_000.0


def record(run_id: str, workflow: str = "wf", *, created: float = NOW) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        workflow=workflow,
        version="v1",
        status=RunStatus.QUEUED,
        input={"topic": "ünïcode ✓", "n": 3},
        body=RunBody(cursor=Cursor(step="__start__"), state={"count": 0}),
        created_at=created,
        updated_at=created,
    )


def event(kind: str, step: str | None = None, **data: object) -> NewEvent:
    return NewEvent(kind=kind, at=NOW, step=step, data=dict(data))


async def create(store: Store, run_id: str, workflow: str = "wf", created: float = NOW) -> None:
    await store.create_run(record(run_id, workflow, created=created), [event("started")])


def checkpoint(status: RunStatus = RunStatus.RUNNING, **kwargs: object) -> Checkpoint:
    body = RunBody(cursor=Cursor(step="B"), state={"count": 1})
    return Checkpoint(status=status, body=body, at=NOW + 1, **kwargs)  # type: ignore[arg-type]


async def test_create_is_idempotent_on_run_id(store: Store) -> None:
    first, created = await store.create_run(record("r1"), [event("started")])
    assert created and first.seq == 0 and first.event_seq == 1
    again = record("r1", workflow="other")
    second, created_again = await store.create_run(again, [event("started")])
    assert not created_again
    assert second.workflow == "wf"
    assert len(await store.timeline("r1")) == 1


async def test_load_round_trips_the_record(store: Store) -> None:
    await create(store, "r1")
    loaded = await store.load_run("r1")
    assert loaded is not None
    assert loaded.input == {"topic": "ünïcode ✓", "n": 3}
    assert loaded.body.state == {"count": 0}
    assert loaded.status == RunStatus.QUEUED
    assert loaded.lease is None and loaded.control is None
    assert await store.load_run("missing") is None


async def test_list_runs_filters_and_pages_newest_first(store: Store) -> None:
    for i in range(7):
        await create(store, f"r{i}", workflow="a" if i % 2 else "b", created=NOW + i)
    page = await store.list_runs(limit=3)
    assert [s.run_id for s in page.items] == ["r6", "r5", "r4"]
    assert page.next_cursor is not None
    page2 = await store.list_runs(limit=3, cursor=page.next_cursor)
    assert [s.run_id for s in page2.items] == ["r3", "r2", "r1"]
    page3 = await store.list_runs(limit=3, cursor=page2.next_cursor)
    assert [s.run_id for s in page3.items] == ["r0"] and page3.next_cursor is None
    only_a = await store.list_runs(workflow="a")
    assert [s.run_id for s in only_a.items] == ["r5", "r3", "r1"]
    grant = await store.acquire_lease("r3", "w", 10, NOW)
    assert grant is not None
    running = await store.list_runs(status=RunStatus.RUNNING)
    assert [s.run_id for s in running.items] == ["r3"]


async def test_acquire_sets_running_and_fences(store: Store) -> None:
    await create(store, "r1")
    grant = await store.acquire_lease("r1", "w1", 10, NOW)
    # Tokens only grow (on Redis they are at least the server's clock in microseconds).
    assert grant is not None and grant.token >= 1 and not grant.recovered
    loaded = await store.load_run("r1")
    assert loaded is not None and loaded.status == RunStatus.RUNNING
    assert loaded.fence == grant.token
    assert loaded.lease is not None and loaded.lease.owner == "w1"
    assert await store.acquire_lease("r1", "w2", 10, NOW + 5) is None
    taken = await store.acquire_lease("r1", "w2", 10, NOW + 11)
    assert taken is not None and taken.token > grant.token and taken.recovered


async def test_acquire_refuses_runs_that_are_not_runnable(store: Store) -> None:
    await create(store, "r1")
    grant = await store.acquire_lease("r1", "w", 10, NOW)
    assert grant is not None
    await store.commit(
        "r1",
        expected_seq=0,
        token=grant.token,
        checkpoint=checkpoint(RunStatus.WAITING, release_lease=True),
    )
    assert await store.acquire_lease("r1", "w", 10, NOW) is None
    with pytest.raises(RunNotFound):
        await store.acquire_lease("missing", "w", 10, NOW)


async def test_renew_extends_and_reports_control(store: Store) -> None:
    await create(store, "r1")
    grant = await store.acquire_lease("r1", "w1", 10, NOW)
    assert grant is not None
    assert await store.renew_lease("r1", grant.token, 10, NOW + 8) is None
    assert await store.acquire_lease("r1", "w2", 10, NOW + 12) is None  # renewed to 18
    await store.request("r1", Control(kind="stop", at=NOW, by="op"))
    control = await store.renew_lease("r1", grant.token, 10, NOW + 9)
    assert control is not None and control.kind == "stop" and control.by == "op"
    taken = await store.acquire_lease("r1", "w2", 10, NOW + 30)
    assert taken is not None
    with pytest.raises(StaleLease):
        await store.renew_lease("r1", grant.token, 10, NOW + 31)


async def test_commit_writes_checkpoint_results_and_events(store: Store) -> None:
    await create(store, "r1")
    grant = await store.acquire_lease("r1", "w", 10, NOW)
    assert grant is not None
    committed = await store.commit(
        "r1",
        expected_seq=0,
        token=grant.token,
        checkpoint=checkpoint(
            results={"A": {"x": [1, 2]}},
            events=[event("step_completed", "A"), event("step_started", "B")],
        ),
    )
    assert committed.seq == 1 and committed.event_seq == 3 and committed.control is None
    loaded = await store.load_run("r1")
    assert loaded is not None
    assert loaded.seq == 1 and loaded.body.state == {"count": 1}
    assert loaded.results == {"A": {"x": [1, 2]}}
    assert loaded.updated_at == NOW + 1
    await store.commit(
        "r1", expected_seq=1, token=grant.token, checkpoint=checkpoint(results={"B": "b"})
    )
    loaded = await store.load_run("r1")
    assert loaded is not None and loaded.results == {"A": {"x": [1, 2]}, "B": "b"}
    events = await store.timeline("r1")
    assert [(e.seq, e.kind, e.step) for e in events] == [
        (1, "started", None),
        (2, "step_completed", "A"),
        (3, "step_started", "B"),
    ]


async def test_commit_with_stale_token_is_refused_and_changes_nothing(store: Store) -> None:
    await create(store, "r1")
    old = await store.acquire_lease("r1", "w1", 10, NOW)
    new = await store.acquire_lease("r1", "w2", 10, NOW + 20)
    assert old is not None and new is not None
    with pytest.raises(StaleLease):
        await store.commit(
            "r1", expected_seq=0, token=old.token, checkpoint=checkpoint(events=[event("x")])
        )
    loaded = await store.load_run("r1")
    assert loaded is not None and loaded.seq == 0 and loaded.body.state == {"count": 0}
    assert len(await store.timeline("r1")) == 1
    await store.commit("r1", expected_seq=0, token=new.token, checkpoint=checkpoint())


async def test_commit_with_old_sequence_is_refused(store: Store) -> None:
    await create(store, "r1")
    grant = await store.acquire_lease("r1", "w", 10, NOW)
    assert grant is not None
    await store.commit("r1", expected_seq=0, token=grant.token, checkpoint=checkpoint())
    with pytest.raises(SeqConflict):
        await store.commit(
            "r1", expected_seq=0, token=grant.token, checkpoint=checkpoint(events=[event("x")])
        )
    with pytest.raises(SeqConflict):
        await store.commit("r1", expected_seq=0, token=None, checkpoint=checkpoint())
    loaded = await store.load_run("r1")
    assert loaded is not None and loaded.seq == 1 and loaded.event_seq == 1


async def test_commit_after_release_with_token_is_refused(store: Store) -> None:
    await create(store, "r1")
    grant = await store.acquire_lease("r1", "w", 10, NOW)
    assert grant is not None
    await store.commit(
        "r1",
        expected_seq=0,
        token=grant.token,
        checkpoint=checkpoint(RunStatus.WAITING, release_lease=True),
    )
    loaded = await store.load_run("r1")
    assert loaded is not None and loaded.lease is None and loaded.fence == grant.token
    with pytest.raises(StaleLease):
        await store.commit("r1", expected_seq=1, token=grant.token, checkpoint=checkpoint())
    await store.commit("r1", expected_seq=1, token=None, checkpoint=checkpoint(RunStatus.QUEUED))
    regrant = await store.acquire_lease("r1", "w", 10, NOW)
    assert regrant is not None and regrant.token > grant.token and not regrant.recovered


async def test_release_lease_only_with_current_token(store: Store) -> None:
    await create(store, "r1")
    grant = await store.acquire_lease("r1", "w", 10, NOW)
    assert grant is not None
    await store.release_lease("r1", grant.token + 1)
    loaded = await store.load_run("r1")
    assert loaded is not None and loaded.lease is not None
    await store.release_lease("r1", grant.token)
    loaded = await store.load_run("r1")
    assert loaded is not None and loaded.lease is None and loaded.status == RunStatus.RUNNING
    again = await store.acquire_lease("r1", "w2", 10, NOW)
    assert again is not None and again.recovered


async def test_control_request_survives_commits_until_cleared(store: Store) -> None:
    await create(store, "r1")
    grant = await store.acquire_lease("r1", "w", 10, NOW)
    assert grant is not None
    requested = await store.request("r1", Control(kind="pause", at=NOW, by="op"))
    assert requested.control is not None and requested.seq == 0
    committed = await store.commit("r1", expected_seq=0, token=grant.token, checkpoint=checkpoint())
    assert committed.control is not None and committed.control.kind == "pause"
    committed = await store.commit(
        "r1",
        expected_seq=1,
        token=grant.token,
        checkpoint=checkpoint(RunStatus.PAUSED, clear_control=True, release_lease=True),
    )
    assert committed.control is None
    with pytest.raises(RunNotFound):
        await store.request("missing", Control(kind="stop", at=NOW))


async def test_claim_takes_what_needs_an_executor(store: Store) -> None:
    await create(store, "queued", created=NOW)
    await create(store, "orphan", created=NOW + 1)
    await create(store, "live", created=NOW + 2)
    await create(store, "timer", created=NOW + 3)
    await create(store, "sleeping", created=NOW + 4)
    await create(store, "done", created=NOW + 5)
    await create(store, "elsewhere", workflow="other", created=NOW + 6)
    tokens = {}
    for run_id in ("orphan", "live", "timer", "sleeping", "done"):
        grant = await store.acquire_lease(run_id, "w0", 10, NOW)
        assert grant is not None
        tokens[run_id] = grant.token
    for run_id, wake_at in (("timer", NOW + 50), ("sleeping", NOW + 500)):
        loaded = await store.load_run(run_id)
        assert loaded is not None
        await store.commit(
            run_id,
            expected_seq=0,
            token=loaded.fence,
            checkpoint=checkpoint(RunStatus.WAITING, wake_at=wake_at, release_lease=True),
        )
    await store.commit(
        "done",
        expected_seq=0,
        token=tokens["done"],
        checkpoint=checkpoint(RunStatus.COMPLETED, release_lease=True),
    )
    await store.renew_lease("live", tokens["live"], 1000, NOW)
    grants = await store.claim("w1", ["wf"], 10, 10, NOW + 60)
    claimed = {g.run_id: g for g in grants}
    assert set(claimed) == {"queued", "orphan", "timer"}
    assert claimed["orphan"].recovered and not claimed["queued"].recovered
    timer = await store.load_run("timer")
    assert timer is not None and timer.status == RunStatus.WAITING
    assert timer.lease is not None and timer.lease.owner == "w1"
    assert await store.claim("w2", ["wf"], 10, 10, NOW + 61) == []


async def test_claim_respects_limit(store: Store) -> None:
    for i in range(5):
        await create(store, f"r{i}", created=NOW + i)
    first = await store.claim("w", ["wf"], 2, 10, NOW)
    assert [g.run_id for g in first] == ["r0", "r1"]
    second = await store.claim("w", ["wf"], 10, 10, NOW)
    assert [g.run_id for g in second] == ["r2", "r3", "r4"]
    assert await store.claim("w", [], 10, 10, NOW) == []


async def test_claim_by_version_takes_only_runs_on_the_versions_named(store: Store) -> None:
    for run_id, version, created in (
        ("a1", "v1", NOW),
        ("b2", "v2", NOW + 1),
        ("c1", "v1", NOW + 2),
    ):
        stored = record(run_id, created=created).model_copy(update={"version": version})
        await store.create_run(stored, [event("started")])
    await create(store, "other", workflow="wf2", created=NOW + 3)
    assert await store.claim("w", ["wf"], 10, 10, NOW, versions={"wf": []}) == []
    on_v2 = await store.claim("w", ["wf", "wf2"], 10, 10, NOW, versions={"wf": ["v2"]})
    assert sorted(g.run_id for g in on_v2) == ["b2", "other"]  # wf2: any version
    on_v1 = await store.claim("w", ["wf"], 10, 10, NOW, versions={"wf": ["v1", "v3"]})
    assert [g.run_id for g in on_v1] == ["a1", "c1"]


async def test_a_run_moved_to_a_newer_version_is_claimed_on_it(store: Store) -> None:
    await create(store, "r1")  # started on v1
    grant = await store.acquire_lease("r1", "w", 10, NOW)
    assert grant is not None
    moved = checkpoint(RunStatus.RUNNING, release_lease=True, version="v2")
    await store.commit("r1", expected_seq=0, token=grant.token, checkpoint=moved)
    assert await store.claim("w", ["wf"], 10, 10, NOW, versions={"wf": ["v1"]}) == []
    (taken,) = await store.claim("w", ["wf"], 10, 10, NOW, versions={"wf": ["v2"]})
    assert taken.run_id == "r1" and taken.recovered  # it was running, its lease let go
    loaded = await store.load_run("r1")
    assert loaded is not None and loaded.version == "v1"  # the version it started on
    await store.commit(
        "r1",
        expected_seq=1,
        token=taken.token,
        checkpoint=checkpoint(RunStatus.QUEUED, release_lease=True),
    )
    assert [g.run_id for g in await store.claim("w", ["wf"], 10, 10, NOW)] == ["r1"]


async def test_timeline_after_and_limit(store: Store) -> None:
    await create(store, "r1")
    grant = await store.acquire_lease("r1", "w", 10, NOW)
    assert grant is not None
    await store.commit(
        "r1",
        expected_seq=0,
        token=grant.token,
        checkpoint=checkpoint(
            events=[event("a", "A", n=1), event("b", "B", n=2), event("c", None)]
        ),
    )
    tail = await store.timeline("r1", after_seq=2)
    assert [(e.seq, e.kind, e.data) for e in tail] == [(3, "b", {"n": 2}), (4, "c", {})]
    assert [e.seq for e in await store.timeline("r1", limit=2)] == [1, 2]
    with pytest.raises(RunNotFound):
        await store.timeline("missing")


async def test_quarantine_fails_one_run_only(store: Store) -> None:
    await create(store, "bad")
    await create(store, "good")
    grant = await store.acquire_lease("bad", "w", 10, NOW)
    assert grant is not None
    await store.quarantine("bad", "body is not JSON", NOW + 1)
    bad = await store.load_run("bad")
    good = await store.load_run("good")
    assert bad is not None and good is not None
    assert bad.status == RunStatus.FAILED and bad.lease is None
    assert bad.body.error is not None and "corrupt record" in bad.body.error.message
    assert good.status == RunStatus.QUEUED
    assert (await store.timeline("bad"))[-1].kind == "failed"


async def test_definitions_catalogue(store: Store) -> None:
    await store.put_definition("wf", "v1", {"name": "wf", "version": "v1", "steps": ["A"]})
    await store.put_definition("wf", "v2", {"name": "wf", "version": "v2", "steps": ["A", "B"]})
    await store.put_definition("wf", "v1", {"name": "wf", "version": "v1", "steps": ["A*"]})
    docs = sorted(await store.definitions(), key=lambda d: d["version"])
    assert docs == [
        {"name": "wf", "version": "v1", "steps": ["A*"]},
        {"name": "wf", "version": "v2", "steps": ["A", "B"]},
    ]


async def test_waiting_index_is_replaced_cleared_and_paged(store: Store) -> None:
    for i in range(5):
        await create(store, f"r{i}")
        await store.commit(
            f"r{i}",
            expected_seq=0,
            token=None,
            checkpoint=checkpoint(
                RunStatus.WAITING, wait_keys=["event:paid", f"approver:{'ab'[i % 2]}"]
            ),
        )
    page = await store.find_waiting("event:paid", limit=2)
    assert page.items == ["r0", "r1"] and page.next_cursor is not None
    page = await store.find_waiting("event:paid", limit=2, cursor=page.next_cursor)
    assert page.items == ["r2", "r3"]
    page = await store.find_waiting("event:paid", limit=2, cursor=page.next_cursor)
    assert page.items == ["r4"] and page.next_cursor is None
    assert (await store.find_waiting("approver:b")).items == ["r1", "r3"]
    # None leaves the keys alone; a list replaces them; [] clears them.
    await store.commit("r1", expected_seq=1, token=None, checkpoint=checkpoint(RunStatus.WAITING))
    assert (await store.find_waiting("approver:b")).items == ["r1", "r3"]
    await store.commit(
        "r1",
        expected_seq=2,
        token=None,
        checkpoint=checkpoint(RunStatus.WAITING, wait_keys=["event:shipped"]),
    )
    assert (await store.find_waiting("approver:b")).items == ["r3"]
    assert (await store.find_waiting("event:shipped")).items == ["r1"]
    await store.commit(
        "r3", expected_seq=1, token=None, checkpoint=checkpoint(RunStatus.QUEUED, wait_keys=[])
    )
    assert (await store.find_waiting("approver:b")).items == []
    assert "r3" not in (await store.find_waiting("event:paid")).items
    await store.quarantine("r0", "garbled", NOW)
    assert "r0" not in (await store.find_waiting("event:paid")).items
    assert (await store.find_waiting("nothing")).items == []


async def finish(store: Store, run_id: str, status: RunStatus, at: float = NOW + 1) -> None:
    loaded = await store.load_run(run_id)
    assert loaded is not None
    body = RunBody(cursor=None, state={"count": 1})
    await store.commit(
        run_id,
        expected_seq=loaded.seq,
        token=None,
        checkpoint=Checkpoint(
            status=status,
            body=body,
            at=at,
            results={"A": 1},
            events=[event(status.value)],
            wait_keys=["event:x"] if status == RunStatus.WAITING else None,
        ),
    )


async def test_count_runs_by_status(store: Store) -> None:
    assert await store.count_runs() == {}
    for i in range(3):
        await create(store, f"a{i}", workflow="a", created=NOW + i)
    await create(store, "b0", workflow="b")
    await finish(store, "a0", RunStatus.COMPLETED)
    await finish(store, "a1", RunStatus.WAITING)
    assert await store.count_runs(workflow="a") == {
        RunStatus.COMPLETED: 1,
        RunStatus.WAITING: 1,
        RunStatus.QUEUED: 1,
    }
    assert await store.count_runs() == {
        RunStatus.COMPLETED: 1,
        RunStatus.WAITING: 1,
        RunStatus.QUEUED: 2,
    }
    assert await store.count_runs(workflow="nothing") == {}


async def test_delete_runs_removes_finished_runs_only(store: Store) -> None:
    for i, status in enumerate(
        [RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.STOPPED, RunStatus.WAITING]
    ):
        await create(store, f"r{i}", created=NOW + i)
        await finish(store, f"r{i}", status)
    await create(store, "queued", created=NOW + 10)
    deleted = await store.delete_runs(["r2", "r0", "r3", "queued", "missing", "r0"])
    assert deleted == ["r2", "r0"]
    for gone in ("r0", "r2"):
        assert await store.load_run(gone) is None
        with pytest.raises(RunNotFound):
            await store.timeline(gone)
    listed = [s.run_id for s in (await store.list_runs()).items]
    assert listed == ["queued", "r3", "r1"]
    kept = await store.load_run("r1")
    assert kept is not None and kept.results == {"A": 1}
    assert (await store.find_waiting("event:x")).items == ["r3"]
    assert await store.count_runs() == {
        RunStatus.FAILED: 1,
        RunStatus.WAITING: 1,
        RunStatus.QUEUED: 1,
    }
    assert await store.delete_runs([]) == []
    # A deleted id can be used again: nothing of the old run is left behind.
    await create(store, "r0")
    assert [e.kind for e in await store.timeline("r0")] == ["started"]
    fresh = await store.load_run("r0")
    assert fresh is not None and fresh.results == {}


async def test_run_progress_reads_status_and_sequences_only(store: Store) -> None:
    assert await store.run_progress("missing") is None
    await create(store, "r1")
    progress = await store.run_progress("r1")
    assert progress is not None
    assert (progress.status, progress.seq, progress.event_seq) == (RunStatus.QUEUED, 0, 1)
    grant = await store.acquire_lease("r1", "w", 10, NOW)
    assert grant is not None
    await store.commit(
        "r1",
        expected_seq=0,
        token=grant.token,
        checkpoint=checkpoint(events=[event("a"), event("b")]),
    )
    progress = await store.run_progress("r1")
    assert progress is not None
    assert (progress.status, progress.seq, progress.event_seq) == (RunStatus.RUNNING, 1, 3)


async def test_append_timeline_adds_events_and_leaves_the_checkpoint(store: Store) -> None:
    await create(store, "r1")
    grant = await store.acquire_lease("r1", "w", 30, NOW)
    assert grant is not None
    committed = await store.commit(
        "r1", expected_seq=0, token=grant.token, checkpoint=checkpoint(events=[event("a")])
    )
    before = await store.load_run("r1")
    assert before is not None
    event_seq = await store.append_timeline(
        "r1", [event("decision_refused", "Gate", by="bob"), event("note", k=1)]
    )
    assert event_seq == committed.event_seq + 2
    after = await store.load_run("r1")
    assert after is not None
    assert after.event_seq == event_seq
    assert (after.seq, after.status, after.body, after.lease) == (
        before.seq,
        before.status,
        before.body,
        before.lease,
    )
    # The executor's next commit is not disturbed, and its events come after.
    next_commit = await store.commit(
        "r1", expected_seq=1, token=grant.token, checkpoint=checkpoint(events=[event("b")])
    )
    assert next_commit.seq == 2 and next_commit.event_seq == event_seq + 1
    timeline = await store.timeline("r1")
    assert [(e.seq, e.kind) for e in timeline] == [
        (1, "started"),
        (2, "a"),
        (3, "decision_refused"),
        (4, "note"),
        (5, "b"),
    ]
    assert timeline[2].step == "Gate" and timeline[2].data == {"by": "bob"}
    progress = await store.run_progress("r1")
    assert progress is not None and progress.event_seq == 5
    with pytest.raises(RunNotFound):
        await store.append_timeline("missing", [event("x")])


async def test_the_list_of_live_executors(store: Store) -> None:
    await store.put_worker("w1", {"claims": {"wf": ["v1"]}, "pid": 1}, NOW + 10)
    await store.put_worker("w2", {"claims": {"wf": ["v2"]}}, NOW + 5)
    assert [w["name"] for w in await store.workers(NOW)] == ["w1", "w2"]
    (w1,) = [w for w in await store.workers(NOW) if w["name"] == "w1"]
    assert w1 == {"claims": {"wf": ["v1"]}, "pid": 1, "name": "w1", "expires_at": NOW + 10}
    assert [w["name"] for w in await store.workers(NOW + 6)] == ["w1"]  # w2 fell silent
    await store.put_worker("w2", {"claims": {}}, NOW + 20)  # back
    await store.put_worker("w1", {"claims": {}}, NOW + 30)  # said again: lives longer
    assert [w["name"] for w in await store.workers(NOW + 15)] == ["w1", "w2"]
    await store.remove_worker("w1")
    await store.remove_worker("nobody")
    assert [w["name"] for w in await store.workers(NOW + 15)] == ["w2"]


async def test_schedules_are_kept_replaced_and_forgotten(store: Store) -> None:
    assert await store.schedules() == []
    await store.put_schedule("nightly", {"name": "nightly", "cron": "0 2 * * *"})
    await store.put_schedule("hourly", {"name": "hourly", "every": 3600.0})
    await store.put_schedule("nightly", {"name": "nightly", "cron": "0 3 * * *", "paused": True})
    assert await store.schedules() == [
        {"name": "hourly", "every": 3600.0},
        {"name": "nightly", "cron": "0 3 * * *", "paused": True},
    ]
    assert await store.delete_schedule("hourly") is True
    assert await store.delete_schedule("hourly") is False
    assert [s["name"] for s in await store.schedules()] == ["nightly"]


async def test_a_schedule_is_patched_field_by_field(store: Store) -> None:
    await store.put_schedule("s", {"name": "s", "paused": False, "last_tick": None, "n": 1.5})
    assert await store.patch_schedule("s", {"paused": True}) is True
    assert await store.patch_schedule("s", {"last_tick": 1_000.25, "last_run": "r"}) is True
    assert await store.schedules() == [
        {"name": "s", "paused": True, "last_tick": 1_000.25, "n": 1.5, "last_run": "r"}
    ]
    assert await store.patch_schedule("s", {"n": None}) is True
    assert "n" not in (await store.schedules())[0]  # None removes a field
    assert await store.patch_schedule("s", {"n": 1.5}) is True
    assert await store.patch_schedule("missing", {"paused": True}) is False
    assert await store.schedules() == [
        {"name": "s", "paused": True, "last_tick": 1_000.25, "n": 1.5, "last_run": "r"}
    ]


async def test_a_concurrency_limit_caps_the_runs_holding_a_lease(store: Store) -> None:
    from holon.errors import StoreError
    from holon.stores.redis import RedisStore

    for i in range(4):
        await create(store, f"a{i}", created=NOW + i)
    await create(store, "other", workflow="free", created=NOW + 9)
    if isinstance(store, RedisStore) and store.cluster:
        with pytest.raises(StoreError, match="Cluster"):
            await store.claim("w1", ["wf"], 10, 10, NOW, limits={"wf": 2})
        return
    first = await store.claim("w1", ["wf", "free"], 10, 10, NOW, limits={"wf": 2})
    # two of wf (the oldest), and the other workflow's run, which has no limit
    assert sorted(g.run_id for g in first) == ["a0", "a1", "other"]
    assert await store.claim("w2", ["wf"], 10, 10, NOW, limits={"wf": 2}) == []
    assert await store.acquire_lease("a2", "w2", 10, NOW, limit=2) is None
    assert await store.acquire_lease("a2", "w2", 10, NOW, limit=3) is not None
    # a released lease frees its place; so does one that expired
    a0 = next(g for g in first if g.run_id == "a0")
    await store.release_lease("a0", a0.token)
    again = await store.claim("w2", ["wf"], 10, 10, NOW + 1, limits={"wf": 3})
    assert len(again) == 1 and again[0].run_id in ("a0", "a3")  # a1 and a2 hold theirs
    later = await store.claim("w3", ["wf"], 10, 10, NOW + 11, limits={"wf": 3})
    assert len(later) == 3  # every lease expired: three of the four runs, no more


async def test_an_inbox_keeps_events_once_bounded_until_they_expire(store: Store) -> None:
    def doc(event_id: str) -> dict[str, object]:
        return {"event_id": event_id, "name": "paid", "payload": {"order": event_id}}

    keep = store.keep_event
    assert await keep("run:r1", "e1", doc("e1"), expires_at=NOW + 10, most=2, now=NOW)
    assert await keep("run:r1", "e1", doc("e1"), expires_at=NOW + 10, most=2, now=NOW)
    assert await keep("run:r1", "e2", doc("e2"), expires_at=NOW + 5, most=2, now=NOW + 1)
    # full: a third is refused, the two kept stay
    assert not await keep("run:r1", "e3", doc("e3"), expires_at=NOW + 10, most=2, now=NOW + 2)
    assert await store.kept_events("run:r1", NOW + 2) == [doc("e1"), doc("e2")]
    assert await store.kept_events("run:other", NOW) == []
    # e2 expires: read no more, and its place is free again
    assert await store.kept_events("run:r1", NOW + 5) == [doc("e1")]
    assert await keep("run:r1", "e3", doc("e3"), expires_at=NOW + 20, most=2, now=NOW + 6)
    await store.drop_kept_event("run:r1", "e1")
    await store.drop_kept_event("run:r1", "missing")
    assert await store.kept_events("run:r1", NOW + 6) == [doc("e3")]
