"""The group committer: shared pipelines, and what a cancelled writer leaves behind."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import TaskGroup

from holon.stores.redis_batch import Batcher, Command

pytestmark = pytest.mark.anyio

Writer = Callable[[int], Awaitable[None]]


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


async def _no_reload() -> None:
    pass


def batcher(server: FakeServer | GatedServer, **options: int) -> Batcher:
    return Batcher(server.send, _no_reload, lambda exc: RuntimeError(str(exc)), **options)


def recording_writer(b: Batcher) -> tuple[dict[int, list[Any]], Writer]:
    """A writer of `("SET", n)` that records each write's replies by `n`."""
    results: dict[int, list[Any]] = {}

    async def write(n: int) -> None:
        results[n] = await b.call([("SET", n)])

    return results, write


async def queue_behind_first(
    group: TaskGroup, server: FakeServer, write: Writer, more: range
) -> None:
    """Start write 0 and let its pipeline go out (held by the gate), then queue `more`."""
    group.start_soon(write, 0)
    await server.in_flight.wait()
    for n in more:
        group.start_soon(write, n)
    await anyio.wait_all_tasks_blocked()


async def test_writers_queued_behind_a_pipeline_share_the_next() -> None:
    server = FakeServer()
    server.gate = anyio.Event()
    results, write = recording_writer(batcher(server))

    async with anyio.create_task_group() as group:
        await queue_behind_first(group, server, write, range(1, 6))
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


@pytest.mark.parametrize("seed", range(8))
async def test_every_write_is_sent_once_and_answered_whatever_the_interleaving(seed: int) -> None:
    """Writers arrive, are cancelled and are answered in an order drawn from `seed`;
    each queued command must be sent exactly once, each writer that stays must get
    its own replies, and the batcher must end idle."""
    rng = random.Random(seed)
    sent: list[Any] = []

    async def send(commands: Sequence[Command]) -> list[Any]:
        sent.extend(c[1] for c in commands)
        for _ in range(rng.randrange(4)):
            await anyio.lowlevel.checkpoint()
        return [c[1] for c in commands]

    b = Batcher(send, _no_reload, lambda exc: RuntimeError(str(exc)))
    answered: dict[int, list[Any]] = {}
    queued: set[int] = set()  # `call` queues its commands before it first yields

    async def write(n: int, scope: anyio.CancelScope) -> None:
        with scope:
            for _ in range(rng.randrange(3)):
                await anyio.lowlevel.checkpoint()
            queued.add(n)
            answered[n] = await b.call([("SET", n), ("GET", -n - 1)])

    writers = 200
    scopes = [anyio.CancelScope() for _ in range(writers)]
    async with anyio.create_task_group() as group:
        for n in range(writers):
            group.start_soon(write, n, scopes[n])
            if rng.random() < 0.3:
                await anyio.lowlevel.checkpoint()
            if rng.random() < 0.1:
                scopes[rng.randrange(n + 1)].cancel()
            waiting = sorted(queued - answered.keys())
            if rng.random() < 0.1 and waiting:
                scopes[rng.choice(waiting)].cancel()
    assert len(sent) == len(set(sent)), "a command was sent twice"
    assert sorted(sent) == sorted([*queued, *(-n - 1 for n in queued)])
    for n, replies in answered.items():
        assert replies == [n, -n - 1]
    assert 0 < len(answered) < len(queued), "the draw cancelled no waiting writer, or all"
    assert not b._leading and not b._queue


class GatedServer:
    """Holds every pipeline until the test opens its own gate."""

    def __init__(self) -> None:
        self.sent: list[list[Any]] = []
        self.gates: list[anyio.Event] = []

    async def send(self, commands: Sequence[Command]) -> list[Any]:
        gate = anyio.Event()
        self.gates.append(gate)
        self.sent.append([c[1] for c in commands])
        await gate.wait()
        return [c[1] for c in commands]


async def test_a_write_does_not_overtake_an_abandoned_write_of_the_same_key() -> None:
    """A run's commit whose writer was cancelled while it waited for its pipeline is
    still sent, and before the run's next write (releasing its lease, say)."""
    server = GatedServer()
    b = batcher(server)
    results: dict[str, list[Any]] = {}

    async def write(name: str, key: str | None, scope: anyio.CancelScope | None = None) -> None:
        with scope or anyio.CancelScope():
            results[name] = await b.call([("SET", name)], key=key)

    gave_up = anyio.CancelScope()
    async with anyio.create_task_group() as group:
        try:
            group.start_soon(write, "other", None)  # leads; its pipeline is held
            await anyio.wait_all_tasks_blocked()
            group.start_soon(write, "commit", "run-1", gave_up)
            await anyio.wait_all_tasks_blocked()
            gave_up.cancel()  # the commit's writer stops waiting; the commit stays queued
            await anyio.wait_all_tasks_blocked()
            group.start_soon(write, "release", "run-1")
            await anyio.wait_all_tasks_blocked()
            server.gates[0].set()
            await anyio.wait_all_tasks_blocked()
        finally:
            # Open every gate, so that a wrong order fails below instead of hanging on
            # a leader that is shielded from cancellation.
            while not all(gate.is_set() for gate in server.gates):
                for gate in server.gates:
                    gate.set()
                await anyio.wait_all_tasks_blocked()
    assert server.sent == [["other"], ["commit", "release"]]
    assert "commit" not in results
    assert results["other"] == ["other"] and results["release"] == ["release"]
    assert not b._leading and not b._queue
