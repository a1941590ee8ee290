"""A record that cannot be read fails its run alone, on every store.

One run's stored body is corrupted in each way a record can be unreadable (bytes that
are not UTF-8, truncated JSON, invalid JSON, an unknown schema version, a value larger
than the store reads) among 20 healthy runs. The 20 complete; the bad one ends `failed`
with `corrupt record: ...` in its record and timeline; no connection is lost and no
claim batch or pipeline is broken on the way.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import anyio
import pytest
import redis
from pydantic import BaseModel

from holon import END, START, RunHandle, Workflow, WorkflowRunner
from holon.errors import CorruptRecord
from holon.stores import MemoryStore, SQLiteStore
from holon.stores.base import RunStatus, Store
from holon.stores.redis import RedisStore
from holon.stores.redis_resp import PlainReader, new_reader

pytestmark = pytest.mark.anyio

HEALTHY = 20

CORRUPTIONS: dict[str, bytes] = {
    "not-utf8": b'{"cursor":{"step":"A"},"state":{"note":"\xff\xfe"}}',
    "truncated-json": b'{"cursor":{"step":"A"},"sta',
    "invalid-json": b"{cursor: A}",
    "unknown-schema": b'{"schema_version":7,"cursor":{"step":"A"}}',
    "oversized": b'{"cursor":{"step":"A"},"state":{"pad":"' + b"x" * 8192 + b'"}}',
}
"""Each way a stored body can be unreadable, and the reason its run must fail with."""

REASONS = {
    "not-utf8": "not UTF-8",
    "truncated-json": "not valid JSON",
    "invalid-json": "not valid JSON",
    "unknown-schema": "schema version 7",
    "oversized": "max_value_bytes",
}


class Tally(BaseModel):
    n: int = 0


def tick(ctx: Any) -> str:
    ctx.SetState(n=ctx.State.n + 1)
    return "B" if ctx.StepName == "A" else END


Flow = Workflow("corruptible").State(Tally).Flow({START: lambda ctx: "A", "A": tick, "B": tick})


def corrupt_body(store: Store, run_id: str, data: bytes) -> None:
    """Overwrite the run's stored body with `data`, behind the store's back."""
    if isinstance(store, MemoryStore):
        store._rows[run_id].body_json = data  # type: ignore[assignment]
    elif isinstance(store, SQLiteStore):
        with sqlite3.connect(store.path) as conn:
            conn.execute(
                "UPDATE holon_runs SET body = CAST(? AS TEXT) WHERE run_id = ?", (data, run_id)
            )
    elif isinstance(store, RedisStore) and not store._own_client:  # fakeredis
        raise AssertionError("use corrupt_body_async for a client handed in")
    else:
        assert isinstance(store, RedisStore)
        url = store.url
        client: Any
        if store.cluster:
            client = redis.RedisCluster.from_url(url.replace("redis+cluster://", "redis://", 1))
        else:
            client = redis.Redis.from_url(url)
        try:
            client.set(f"{store.run_key(run_id)}:b", data)
        finally:
            client.close()


async def corrupt(store: Store, run_id: str, data: bytes) -> None:
    if isinstance(store, RedisStore) and not store._own_client:
        await store._client.set(f"{store.run_key(run_id)}:b", data)
    else:
        corrupt_body(store, run_id, data)


@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
async def test_a_corrupt_record_fails_its_run_alone(
    store: Store, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="holon")
    store.max_value_bytes = 4096  # type: ignore[attr-defined]
    async with WorkflowRunner(Flow, store, execute=False) as submitter:
        ids = [(await submitter.Run(run_id=f"run-{i:02}")).run_id for i in range(HEALTHY + 1)]
    bad = ids[HEALTHY // 2]
    await corrupt(store, bad, CORRUPTIONS[how])
    with pytest.raises(CorruptRecord, match=REASONS[how]):
        await store.load_run(bad)

    async with WorkflowRunner(Flow, store, poll_interval=0.05) as runner:
        with anyio.fail_after(30):
            for run_id in ids:
                # Not `runner.Get`: it reads the record, which raises until quarantined.
                await RunHandle(runner, run_id).WaitUntil("completed", "failed")
    for run_id in ids:
        if run_id == bad:
            continue
        record = await store.load_run(run_id)
        assert record is not None and record.status == RunStatus.COMPLETED, run_id
        assert record.body.state == {"n": 2}
    failed = await store.load_run(bad)
    assert failed is not None and failed.status == RunStatus.FAILED
    assert failed.lease is None
    assert failed.body.error is not None and failed.body.error.type == "CorruptRecord"
    assert failed.body.error.message.startswith("corrupt record: ")
    assert REASONS[how] in failed.body.error.message
    assert f"run {bad!r}" in failed.body.error.message
    last = (await store.timeline(bad))[-1]
    assert last.kind == "failed" and last.data["error"] == "CorruptRecord"
    assert "connection lost" not in caplog.text, "a corrupt record broke a connection"
    assert "execution aborted" not in caplog.text


# -- the reply parsers ---------------------------------------------------------------------


@pytest.mark.parametrize("make", [PlainReader, new_reader], ids=["plain", "default"])
def test_an_undecodable_reply_is_read_whole_and_the_next_one_comes_out_right(
    make: Any,
) -> None:
    reader = make()
    reader.feed(b"*3\r\n$2\r\n\xff\xfe\r\n*1\r\n$2\r\nok\r\n:5\r\n+NEXT\r\n$3\r\nabc\r\n")
    with pytest.raises(UnicodeDecodeError):
        reader.gets()
    assert reader.gets() == "NEXT"
    assert reader.gets() == "abc"
    assert reader.gets() is False


async def test_a_hash_field_that_is_not_text_fails_its_run_alone_on_redis(store: Store) -> None:
    if not isinstance(store, RedisStore):
        pytest.skip("the run's hash is Redis's")
    async with WorkflowRunner(Flow, store, execute=False) as submitter:
        ids = [(await submitter.Run(run_id=f"run-{i:02}")).run_id for i in range(HEALTHY + 1)]
    bad = ids[3]
    key, field, value = store.run_key(bad), "ver", b"v\xff1"
    if store._own_client:
        url = store.url
        client: Any = (
            redis.RedisCluster.from_url(url.replace("redis+cluster://", "redis://", 1))
            if store.cluster
            else redis.Redis.from_url(url)
        )
        try:
            client.hset(key, field, value)
        finally:
            client.close()
    else:
        await store._client.hset(key, field, value)
    async with WorkflowRunner(Flow, store, poll_interval=0.05) as runner:
        with anyio.fail_after(30):
            for run_id in ids:
                await RunHandle(runner, run_id).WaitUntil("completed", "failed")
    statuses = {run_id: (await store.run_progress(run_id)) for run_id in ids}
    assert all(p is not None for p in statuses.values())
    assert [r for r, p in statuses.items() if p and p.status != RunStatus.COMPLETED] == [bad]
    timeline = await store.timeline(bad)
    assert timeline[-1].kind == "failed" and "not UTF-8" in timeline[-1].data["message"]


async def corrupt_input_and_result(store: Store, run_id: str) -> None:
    """The run's input made undecodable bytes and a result made invalid JSON."""
    bad_input, bad_result = b'{"doc":"\xff"}', b'{"half":'
    if isinstance(store, MemoryStore):
        row = store._rows[run_id]
        row.input_json = bad_input  # type: ignore[assignment]
        row.results["A"] = bad_result.decode()
    elif isinstance(store, SQLiteStore):
        with sqlite3.connect(store.path) as conn:
            conn.execute(
                "UPDATE holon_runs SET input = CAST(? AS TEXT) WHERE run_id = ?",
                (bad_input, run_id),
            )
            conn.execute(
                "INSERT INTO holon_results (ns, run_id, name, value) VALUES ('', ?, 'A', ?)",
                (run_id, bad_result.decode()),
            )
    else:
        assert isinstance(store, RedisStore)
        key = store.run_key(run_id)
        commands: list[tuple[Any, ...]] = [
            ("HDEL", key, "in"),
            ("SET", f"{key}:i", bad_input),
            ("HSET", f"{key}:r", "A", bad_result),
        ]
        if not store._own_client:
            for command in commands:
                await store._client.execute_command(*command)
            return
        client: Any = (
            redis.RedisCluster.from_url(store.url.replace("redis+cluster://", "redis://", 1))
            if store.cluster
            else redis.Redis.from_url(store.url)
        )
        try:
            for command in commands:
                client.execute_command(*command)
        finally:
            client.close()


async def test_a_failed_corrupt_run_reads_back(store: Store) -> None:
    """Quarantine mends what the record keeps (input, results) so that the failed run,
    with its reason, can be read: by `Result()`, listings, operators."""
    async with WorkflowRunner(Flow, store, execute=False) as submitter:
        ids = [(await submitter.Run(run_id=f"run-{i:02}")).run_id for i in range(HEALTHY + 1)]
    bad = ids[7]
    await corrupt_input_and_result(store, bad)
    with pytest.raises(CorruptRecord):
        await store.load_run(bad)
    async with WorkflowRunner(Flow, store, poll_interval=0.05) as runner:
        with anyio.fail_after(30):
            for run_id in ids:
                await RunHandle(runner, run_id).WaitUntil("completed", "failed")
        failed = await (await runner.Get(bad)).Record()
    assert failed.status == RunStatus.FAILED and failed.input is None and failed.results == {}
    assert failed.body.error is not None and failed.body.error.message.startswith("corrupt record")
    counts = await store.count_runs(workflow="corruptible")
    assert counts == {RunStatus.COMPLETED: HEALTHY, RunStatus.FAILED: 1}
