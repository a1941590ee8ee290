"""The Redis store beyond the shared contract: key layout, prefixes, corrupt records,
clear errors, leases on the server's clock, group commit, retention and the timeline cap.

Tests that need a real server use `REDIS_URL` under a unique key prefix (deleted
afterwards) or a private `redis-server` on a free port."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import fakeredis
import pytest
import redis.asyncio as aioredis

from holon import END, START, Workflow, WorkflowRunner
from holon.errors import CorruptRecord, SeqConflict, StoreError
from holon.stores import open_store
from holon.stores.base import (
    Checkpoint,
    Cursor,
    NewEvent,
    RunBody,
    RunRecord,
    RunStatus,
    Store,
)
from holon.stores.redis import RedisStore, safe_url
from holon.stores.redis_codec import _event_args
from tests.conftest import REDIS_URL
from tests.redis_support import (
    RedisProcess,
    delete_prefix,
    free_port,
    have_redis_server,
    redis_answers,
)

pytestmark = pytest.mark.anyio

NOW = 1_000.0


def record(run_id: str, workflow: str = "wf", created: float = NOW) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        workflow=workflow,
        version="v1",
        status=RunStatus.QUEUED,
        input={"n": 1},
        body=RunBody(cursor=Cursor(step="__start__")),
        created_at=created,
        updated_at=created,
    )


def checkpoint(status: RunStatus = RunStatus.RUNNING, **kwargs: Any) -> Checkpoint:
    return Checkpoint(status=status, body=RunBody(cursor=Cursor(step="B")), at=NOW, **kwargs)


def fake_store(**kwargs: Any) -> RedisStore:
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(), decode_responses=True)
    return RedisStore("redis://fake/0", client=client, lease_clock="caller", **kwargs)


def need_redis() -> None:
    if not redis_answers(REDIS_URL):
        pytest.skip(f"no Redis answers at {REDIS_URL}")


def need_redis_server() -> None:
    if not have_redis_server():
        pytest.skip("redis-server is not installed")


@pytest.fixture
def prefix() -> Iterator[str]:
    """A unique key prefix on the shared test Redis, its keys deleted afterwards."""
    need_redis()
    name = f"holon-test:{uuid.uuid4().hex[:12]}:"
    yield name
    delete_prefix(REDIS_URL, name)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    need_redis_server()
    server = RedisProcess(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.kill()


async def opened(store: RedisStore) -> RedisStore:
    await store.open()
    return store


@pytest.fixture
async def fake() -> AsyncIterator[RedisStore]:
    store = await opened(fake_store())
    yield store
    await store.close()


# -- key layout and prefixes ---------------------------------------------------------------


async def test_every_key_of_a_run_shares_one_hash_tag(fake: RedisStore) -> None:
    for run_id in ("plain", "with{braces}", "}starts-with-close", "100%"):
        await fake.create_run(record(run_id), [NewEvent(kind="started", at=NOW)])
        await fake.commit(
            run_id, expected_seq=0, token=None, checkpoint=checkpoint(results={"A": 1})
        )
        key = fake.run_key(run_id)
        tag = key[key.index("{") + 1 : key.index("}")]
        assert tag and "{" not in tag
        for suffix in ("", ":r", ":t"):
            k = key + suffix
            assert k[k.index("{") + 1 : k.index("}")] == tag
        loaded = await fake.load_run(run_id)
        assert loaded is not None and loaded.results == {"A": 1}


async def test_two_prefixes_on_one_redis_see_none_of_each_others_runs(prefix: str) -> None:
    a = await opened(RedisStore(REDIS_URL, key_prefix=prefix + "a:", lease_clock="caller"))
    b = await opened(RedisStore(REDIS_URL, key_prefix=prefix + "b:", lease_clock="caller"))
    try:
        await a.create_run(record("shared-id"), [])
        await a.create_run(record("only-a"), [])
        await a.commit(
            "only-a",
            expected_seq=0,
            token=None,
            checkpoint=checkpoint(RunStatus.WAITING, wait_keys=["event:x"]),
        )
        assert await b.load_run("only-a") is None
        assert (await b.list_runs()).items == []
        assert await b.count_runs() == {}
        assert (await b.find_waiting("event:x")).items == []
        assert await b.claim("w", ["wf"], 10, 10, NOW) == []
        # The same run id in b is another run.
        _, created = await b.create_run(record("shared-id", workflow="other"), [])
        assert created
        mine = await a.load_run("shared-id")
        assert mine is not None and mine.workflow == "wf"
        assert [s.run_id for s in (await a.list_runs()).items] == ["shared-id", "only-a"]
    finally:
        await a.close()
        await b.close()


async def test_listing_is_paged_through_many_runs(fake: RedisStore) -> None:
    for i in range(250):
        await fake.create_run(record(f"r{i:03}", created=NOW + i), [])
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await fake.list_runs(status=RunStatus.QUEUED, limit=100, cursor=cursor)
        seen += [s.run_id for s in page.items]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == 3 and seen == [f"r{i:03}" for i in reversed(range(250))]


# -- corrupt records -----------------------------------------------------------------------


def two_step_workflow() -> Workflow:
    return Workflow("wf").Flow({START: lambda ctx: "B", "B": lambda ctx: END})


async def readable(store: Store, run_id: str) -> RunRecord | None:
    """The record once it can be read again (after quarantine), else None."""
    try:
        return await store.load_run(run_id)
    except CorruptRecord:
        return None


@pytest.mark.parametrize("damage", ["truncated JSON", "wrong JSON type", "wrong key type"])
async def test_a_corrupt_record_fails_that_run_only(prefix: str, damage: str) -> None:
    wf = two_step_workflow()
    starter_store = await opened(RedisStore(REDIS_URL, key_prefix=prefix))
    try:
        async with WorkflowRunner(wf, starter_store, execute=False) as starter:
            for run_id in ("good-1", "bad", "good-2"):
                await starter.Run(run_id=run_id)
    finally:
        await starter_store.close()
    raw = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    key = starter_store.run_key("bad")
    try:
        if damage == "truncated JSON":
            body = await raw.get(f"{key}:b")
            assert body is not None
            await raw.set(f"{key}:b", body[: len(body) // 2])
        elif damage == "wrong JSON type":
            await raw.set(f"{key}:b", "[1, 2, 3]")
        else:
            await raw.delete(key)
            await raw.set(key, "garbage")
    finally:
        await raw.aclose()
    store = await opened(RedisStore(REDIS_URL, key_prefix=prefix))
    try:
        with pytest.raises(CorruptRecord) as caught:
            await store.load_run("bad")
        assert "'bad'" in str(caught.value)
        async with WorkflowRunner(wf, store) as runner:
            for run_id in ("good-1", "good-2"):
                await (await runner.Get(run_id)).Result(timeout=10)
            with anyio.fail_after(10):
                while (bad := await readable(store, "bad")) is None:
                    await runner.recover_now()
        assert bad.status == RunStatus.FAILED
        assert bad.body.error is not None and "corrupt record" in bad.body.error.message
        assert (await store.timeline("bad"))[-1].kind == "failed"
        for run_id in ("good-1", "good-2"):
            good = await store.load_run(run_id)
            assert good is not None and good.status == RunStatus.COMPLETED
    finally:
        await store.close()


async def test_a_grant_carries_the_record_as_it_is_after_the_lease(fake: RedisStore) -> None:
    for run_id in ("a", "b"):
        await fake.create_run(record(run_id), [NewEvent(kind="started", at=NOW)])
    grants = await fake.claim("worker-1", ["wf"], 10, 30, NOW)
    assert sorted(g.run_id for g in grants) == ["a", "b"]
    # b's lease has run out by then: it is taken again, by one acquisition.
    single = await fake.acquire_lease("b", "worker-2", 30, NOW + 60)
    assert single is not None
    for grant in [grants[0] if grants[0].run_id == "a" else grants[1], single]:
        assert grant.record is not None
        assert grant.record == await fake.load_run(grant.run_id)
        assert grant.record.status == RunStatus.RUNNING
        assert grant.record.lease is not None and grant.record.lease.token == grant.token
    assert single.record is not None and single.record.lease is not None
    assert single.record.lease.owner == "worker-2"


async def test_a_run_id_with_a_control_character_is_refused_before_anything_is_written(
    fake: RedisStore,
) -> None:
    with pytest.raises(StoreError, match="invalid run id .* holds a control character"):
        await fake.create_run(record("a\x1fb"), [NewEvent(kind="started", at=NOW)])
    assert await fake.count_runs() == {}


# -- clear errors ------------------------------------------------------------------------


async def test_connection_refused_names_the_url_without_password() -> None:
    url = f"redis://user:s3cret@127.0.0.1:{free_port()}/0"
    store = RedisStore(url)
    with pytest.raises(StoreError, match="cannot connect") as caught:
        await store.open()
    message = str(caught.value)
    assert "127.0.0.1" in message and "s3cret" not in message and "***" in message
    assert safe_url(url) in message


async def test_auth_failure_and_wrong_db(tmp_path: Path) -> None:
    need_redis_server()
    server = RedisProcess(tmp_path / "auth", options=("--requirepass", "right")).start()
    try:
        wrong = f"redis://:not-the-pass-42@127.0.0.1:{server.port}/0"
        with pytest.raises(StoreError, match="authentication failed") as caught:
            await RedisStore(wrong).open()
        assert "not-the-pass-42" not in str(caught.value) and "***" in str(caught.value)
        no_db = f"redis://:right@127.0.0.1:{server.port}/99"
        with pytest.raises(StoreError, match="no such database") as caught:
            await RedisStore(no_db).open()
        assert f"127.0.0.1:{server.port}/99" in str(caught.value)
    finally:
        server.kill()


async def test_a_key_of_the_wrong_type_under_our_prefix(prefix: str) -> None:
    raw = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        await raw.set(f"{prefix}workflows", "not a set")
    finally:
        await raw.aclose()
    with pytest.raises(StoreError, match="holds a string") as caught:
        await RedisStore(REDIS_URL, key_prefix=prefix).open()
    assert f"{prefix}workflows" in str(caught.value)


async def test_bad_urls_and_options_are_refused() -> None:
    with pytest.raises(StoreError, match="unknown option"):
        RedisStore("redis://localhost/0?colour=blue")
    with pytest.raises(StoreError, match="lease_clock"):
        RedisStore("redis://localhost/0?lease_clock=sundial")
    with pytest.raises(StoreError, match="database must be a number"):
        RedisStore("redis://localhost/zero")._make_client()
    assert isinstance(open_store("redis://localhost:6379/0", key_prefix="p:"), RedisStore)
    assert open_store("redis+cluster://localhost:7000").cluster  # type: ignore[attr-defined]


async def test_eviction_policy_warning_and_waitaof_on_old_servers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    need_redis_server()
    server = RedisProcess(
        tmp_path / "lru", options=("--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru")
    ).start()
    try:
        store = RedisStore(server.url)
        with caplog.at_level(logging.WARNING, logger="holon.stores.redis"):
            await store.open()
        await store.close()
        assert "maxmemory-policy 'allkeys-lru'" in caplog.text
        durable = RedisStore(server.url, durable_ack="aof")
        if durable.server_version and durable.server_version >= "7.2":  # pragma: no cover
            return
        with pytest.raises(StoreError, match=r"WAITAOF, which Redis 7\.2 and newer have"):
            await durable.open()
    finally:
        server.kill()


# -- leases, group commit, scripts -----------------------------------------------------


async def test_server_clock_leases_ignore_the_callers_clock(prefix: str) -> None:
    store = await opened(RedisStore(REDIS_URL, key_prefix=prefix))  # lease_clock="server"
    try:
        await store.create_run(record("r1"), [])
        first = await store.acquire_lease("r1", "w1", 0.3, NOW)
        assert first is not None
        # A worker whose clock runs a day ahead cannot take a live lease.
        assert await store.acquire_lease("r1", "w2", 10, NOW + 86_400) is None
        assert await store.claim("w2", ["wf"], 10, 10, NOW + 86_400) == []
        with anyio.fail_after(5):
            while (taken := await store.acquire_lease("r1", "w2", 10, NOW)) is None:
                await anyio.sleep(0.05)  # sleep-ok: waiting for the server's clock
        assert taken.token > first.token and taken.recovered
    finally:
        await store.close()


async def test_concurrent_commits_share_pipelines(fake: RedisStore) -> None:
    n = 200
    for i in range(n):
        await fake.create_run(record(f"r{i}"), [])
    before = fake.pipelines

    async def commit(i: int) -> None:
        await fake.commit(f"r{i}", expected_seq=0, token=None, checkpoint=checkpoint())

    async with anyio.create_task_group() as group:
        for i in range(n):
            group.start_soon(commit, i)
    assert fake.pipelines - before < n / 10
    for i in range(n):
        loaded = await fake.load_run(f"r{i}")
        assert loaded is not None and loaded.seq == 1


async def test_scripts_are_loaded_again_after_a_flush(fake: RedisStore) -> None:
    await fake.create_run(record("r1"), [])
    await fake._client.script_flush()
    committed = await fake.commit("r1", expected_seq=0, token=None, checkpoint=checkpoint())
    assert committed.seq == 1
    await fake._client.script_flush()
    assert [g.run_id for g in await fake.claim("w", ["wf"], 10, 10, NOW)] == ["r1"]


# -- retention and the timeline cap -----------------------------------------------------


async def test_timeline_is_capped() -> None:
    store = await opened(fake_store(timeline_cap=3))
    try:
        await store.create_run(record("r1"), [NewEvent(kind="started", at=NOW)])
        events = [NewEvent(kind=f"e{i}", at=NOW) for i in range(5)]
        committed = await store.commit(
            "r1", expected_seq=0, token=None, checkpoint=checkpoint(events=events)
        )
        assert committed.event_seq == 6
        assert [(e.seq, e.kind) for e in await store.timeline("r1")] == [
            (4, "e2"),
            (5, "e3"),
            (6, "e4"),
        ]
    finally:
        await store.close()


async def test_completed_runs_expire_after_the_retention() -> None:
    store = await opened(fake_store(completed_ttl=60))
    try:
        for run_id in ("done", "waiting"):
            await store.create_run(record(run_id), [])
        await store.commit(
            "done", expected_seq=0, token=None, checkpoint=checkpoint(RunStatus.COMPLETED)
        )
        await store.commit(
            "waiting", expected_seq=0, token=None, checkpoint=checkpoint(RunStatus.WAITING)
        )
        assert await store.purge_expired(NOW + 59) == []
        await store.claim("w", ["wf"], 10, 10, NOW + 61)  # claim purges what is due
        assert await store.load_run("done") is None
        assert [s.run_id for s in (await store.list_runs()).items] == ["waiting"]
        assert await store.count_runs() == {RunStatus.WAITING: 1}
    finally:
        await store.close()


async def test_completed_runs_are_kept_by_default(fake: RedisStore) -> None:
    await fake.create_run(record("done"), [])
    await fake.commit(
        "done", expected_seq=0, token=None, checkpoint=checkpoint(RunStatus.COMPLETED)
    )
    assert await fake.purge_expired(NOW + 10**9) == []
    assert await fake.load_run("done") is not None


async def test_without_hiredis_the_plain_parser_is_used(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from holon.stores import redis_lanes, redis_resp

    monkeypatch.setattr(redis_resp, "hiredis", None)
    monkeypatch.setattr(redis_lanes, "pack_command", redis_resp.plain_pack_command)
    store = await opened(RedisStore(REDIS_URL, key_prefix=prefix, lease_clock="caller"))
    try:
        await store.create_run(record("r1"), [NewEvent(kind="started", at=NOW)])
        committed = await store.commit(
            "r1", expected_seq=0, token=None, checkpoint=checkpoint(results={"A": [1]})
        )
        assert committed.seq == 1
        with pytest.raises(SeqConflict):
            await store.commit("r1", expected_seq=0, token=None, checkpoint=checkpoint())
        loaded = await store.load_run("r1")
        assert loaded is not None and loaded.results == {"A": [1]}
    finally:
        await store.close()


async def test_an_index_key_of_the_wrong_type_refuses_the_write_before_it_starts(
    prefix: str,
) -> None:
    store = await opened(RedisStore(REDIS_URL, key_prefix=prefix, lease_clock="caller"))
    raw = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        await store.create_run(record("r1"), [NewEvent(kind="started", at=NOW)])
        bad_key = f"{prefix}status:{{wf}}:running"
        await raw.set(bad_key, "not an index")
        with pytest.raises(StoreError, match="holds a string") as caught:
            await store.acquire_lease("r1", "w", 10, NOW)
        assert bad_key in str(caught.value) and REDIS_URL in str(caught.value)
        with pytest.raises(StoreError, match="holds a string"):
            await store.claim("w", ["wf"], 10, 10, NOW)
        loaded = await store.load_run("r1")
        assert loaded is not None and loaded.status == RunStatus.QUEUED and loaded.fence == 0
    finally:
        await raw.aclose()
        await store.close()


# -- index hints on a Cluster ------------------------------------------------------------


@pytest.fixture
async def cluster_store(redis_cluster_url: str) -> AsyncIterator[RedisStore]:
    name = f"holon-test:{uuid.uuid4().hex[:12]}:"
    store = await opened(RedisStore(redis_cluster_url, key_prefix=name, lease_clock="caller"))
    yield store
    await store.close()
    delete_prefix(redis_cluster_url, name)


async def test_a_stale_index_entry_never_shows_a_wrong_status(cluster_store: RedisStore) -> None:
    store = cluster_store
    await store.create_run(record("done"), [])
    await store.commit(
        "done", expected_seq=0, token=None, checkpoint=checkpoint(RunStatus.COMPLETED)
    )
    # As if a writer died after its index hint but before its script: the run is
    # listed under a status its record does not have.
    stale = store._status_key("wf", RunStatus.QUEUED.value)
    await store._pipeline([("ZADD", stale, NOW, "done")])
    assert (await store.list_runs(status=RunStatus.QUEUED)).items == []
    assert await store._pipeline([("ZSCORE", stale, "done")]) == [None]  # cleaned up
    listed = (await store.list_runs()).items
    assert [(s.run_id, s.status) for s in listed] == [("done", RunStatus.COMPLETED)]
    assert await store.claim("w", ["wf"], 10, 10, NOW) == []


async def test_claim_repairs_a_lease_hint_that_fell_behind(cluster_store: RedisStore) -> None:
    store = cluster_store
    await store.create_run(record("r1"), [])
    grant = await store.acquire_lease("r1", "w1", 10, NOW)
    assert grant is not None
    await store.renew_lease("r1", grant.token, 1000, NOW)  # renewals leave the hint alone
    lease_index = store._claim_index("lease", "wf", "v1")
    assert await store.claim("w2", ["wf"], 10, 10, NOW + 20) == []
    (score,) = await store._pipeline([("ZSCORE", lease_index, "r1")])
    assert float(score) == pytest.approx(NOW + 1000)  # repaired to the real expiry
    taken = await store.claim("w2", ["wf"], 10, 10, NOW + 1001)
    assert [g.run_id for g in taken] == ["r1"] and taken[0].recovered


@pytest.mark.parametrize(
    "event",
    [
        NewEvent(kind="started", at=1_700_000_000.123456),
        NewEvent(kind="step_started", at=0.5, step='He said "hi"\n\u2603'),
        NewEvent(
            kind="log", at=2.0, step="Fetch", data={"message": "\u00e9t\u00e9", "n": [1, None]}
        ),
        NewEvent(kind="step_completed", at=3e-7, step="\\back\\slash", data={"x": {"y": 1.5}}),
    ],
)
def test_timeline_events_are_encoded_as_the_json_they_stand_for(event: NewEvent) -> None:
    (text,) = _event_args([event])
    expected: dict[str, Any] = {"k": event.kind}
    if event.step is not None:
        expected["s"] = event.step
    expected["a"] = event.at
    if event.data:
        expected["d"] = event.data
    assert json.loads(text) == expected
    assert text == json.dumps(expected, separators=(",", ":"), ensure_ascii=False)


def test_a_timeline_event_at_a_time_that_is_not_finite_is_refused() -> None:
    with pytest.raises(ValueError, match="not finite"):
        _event_args([NewEvent(kind="started", at=float("nan"))])
