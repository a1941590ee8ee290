"""Faults on a private `redis-server` (free port, started and stopped by pid):

1. the server is SIGKILLed during a run (`appendonly yes`, `appendfsync always`) and
   restarted on the same directory and port: the run resumes, no acknowledged
   checkpoint is lost; with hundreds of runs in flight, nothing is lost or doubled;
2. a connection drops after the commit script reached the server but before its reply:
   the retry neither appends the events twice nor advances the run twice;
3. a commit with a stale fencing token (a worker presumed dead) is refused, and that
   worker stops.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.lowlevel
import pytest
from pydantic import BaseModel

from holon import END, START, Workflow, WorkflowRunner
from holon import step as step_policy
from holon.clock import ManualClock
from holon.stores.base import (
    Checkpoint,
    Cursor,
    NewEvent,
    RunBody,
    RunRecord,
    RunStatus,
    Store,
)
from holon.stores.redis import RedisStore
from tests.redis_support import CuttingProxy, RedisProcess, have_redis_server

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

NOW = 1_000.0

if not have_redis_server():  # pragma: no cover
    pytest.skip("redis-server is not installed", allow_module_level=True)


def record(run_id: str) -> RunRecord:
    return RunRecord(
        run_id=run_id,
        workflow="wf",
        version="v1",
        status=RunStatus.QUEUED,
        input=None,
        body=RunBody(cursor=Cursor(step="__start__")),
        created_at=NOW,
        updated_at=NOW,
    )


def step_checkpoint(n: int) -> Checkpoint:
    return Checkpoint(
        status=RunStatus.RUNNING,
        body=RunBody(cursor=Cursor(step=f"S{n + 1}"), state={"n": n}),
        at=NOW + n,
        results={f"S{n}": n},
        events=[NewEvent(kind="step_completed", at=NOW + n, step=f"S{n}", data={"n": n})],
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    process = RedisProcess(tmp_path_factory.mktemp("redis")).start()
    try:
        yield process
    finally:
        process.kill()


@pytest.fixture
async def store(server: RedisProcess) -> AsyncIterator[RedisStore]:
    opened = RedisStore(server.url, key_prefix=f"t{id(object())}:", lease_clock="caller")
    await opened.open()
    yield opened
    await opened.close()


# -- 1. kill -9 -----------------------------------------------------------------------------


def durable_server(directory: Path) -> RedisProcess:
    return RedisProcess(directory, options=("--appendonly", "yes", "--appendfsync", "always"))


async def test_kill_9_loses_no_acknowledged_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = durable_server(tmp_path / "aof").start()
    store = RedisStore(server.url, lease_clock="caller")
    try:
        await store.open()
        await store.create_run(record("r"), [NewEvent(kind="started", at=NOW)])
        grant = await store.acquire_lease("r", "w", 3600, NOW)
        assert grant is not None
        acknowledged = 0
        twentieth = anyio.Event()

        async def commit_steps() -> None:
            nonlocal acknowledged
            for n in range(60):
                await store.commit(
                    "r", expected_seq=n, token=grant.token, checkpoint=step_checkpoint(n)
                )
                acknowledged = n + 1
                if acknowledged == 20:
                    twentieth.set()

        async with anyio.create_task_group() as group:
            group.start_soon(commit_steps)
            with anyio.fail_after(10):
                await twentieth.wait()
            # The writer goes on (its next commit may be on the wire): kill the server
            # under it and bring it back from its append-only file on the same port.
            await anyio.lowlevel.checkpoint()
            at_kill = acknowledged
            server.kill()
            server.start()
        assert 20 <= at_kill < 60, "the server was not killed during the run"
        assert "connection lost" in caplog.text, "no write met the dead server"
        loaded = await store.load_run("r")
        assert loaded is not None
        assert acknowledged == 60 and loaded.seq == 60
        assert loaded.results == {f"S{n}": n for n in range(60)}
        events = await store.timeline("r")
        assert [e.seq for e in events] == list(range(1, 62))
        assert [e.step for e in events[1:]] == [f"S{n}" for n in range(60)]
    finally:
        await store.close()
        server.kill()


async def test_a_run_resumes_after_redis_is_killed_mid_run(tmp_path: Path) -> None:
    server = durable_server(tmp_path / "aof").start()
    ran: list[str] = []

    def step(name: str, after: str) -> Any:
        def run(ctx: Any) -> str:
            ran.append(name)
            if name == "S2" and ran.count("S2") == 1:
                # Mid-run: the server dies with every checkpoint so far acknowledged.
                server.kill()
                server.start()
            return after

        return run

    wf = Workflow("wf").Flow(
        {
            START: lambda ctx: "S0",
            "S0": step("S0", "S1"),
            "S1": step("S1", "S2"),
            "S2": step("S2", "S3"),
            "S3": step("S3", END),
        }
    )
    store = RedisStore(server.url)
    try:
        await store.open()
        async with WorkflowRunner(wf, store) as runner:
            handle = await runner.Run(run_id="r")
            await handle.Result(timeout=15)
        assert ran == ["S0", "S1", "S2", "S3"]
        timeline = await store.timeline("r")
        completed = [e.step for e in timeline if e.kind == "step_completed"]
        assert completed == ["__start__", "S0", "S1", "S2", "S3"]
        assert [e.seq for e in timeline] == list(range(1, len(timeline) + 1))
        loaded = await store.load_run("r")
        assert loaded is not None and loaded.status == RunStatus.COMPLETED
    finally:
        await store.close()
        server.kill()


class Count(BaseModel):
    n: int = 0


async def test_concurrent_runs_lose_and_double_nothing_when_redis_is_killed(
    tmp_path: Path,
) -> None:
    """Hundreds of runs in one worker, their checkpoints sharing pipelines (several in
    flight at once): the server is SIGKILLed and restarted halfway. Every pipeline that
    was out is sent again; every step runs once and is recorded once."""
    server = durable_server(tmp_path / "aof").start()
    runs, steps = 200, 8
    calls = 0
    killed = False
    finished = 0
    all_finished = anyio.Event()

    def tick(ctx: Any) -> str:
        nonlocal calls, killed, finished
        calls += 1
        if not killed and calls == runs * steps // 2:
            killed = True
            server.kill()
            server.start()
        if ctx.State.n + 1 == steps:
            finished += 1
            if finished == runs:
                all_finished.set()
            return END
        ctx.SetState(n=ctx.State.n + 1)
        return "Tick"

    # On the event loop (not in a thread): it kills the server, and sets the event.
    wf = (
        Workflow("many")
        .State(Count)
        .Flow({START: lambda ctx: "Tick", "Tick": step_policy(tick, thread=False)})
    )
    store = RedisStore(server.url)
    try:
        await store.open()
        async with WorkflowRunner(wf, store, execute=False) as submitter:
            ids = [(await submitter.Run()).run_id for _ in range(runs)]
        sent_before = store.pipelines
        async with WorkflowRunner(wf, store, lease_ttl=60):
            with anyio.fail_after(60):
                await all_finished.wait()
        assert killed
        assert calls == runs * steps, "a step ran again: its checkpoint was lost"
        writes = runs * (steps + 1)
        assert store.pipelines - sent_before < writes / 10, "the checkpoints shared no pipelines"
        for run_id in ids:
            record = await store.load_run(run_id)
            assert record is not None and record.status == RunStatus.COMPLETED
            timeline = await store.timeline(run_id)
            completed = [e.step for e in timeline if e.kind == "step_completed"]
            assert completed == ["__start__"] + ["Tick"] * steps, run_id
            assert [e.seq for e in timeline] == list(range(1, len(timeline) + 1)), run_id
    finally:
        await store.close()
        server.kill()


# -- 2. a reply lost after the script ran -------------------------------------------------


async def test_a_lost_reply_is_retried_without_doubling(server: RedisProcess) -> None:
    proxy = CuttingProxy(server.port)
    await proxy.start()
    store = RedisStore(
        f"redis://127.0.0.1:{proxy.port}/0", key_prefix="lost:", lease_clock="caller"
    )
    try:
        await store.open()
        await store.create_run(record("r"), [NewEvent(kind="started", at=NOW)])
        grant = await store.acquire_lease("r", "w", 3600, NOW)
        assert grant is not None
        proxy.armed = True
        committed = await store.commit(
            "r", expected_seq=0, token=grant.token, checkpoint=step_checkpoint(0)
        )
        assert proxy.cuts == 1, "the reply was not cut"
        assert committed.seq == 1 and committed.event_seq == 2
        loaded = await store.load_run("r")
        assert loaded is not None and loaded.seq == 1 and loaded.event_seq == 2
        assert [e.kind for e in await store.timeline("r")] == ["started", "step_completed"]
        # The run goes on from there as usual.
        after = await store.commit(
            "r", expected_seq=1, token=grant.token, checkpoint=step_checkpoint(1)
        )
        assert after.seq == 2 and after.event_seq == 3
    finally:
        await store.close()
        await proxy.close()


# -- 3. a stale token --------------------------------------------------------------------


async def test_a_stale_worker_is_refused_and_stops(store: RedisStore) -> None:
    clock = ManualClock()
    in_a = anyio.Event()
    finish_a = anyio.Event()
    ran_b: list[str] = []

    async def a(ctx: Any) -> str:
        in_a.set()
        await finish_a.wait()
        return "B"

    def b(ctx: Any) -> Any:
        ran_b.append(ctx.RunId)
        return END

    wf = Workflow("wf").Flow({START: lambda ctx: "A", "A": a, "B": b})
    async with WorkflowRunner(wf, store, clock=clock, lease_ttl=30, owner="w1") as runner:
        await runner.Run(run_id="r")
        with anyio.fail_after(10):
            await in_a.wait()
        before = await store.load_run("r")
        assert before is not None and before.lease is not None and before.lease.owner == "w1"
        # w1 is presumed dead: its lease ran out on another worker's clock, w2 takes over.
        taken = await store.acquire_lease("r", "w2", 30, clock.now() + 3600)
        assert taken is not None and taken.token > before.fence
        changed = store.signals.event("r")
        finish_a.set()
        with anyio.fail_after(10):
            while "r" in runner.engine.executions:
                await changed.wait()
                changed = store.signals.event("r")
    assert ran_b == [], "the stale worker went on to the next step"
    after = await store.load_run("r")
    assert after is not None
    assert after.seq == before.seq, "the stale worker's checkpoint was written"
    assert after.lease is not None and after.lease.owner == "w2"
    assert after.lease.token == taken.token
    completed = [e.step for e in await store.timeline("r") if e.kind == "step_completed"]
    assert "A" not in completed


# -- 4. a restart from older data ----------------------------------------------------------


class Witness:
    """A real store, passed through, that notes every commit it saw confirmed under a
    lease token: which owner wrote which run under which token, in order."""

    def __init__(self, inner: RedisStore, owner: str, log: list[tuple[str, str, int]]) -> None:
        self._inner = inner
        self._owner = owner
        self._log = log

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def commit(
        self, run_id: str, *, expected_seq: int, token: int | None, checkpoint: Checkpoint
    ) -> Any:
        committed = await self._inner.commit(
            run_id, expected_seq=expected_seq, token=token, checkpoint=checkpoint
        )
        if token is not None:
            self._log.append((run_id, self._owner, token))
        return committed


class Sink:
    """An external system that honours idempotency keys: the first write of a key is
    applied, a repeated one is recognised and dropped."""

    def __init__(self) -> None:
        self.applied: dict[str, str] = {}
        self.attempts: list[tuple[str, str]] = []

    def write(self, key: str, value: str, by: str) -> None:
        self.attempts.append((key, by))
        self.applied.setdefault(key, value)


STEPS = ["S1", "S2", "S3", "S4"]


def fenced(
    sink: Sink, by: str, gates: dict[str, anyio.Event], inside: dict[str, list[str]]
) -> Workflow:
    """S1 -> S4, each writing to the sink; a step with a gate reports itself inside and
    waits for it to open. Every executor's copy has the same name and version."""

    def step(name: str, after: str) -> Any:
        async def run(ctx: Any) -> str:
            sink.write(ctx.IdempotencyKey, f"{ctx.RunId}/{name}", by)
            gate = gates.get(name)
            if gate is not None:
                inside.setdefault(name, []).append(ctx.RunId)
                await gate.wait()
            return after

        return run

    flow: dict[Any, Any] = {START: lambda ctx: "S1"}
    for name, after in zip(STEPS, [*STEPS[1:], END], strict=True):
        flow[name] = step(name, after)
    return Workflow("fenced", version="v1").Flow(flow)


async def until(what: str, check: Any, timeout: float = 20) -> None:
    """Poll `check()` (a condition in this process or the store) until true, bounded."""
    with anyio.fail_after(timeout):
        while not await check():
            await anyio.sleep(0.02)  # sleep-ok: polling other tasks' progress, bounded


def snapshot(server: RedisProcess) -> None:
    """`SAVE`: the server's data as of now, which a restart loads (append-only is off)."""
    import redis as sync_redis

    client = sync_redis.Redis(port=server.port)
    try:
        client.save()
    finally:
        client.close()


def snapshot_server(directory: Path) -> RedisProcess:
    return RedisProcess(directory, options=("--appendonly", "no"))


async def test_tokens_never_go_back_after_a_restart_from_an_older_snapshot(
    tmp_path: Path,
) -> None:
    """The runs are saved queued; worker A takes them (token t) and is inside S2 when the
    server restarts from that snapshot, which knows nothing of t. Worker B takes them
    again: its tokens must be above t, or A, still alive, would commit as B's equal."""
    server = snapshot_server(tmp_path / "snap").start()
    sink, log = Sink(), []
    gate_a, gate_b = anyio.Event(), anyio.Event()
    inside_a: dict[str, list[str]] = {}
    inside_b: dict[str, list[str]] = {}
    runs = 5
    plain = RedisStore(server.url, key_prefix="fence:")
    store_a = RedisStore(server.url, key_prefix="fence:")
    store_b = RedisStore(server.url, key_prefix="fence:")
    try:
        for opened in (plain, store_a):
            await opened.open()
        async with WorkflowRunner(fenced(sink, "A", {}, {}), plain, execute=False) as submit:
            ids = [(await submit.Run(run_id=f"r{i}")).run_id for i in range(runs)]
        snapshot(server)
        wf_a = fenced(sink, "A", {"S2": gate_a}, inside_a)
        witness_a = cast(Store, Witness(store_a, "A", log))
        async with WorkflowRunner(wf_a, witness_a, lease_ttl=2, owner="A") as runner_a:

            async def a_inside() -> bool:
                return len(inside_a.get("S2", [])) == runs

            await until("A inside S2", a_inside)
            tokens_a = {r: (await plain.load_run(r)).fence for r in ids}  # type: ignore[union-attr]
            server.kill()
            server.start()  # from the snapshot: queued runs, tokens of before A
            restarted = len(log)
            wf_b = fenced(sink, "B", {"S2": gate_b}, inside_b)
            witness_b = cast(Store, Witness(store_b, "B", log))
            async with WorkflowRunner(wf_b, witness_b, lease_ttl=2, owner="B") as runner_b:

                async def b_inside() -> bool:
                    return len(inside_b.get("S2", [])) == runs

                await until("B inside S2", b_inside)
                gate_a.set()  # A, alive all along, tries to go on

                async def a_gone() -> bool:
                    return not runner_a.engine.executions

                await until("A stopped", a_gone)
                gate_b.set()
                for run_id in ids:
                    handle = await runner_b.Get(run_id)
                    await handle.Result(timeout=20)
        for run_id in ids:
            by_owner: dict[str, set[int]] = {}
            for rid, owner, token in log:
                if rid == run_id:
                    by_owner.setdefault(owner, set()).add(token)
            assert not by_owner["A"] & by_owner["B"], f"{run_id}: two owners under one token"
            assert min(by_owner["B"]) > tokens_a[run_id], f"{run_id}: B's token went back"
        assert [entry for entry in log[restarted:] if entry[1] == "A"] == [], (
            "A committed after the restart"
        )
        assert sorted(sink.applied) == sorted(f"{r}:{s}:1" for r in ids for s in STEPS)
        assert {key for key, by in sink.attempts if by == "B"} >= {f"{r}:S1:1" for r in ids}
    finally:
        for opened in (plain, store_a, store_b):
            await opened.close()
        server.kill()


async def test_a_worker_ahead_of_the_store_halts_the_run_instead_of_overwriting(
    tmp_path: Path,
) -> None:
    """The snapshot is taken while A is inside S2; A goes on to S4 and the server restarts
    from it. A, whose checkpoints the store lost, pauses each run where the store has
    it, for an operator; resumed, the runs redo the lost steps, each applied once."""
    server = snapshot_server(tmp_path / "snap").start()
    sink, log = Sink(), []
    at_s2, at_s4 = anyio.Event(), anyio.Event()
    inside: dict[str, list[str]] = {}
    runs = 4
    store = RedisStore(server.url, key_prefix="ahead:")
    try:
        await store.open()
        wf = fenced(sink, "A", {"S2": at_s2, "S4": at_s4}, inside)
        async with WorkflowRunner(wf, cast(Store, Witness(store, "A", log)), lease_ttl=30) as a:
            ids = [(await a.Run(run_id=f"r{i}")).run_id for i in range(runs)]

            async def all_inside(step: str) -> bool:
                return len(inside.get(step, [])) == runs

            await until("inside S2", lambda: all_inside("S2"))
            snapshot(server)
            at_s2.set()
            await until("inside S4", lambda: all_inside("S4"))
            ahead = {r: (await store.load_run(r)).seq for r in ids}  # type: ignore[union-attr]
            server.kill()
            server.start()  # the store now holds each run inside S2
            at_s4.set()
            for run_id in ids:
                handle = await a.Get(run_id)
                paused = await handle.WaitUntil(RunStatus.PAUSED, timeout=20)
                assert paused.body.cursor is not None and paused.body.cursor.step == "S2"
                lost = (await handle.Timeline())[-1]
                assert lost.kind == "checkpoints_lost" and lost.step == "S2"
                assert lost.data["stored_seq"] == paused.seq - 1
                assert lost.data["executor_seq"] == ahead[run_id] > lost.data["stored_seq"]
            for run_id in ids:
                await (await a.Get(run_id)).Resume(by="operator")
            for run_id in ids:
                await (await a.Get(run_id)).Result(timeout=20)
        assert sorted(sink.applied) == sorted(f"{r}:{s}:1" for r in ids for s in STEPS)
        redone = [key for key, _ in sink.attempts if key.endswith(":S3:1")]
        assert len(redone) == 2 * runs, "the lost steps were not redone"
    finally:
        await store.close()
        server.kill()
