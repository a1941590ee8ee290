"""The Redis store's pipelined connections (lanes), against a real server: writes of one
turn share a pipeline, replies reach their writers in order, a cancelled writer's write
still goes out ahead of the next of its key, scripts come back after a flush, and the
errors when the server is gone, the store closed or `WAITAOF` unconfirmed. Also the
plain-Python wire protocol used when hiredis is not installed, against hiredis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from holon.errors import StoreError
from holon.stores import redis_lanes
from holon.stores.base import NewEvent
from holon.stores.redis import RedisStore
from holon.stores.redis_lanes import Lane
from holon.stores.redis_resp import PlainReader, plain_pack_command
from tests.conftest import REDIS_URL
from tests.redis_support import RedisProcess, delete_prefix, have_redis_server
from tests.test_redis import NOW, checkpoint, need_redis, record

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store() -> AsyncIterator[RedisStore]:
    need_redis()
    prefix = f"holon-test:{uuid.uuid4().hex[:12]}:"
    opened = RedisStore(REDIS_URL, key_prefix=prefix, lease_clock="caller")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
        delete_prefix(REDIS_URL, prefix)


@pytest.fixture(scope="module")
def private_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    if not have_redis_server():  # pragma: no cover
        pytest.skip("redis-server is not installed")
    process = RedisProcess(tmp_path_factory.mktemp("lanes")).start()
    try:
        yield process
    finally:
        process.kill()


def lane_of(store: RedisStore, **options: Any) -> Lane:
    """A lane of its own on the store's server, for tests of the lane alone."""
    return Lane(store._open_wire, store._describe, [], **options)


async def test_the_writes_of_one_turn_share_a_pipeline(store: RedisStore) -> None:
    key = f"{store.key_prefix}counter"
    before = store.pipelines
    futures = [store._submit([("INCR", key)], key=f"run{i}") for i in range(300)]
    replies = await asyncio.gather(*futures)
    assert sorted(reply[0] for reply in replies) == list(range(1, 301))
    # Four lanes, each writing what it was handed in that turn: 300 commands in at most
    # two pipelines per lane (256 commands at most per pipeline).
    assert store.pipelines - before <= 8


async def test_replies_reach_their_writers_in_order_across_pipelines(store: RedisStore) -> None:
    lane = lane_of(store, max_batch=3)
    key = f"{store.key_prefix}echo"
    try:
        writes = [
            [("ECHO", f"{i}-{j}") for j in range(1 + i % 4)] + [("RPUSH", key, str(i))]
            for i in range(60)
        ]
        futures = [lane.call(commands) for commands in writes]
        for i, replies in enumerate(await asyncio.gather(*futures)):
            count = 1 + i % 4
            assert replies[:count] == [f"{i}-{j}" for j in range(count)]
        # Each write has two to five commands, so with at most three a pipeline, each
        # went in a pipeline of its own: a write's commands are never split.
        assert lane.pipelines == 60
        raw = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
        try:
            assert await raw.lrange(key, 0, -1) == [str(i) for i in range(60)]
        finally:
            await raw.aclose()
    finally:
        lane.close(StoreError("test over"))


async def test_a_decoded_write_gets_what_its_decoding_makes_or_raises(store: RedisStore) -> None:
    lane = lane_of(store)

    def decode(key: str, replies: list[Any], first: int) -> str:
        reply = replies[first]
        if isinstance(reply, Exception):
            raise StoreError(f"{key}: {reply}")
        return f"{key}={reply}"

    try:
        assert await lane.call([("ECHO", "x")], "k", decode) == "k=x"
        with pytest.raises(StoreError, match="k: .*unknown command"):
            await lane.call([("NOSUCHCOMMAND",)], "k", decode)
        # The error was the write's alone: the lane goes on.
        assert await lane.call([("ECHO", "y")], "k", decode) == "k=y"
    finally:
        lane.close(StoreError("test over"))


async def test_a_cancelled_writers_write_still_goes_out_before_the_next_of_its_key(
    store: RedisStore,
) -> None:
    key = f"{store.key_prefix}order"
    first = store._submit([("RPUSH", key, "first")], key="run-1")
    assert isinstance(first, asyncio.Future)
    first.cancel()  # its writer stopped waiting before the pipeline went out
    second = await store._submit([("RPUSH", key, "second")], key="run-1")
    assert second == [2]
    raw = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        assert await raw.lrange(key, 0, -1) == ["first", "second"]
    finally:
        await raw.aclose()


async def test_scripts_are_loaded_again_after_the_server_forgot_them(
    private_server: RedisProcess,
) -> None:
    store = RedisStore(private_server.url, key_prefix=f"f{uuid.uuid4().hex[:8]}:")
    await store.open()
    raw = aioredis.Redis.from_url(private_server.url)
    try:
        for i in range(50):
            await store.create_run(record(f"r{i}"), [NewEvent(kind="started", at=NOW)])
        await raw.script_flush()
        step = checkpoint(events=[NewEvent(kind="step_completed", at=NOW, step="A")])
        # Fifty commits in flight at once all meet NOSCRIPT; one load serves them all.
        committed = await asyncio.gather(
            *(store.commit(f"r{i}", expected_seq=0, token=None, checkpoint=step) for i in range(50))
        )
        assert {c.seq for c in committed} == {1}
        for i in range(50):
            assert [e.kind for e in await store.timeline(f"r{i}")] == ["started", "step_completed"]
    finally:
        await raw.aclose()
        await store.close()


async def test_writes_fail_naming_the_server_once_it_stays_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not have_redis_server():  # pragma: no cover
        pytest.skip("redis-server is not installed")
    monkeypatch.setattr(redis_lanes, "RETRY_DELAYS", (0.0, 0.0, 0.0))
    server = RedisProcess(tmp_path / "gone").start()
    store = RedisStore(server.url, key_prefix="gone:")
    try:
        await store.open()
        assert await store._submit([("PING",)], key="r") == ["PONG"]
        server.kill()
        with pytest.raises(StoreError, match=rf"Redis at {server.url}: cannot connect"):
            await store._submit([("PING",)], key="r")
    finally:
        await store.close()
        server.kill()


async def test_an_idle_connection_closed_by_the_server_is_opened_again_at_once(
    store: RedisStore,
) -> None:
    lane = lane_of(store)
    raw = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        (client_id,) = await lane.call([("CLIENT", "ID")])
        await raw.execute_command("CLIENT", "KILL", "ID", client_id)  # as a timeout would
        with anyio.fail_after(5):
            while lane._wire is not None:  # the loss is a callback, not an event to await
                await anyio.lowlevel.checkpoint()
        assert lane._failures == 0, "an idle close counted as a failure (it delays a retry)"
        (new_id,) = await lane.call([("CLIENT", "ID")])
        assert new_id != client_id
    finally:
        await raw.aclose()
        lane.close(StoreError("test over"))


async def test_closing_the_store_fails_writes_still_unanswered(store: RedisStore) -> None:
    pending = store._submit([("PING",)], key="r")
    await store.close()
    with pytest.raises(StoreError, match="was closed before the write was answered"):
        await pending
    with pytest.raises(StoreError, match="is not open"):
        await store._submit([("PING",)], key="r")
    await store.open()  # and it opens again
    assert await store._submit([("PING",)], key="r") == ["PONG"]


async def test_an_unconfirmed_waitaof_fails_every_write_of_its_pipeline(
    store: RedisStore,
) -> None:
    # This server is too old for WAITAOF or has no append-only file: either way the
    # write is not confirmed, and says so.
    lane = lane_of(store, check_ack=store._ack_error)
    try:
        with pytest.raises(StoreError, match="WAITAOF did not confirm"):
            await lane.call([("PING",)])
    finally:
        lane.close(StoreError("test over"))


# -- the wire protocol without hiredis ------------------------------------------------

REPLIES = (
    b"+OK\r\n"
    b"-ERR unknown command 'X'\r\n"
    b":-42\r\n"
    b"$5\r\nh\xc3\xa9lo\r\n"
    b"$-1\r\n"
    b"$0\r\n\r\n"
    b"*-1\r\n"
    b"*0\r\n"
    b"*3\r\n:1\r\n*2\r\n$1\r\na\r\n$-1\r\n+x\r\n"
)


def _all(reader: Any) -> list[Any]:
    out = []
    while (reply := reader.gets()) is not False:
        out.append(reply)
    return out


def _comparable(replies: list[Any]) -> list[Any]:
    return [(type(r).__name__, str(r)) if isinstance(r, Exception) else r for r in replies]


def test_the_plain_reader_reads_what_hiredis_reads_however_the_bytes_arrive() -> None:
    hiredis = pytest.importorskip("hiredis")
    expected = hiredis.Reader(encoding="utf-8", replyError=ResponseError)
    expected.feed(REPLIES)
    want = _comparable(_all(expected))
    assert len(want) == 9
    whole = PlainReader()
    whole.feed(REPLIES)
    assert _comparable(_all(whole)) == want
    trickle = PlainReader()
    got: list[Any] = []
    for i in range(len(REPLIES)):
        trickle.feed(REPLIES[i : i + 1])
        got += _all(trickle)
    assert _comparable(got) == want


def test_the_plain_packer_packs_what_hiredis_packs() -> None:
    hiredis = pytest.importorskip("hiredis")
    for command in [("SET", "k", "v"), ("EVALSHA", "ab", 2, "k1", "k2", 1.5, b"\x00"), ("É",)]:
        assert plain_pack_command(command) == hiredis.pack_command(command)
    for bad in [("SET", True), ("SET", None)]:
        with pytest.raises(TypeError, match="Redis command argument"):
            plain_pack_command(bad)


async def test_writes_whose_writers_left_are_applied_and_the_others_go_on(
    store: RedisStore,
) -> None:
    """A hundred writers at once, every other write's writer cancelled as it waits:
    every write is applied once, and each writer's last write comes after its others."""
    key = f"{store.key_prefix}count"

    async def writer(i: int) -> None:
        for n in range(10):
            with anyio.CancelScope() as scope:
                writing = store._submit([("INCR", key)], key=f"w{i}")
                if n % 2:
                    scope.cancel()
                await writing
        # The same key, so the same connection: answered after all of the above.
        await store._submit([("RPUSH", f"{key}:{i}", "last")], key=f"w{i}")

    async with anyio.create_task_group() as group:
        for i in range(100):
            group.start_soon(writer, i)
    raw = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        assert await raw.get(key) == "1000"
    finally:
        await raw.aclose()
