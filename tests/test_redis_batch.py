"""The group committer: shared pipelines, and what a cancelled writer leaves behind."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import pytest

from holon.stores.redis_batch import Batcher, Command

pytestmark = pytest.mark.anyio


class FakeServer:
    """Answers each command with its first argument; a gate holds a pipeline in flight."""

    def __init__(self) -> None:
        self.pipelines: list[list[Any]] = []
        self.gate: anyio.Event | None = None
        self.in_flight = anyio.Event()

    async def send(self, commands: Sequence[Command]) -> list[Any]:
        self.pipelines.append([c[1] for c in commands])
        self.in_flight.set()
        if self.gate is not None:
            await self.gate.wait()
        return [c[1] for c in commands]


def batcher(server: FakeServer) -> Batcher:
    async def reload() -> None:
        pass

    return Batcher(server.send, reload, lambda exc: RuntimeError(str(exc)))


async def test_writers_queued_behind_a_pipeline_share_the_next() -> None:
    server = FakeServer()
    server.gate = anyio.Event()
    b = batcher(server)
    results: dict[int, list[Any]] = {}

    async def write(n: int) -> None:
        results[n] = await b.call([("SET", n)])

    async with anyio.create_task_group() as group:
        group.start_soon(write, 0)
        await server.in_flight.wait()
        for n in range(1, 6):
            group.start_soon(write, n)
        await anyio.wait_all_tasks_blocked()
        server.gate.set()
    assert server.pipelines == [[0], [1, 2, 3, 4, 5]]
    assert results == {n: [n] for n in range(6)}


async def test_a_cancelled_writer_is_still_sent_and_the_others_go_on() -> None:
    server = FakeServer()
    server.gate = anyio.Event()
    b = batcher(server)
    results: dict[int, list[Any]] = {}

    async def write(n: int, scope: anyio.CancelScope | None = None) -> None:
        with scope or anyio.CancelScope():
            results[n] = await b.call([("SET", n)])

    cancelled = anyio.CancelScope()
    async with anyio.create_task_group() as group:
        group.start_soon(write, 0)
        await server.in_flight.wait()
        group.start_soon(write, 1, cancelled)
        group.start_soon(write, 2)
        await anyio.wait_all_tasks_blocked()
        cancelled.cancel()
        await anyio.wait_all_tasks_blocked()
        server.gate.set()
    assert server.pipelines == [[0], [1, 2]], "the cancelled write was not sent"
    assert results == {0: [0], 2: [2]}


async def test_writes_whose_writers_all_left_are_sent_by_the_leader() -> None:
    server = FakeServer()
    server.gate = anyio.Event()
    b = batcher(server)
    scopes = [anyio.CancelScope() for _ in range(3)]

    async def write(n: int, scope: anyio.CancelScope | None = None) -> None:
        with scope or anyio.CancelScope():
            await b.call([("SET", n)])

    async with anyio.create_task_group() as group:
        group.start_soon(write, 0)
        await server.in_flight.wait()
        for n, scope in enumerate(scopes, start=1):
            group.start_soon(write, n, scope)
        await anyio.wait_all_tasks_blocked()
        for scope in scopes:
            scope.cancel()
        await anyio.wait_all_tasks_blocked()
        server.gate.set()
    assert server.pipelines == [[0], [1, 2, 3]]
    server.gate = None
    assert await b.call([("SET", 9)]) == [9]  # and the batcher is free again
