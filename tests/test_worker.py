"""`Worker`: many workflows and versions from one store, a concurrency limit, a graceful
stop that hands runs back, synchronous steps in threads, and runs pinned to versions."""

from __future__ import annotations

import threading
import time
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

from holon import (
    END,
    START,
    ExecuteContext,
    Next,
    PoisonRun,
    RunFailed,
    RunStatus,
    StepTimeout,
    Worker,
    Workflow,
    WorkflowDefinitionError,
    WorkflowRunner,
    step,
)
from holon.definition.policies import runs_in_thread
from holon.runtime.definitions import Definitions
from holon.stores.base import Cursor, RunBody, RunRecord, Store
from tests.test_policies import until

pytestmark = pytest.mark.anyio


def versioned(name: str, version: str, label: str) -> Workflow:
    """A one-step flow whose result says which definition ran it."""
    return Workflow(name, version=version).Flow(
        {START: lambda ctx: "Run", "Run": lambda ctx: Next(END, output=label)}
    )


async def queue(workflow: Workflow, store: Store, count: int = 1) -> list[str]:
    async with WorkflowRunner(workflow, store, execute=False) as submitter:
        return [(await submitter.Run()).run_id for _ in range(count)]


async def results(workflow: Workflow, store: Store, run_ids: list[str]) -> list[Any]:
    async with WorkflowRunner(workflow, store, execute=False) as reader:
        return [await (await reader.Get(i)).Result(timeout=10) for i in run_ids]


async def test_one_worker_executes_many_workflows_and_versions(store: Store) -> None:
    a = versioned("a", "1", "a on 1")
    b1, b2 = versioned("b", "1", "b on 1"), versioned("b", "2", "b on 2")
    runs_a, runs_b1 = await queue(a, store, 2), await queue(b1, store, 2)
    runs_b2 = await queue(b2, store, 2)
    async with Worker([a, b1, b2], store, poll_interval=0.01):
        assert await results(a, store, runs_a) == ["a on 1"] * 2
        assert await results(b1, store, runs_b1) == ["b on 1"] * 2
        assert await results(b2, store, runs_b2) == ["b on 2"] * 2


async def test_a_worker_never_runs_more_than_its_concurrency(store: Store) -> None:
    inside = 0
    most = 0
    release = anyio.Event()
    three_in = anyio.Event()

    async def hold(ctx: Any) -> str:
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        if inside == 3:
            three_in.set()
        await release.wait()
        inside -= 1
        return END

    wf = Workflow("held").Flow({START: hold})
    run_ids = await queue(wf, store, 10)
    async with Worker(wf, store, concurrency=3, poll_interval=0.01):
        with anyio.fail_after(10):
            await three_in.wait()
        for _ in range(5):  # the worker keeps looking for work: it takes no fourth run
            await anyio.sleep(0.02)  # sleep-ok: time for a claim that must not happen
        assert most == 3
        release.set()
        await results(wf, store, run_ids)
    assert most == 3


async def test_a_workflow_limit_holds_across_workers(store: Store) -> None:
    from holon.stores.redis import RedisStore

    if isinstance(store, RedisStore) and store.cluster:
        pytest.skip("a global concurrency limit is not supported on a Redis Cluster")
    inside = 0
    most = 0
    two_in = anyio.Event()
    release = anyio.Event()

    async def hold(ctx: Any) -> str:
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        if inside == 2:
            two_in.set()
        await release.wait()
        inside -= 1
        return END

    wf = Workflow("limited").Concurrency(2).Flow({START: hold})
    run_ids = await queue(wf, store, 8)
    async with (
        Worker(wf, store, concurrency=5, poll_interval=0.01),
        Worker(wf, store, concurrency=5, poll_interval=0.01),
        Worker(wf, store, concurrency=5, poll_interval=0.01),
    ):
        with anyio.fail_after(10):
            await two_in.wait()
        for _ in range(5):  # three workers keep looking: none takes a third run
            await anyio.sleep(0.02)  # sleep-ok: time for a claim that must not happen
        assert most == 2
        release.set()
        await results(wf, store, run_ids)
    assert most == 2


def test_concurrency_takes_a_positive_whole_number() -> None:
    assert Workflow("w").Concurrency(3).max_running == 3
    assert Workflow("w").max_running is None
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(WorkflowDefinitionError, match=r"\.Concurrency\(\)"):
            Workflow("w").Concurrency(bad)  # type: ignore[arg-type]


async def test_a_stopping_worker_hands_its_runs_back_at_their_next_step(store: Store) -> None:
    release = anyio.Event()
    entered = 0
    all_in = anyio.Event()
    calls: dict[str, int] = {}

    async def first(ctx: Any) -> str:
        nonlocal entered
        calls["First"] = calls.get("First", 0) + 1
        entered += 1
        if entered == 4:
            all_in.set()
        await release.wait()
        return "Second"

    async def second(ctx: Any) -> str:
        calls["Second"] = calls.get("Second", 0) + 1
        return END

    wf = Workflow("two").Flow({START: first, "Second": second})
    run_ids = await queue(wf, store, 4)
    leaving = Worker(wf, store, poll_interval=0.01, name="leaving")
    async with leaving:
        with anyio.fail_after(10):
            await all_in.wait()
        async with anyio.create_task_group() as group:
            group.start_soon(leaving.run)
            leaving.stop()
            assert not leaving.ready
            release.set()
    for run_id in run_ids:
        record = await store.load_run(run_id)
        assert record is not None and record.status == RunStatus.QUEUED and record.lease is None
        kinds = [e.kind for e in await store.timeline(run_id)]
        assert kinds[-1] == "handed_back"
    async with Worker(wf, store, poll_interval=0.01, name="staying"):
        await results(wf, store, run_ids)
    assert calls == {"First": 4, "Second": 4}  # nothing ran twice
    for run_id in run_ids:
        kinds = [e.kind for e in await store.timeline(run_id)]
        assert "recovered" not in kinds


async def test_stop_now_cancels_steps_and_lets_their_runs_go_at_once(store: Store) -> None:
    entered = anyio.Event()

    async def forever(ctx: Any) -> str:
        entered.set()
        await anyio.sleep_forever()
        return END

    async def finish(ctx: Any) -> str:
        return END

    stuck = Workflow("stuck", version="1").Flow({START: forever})
    (run_id,) = await queue(stuck, store)
    async with Worker(stuck, store, poll_interval=0.01, lease_ttl=3600) as worker:
        with anyio.fail_after(10):
            await entered.wait()
        async with anyio.create_task_group() as group:
            group.start_soon(worker.run)
            worker.stop(now=True)
    record = await store.load_run(run_id)
    assert record is not None and record.status == RunStatus.RUNNING and record.lease is None
    # Another worker takes it over at once, not after the hour-long lease.
    fixed = Workflow("stuck", version="1").Flow({START: finish})
    async with Worker(fixed, store, poll_interval=0.01, lease_ttl=3600):
        await results(fixed, store, [run_id])
    kinds = [e.kind for e in await store.timeline(run_id)]
    assert "recovered" in kinds


async def test_a_blocking_sync_step_holds_up_neither_other_runs_nor_heartbeats(
    store: Store,
) -> None:
    """A step that blocks its thread for three lease times: the lease is renewed all the
    while (a second worker never takes the run over), and another run goes on."""
    lease = 0.6  # renewed every 0.2 s: room for a loaded machine
    ticks = 0
    blocking = threading.Event()

    def block(ctx: Any) -> str:
        blocking.set()
        time.sleep(3 * lease)  # sleep-ok: the blocking call under test
        return END

    async def tick(ctx: Any) -> str:
        nonlocal ticks
        ticks += 1
        await anyio.sleep(0.01)  # sleep-ok: a step that takes a little time
        return END if blocking.is_set() and ticks > 20 else "Tick"

    slow = Workflow("slow").Flow({START: block})
    busy = Workflow("busy").Flow({START: lambda ctx: "Tick", "Tick": tick})
    (slow_run,) = await queue(slow, store)
    async with Worker(slow, store, poll_interval=0.01, lease_ttl=lease, name="first"):
        with anyio.fail_after(10):
            while not blocking.is_set():
                await anyio.sleep(0.005)  # sleep-ok: waiting on a thread's event
        (busy_run,) = await queue(busy, store)
        async with Worker([slow, busy], store, poll_interval=0.01, lease_ttl=lease):
            await results(busy, store, [busy_run])  # it ran while `block` blocked
            await results(slow, store, [slow_run])
    assert ticks > 20
    kinds = [e.kind for e in await store.timeline(slow_run)]
    assert "recovered" not in kinds  # one owner all along


async def test_a_sync_step_that_outlasts_its_timeout_is_let_go(store: Store) -> None:
    returned = threading.Event()

    def slow(ctx: Any) -> Next:
        time.sleep(0.5)  # sleep-ok: the blocking call under test
        returned.set()
        return Next(END, output="late")

    wf = Workflow("late").Flow({START: step(slow, timeout=0.1)})
    (run_id,) = await queue(wf, store)
    async with Worker(wf, store, poll_interval=0.01):
        with pytest.raises(RunFailed, match="StepTimeout"):
            await (await WorkflowRunner(wf, store, execute=False).Get(run_id)).Result(timeout=5)
        returned.wait(5)  # the thread finishes in the background
    record = await store.load_run(run_id)
    assert record is not None and record.status == RunStatus.FAILED
    assert record.body.output is None and record.results == {}  # its late result: dropped
    assert record.body.error is not None and record.body.error.type == StepTimeout.__name__


def test_sync_def_functions_run_in_threads_and_lambdas_and_coroutines_do_not() -> None:
    def plain(ctx: Any) -> str:
        return END

    async def coroutine(ctx: Any) -> str:
        return END

    class Callable:
        async def __call__(self, ctx: Any) -> str:
            return END

    assert runs_in_thread(plain)
    assert not runs_in_thread(coroutine)
    assert not runs_in_thread(lambda ctx: END)
    assert not runs_in_thread(Callable())
    wf = Workflow("w").Flow(
        {
            START: lambda ctx: "A",
            "A": plain,
            "B": coroutine,
            "C": step(plain, thread=False),
            "D": step(lambda ctx: END, thread=True),
        }
    )
    assert {n: s.in_thread for n, s in wf.steps.items()} == {
        START.value: False,
        "A": True,
        "B": False,
        "C": False,
        "D": True,
    }
    with pytest.raises(TypeError, match="thread= takes True or False"):
        step(plain, thread="yes")  # type: ignore[arg-type]


# -- versions ------------------------------------------------------------------------------


def record_on(workflow: str, version: str, moved_to: str | None = None) -> RunRecord:
    return RunRecord(
        run_id="r",
        workflow=workflow,
        version=version,
        status=RunStatus.QUEUED,
        input=None,
        body=RunBody(cursor=Cursor(step="Run"), version=moved_to),
        created_at=0,
        updated_at=0,
    )


async def _noop(ctx: ExecuteContext[Any, Any]) -> None:
    return None


def test_a_run_goes_to_its_own_version_or_forward_never_back() -> None:
    v1, v2, v3 = (versioned("f", v, v) for v in ("1", "2", "3"))
    order = {"f": ["1", "2", "3"]}
    both = Definitions([v1, v2], order)
    assert both.pick(record_on("f", "1")) is v1  # its own, though a newer one is here
    assert both.pick(record_on("f", "2")) is v2
    assert both.pick(record_on("f", "3")) is None  # newer than anything here
    assert both.pick(record_on("f", "1", moved_to="3")) is None  # it moved on to 3
    newest = Definitions([v3], order)
    assert newest.pick(record_on("f", "1")) is v3  # a flow moves forward (adopt checks it)
    assert newest.claimable("f") == ["1", "2", "3"]
    assert Definitions([v1], order).claimable("f") == ["1"]
    assert both.pick(record_on("g", "1")) is None  # a workflow not served here


def test_an_execute_run_moves_forward_only_where_the_new_version_says_so() -> None:
    def ex(version: str) -> Workflow:
        return Workflow("e", version=version).Execute(_noop)

    order = {"e": ["1", "2", "3"]}
    plain_v3 = Definitions([ex("3")], order)
    assert plain_v3.pick(record_on("e", "1")) is None  # its journal cannot be checked
    assert plain_v3.claimable("e") == ["3"]
    declared = Definitions([ex("3").Compatible("1")], order)
    assert declared.pick(record_on("e", "1")) is not None
    assert declared.pick(record_on("e", "2")) is None
    migrated = Definitions([ex("3").Migrate("2", lambda state: state)], order)
    assert migrated.claimable("e") == ["2", "3"]
    with pytest.raises(Exception, match="given twice"):
        Definitions([ex("3"), ex("3").Compatible("1")])


class Note(BaseModel):
    text: str = ""


async def test_runs_started_on_a_newer_version_never_run_on_an_older_ones_code(
    store: Store,
) -> None:
    ran: list[tuple[str, str]] = []

    def make(version: str) -> Workflow:
        def run(ctx: Any) -> str:
            ran.append((ctx.RunId, version))
            return END

        return Workflow("doc", version=version).State(Note).Flow({START: run})

    old, new = make("1"), make("2")
    async with WorkflowRunner(old, store, execute=False):
        pass  # version 1 is in the catalogue first
    new_runs = await queue(new, store, 5)
    old_runs = await queue(old, store, 5)
    async with Worker(old, store, poll_interval=0.01, name="old"):
        await results(old, store, old_runs)
        for _ in range(5):  # the old worker looks for work again and again
            await anyio.sleep(0.02)  # sleep-ok: time for claims that must not happen
        for run_id in new_runs:
            record = await store.load_run(run_id)
            assert record is not None and record.status == RunStatus.QUEUED
    async with Worker(new, store, poll_interval=0.01, name="new"):
        await results(new, store, new_runs)
    assert sorted(v for r, v in ran if r in new_runs) == ["2"] * 5
    assert sorted(v for r, v in ran if r in old_runs) == ["1"] * 5


async def test_a_new_execute_version_leaves_old_runs_to_the_old_code(store: Store) -> None:
    gate = anyio.Event()
    ran: list[str] = []

    async def v1_body(ctx: ExecuteContext[Any, Any]) -> str:
        await ctx.Task(lambda: "first")
        await gate.wait()
        ran.append("v1")
        return "v1"

    async def v2_body(ctx: ExecuteContext[Any, Any]) -> str:
        ran.append("v2")
        return "v2"

    v1 = Workflow("job").Execute(v1_body)
    v2 = Workflow("job").Execute(v2_body)
    (run_id,) = await queue(v1, store)
    async with (
        Worker(v1, store, poll_interval=0.01, name="v1") as worker,
        anyio.create_task_group() as group,
    ):
        group.start_soon(worker.run)
        with anyio.fail_after(10):
            while (await store.timeline(run_id))[-1].kind != "step_completed":
                await anyio.sleep(0.01)  # sleep-ok: polling the store
        worker.stop(now=True)  # the v1 worker goes away mid-run
    before = len(await store.timeline(run_id))
    async with Worker(v2, store, poll_interval=0.01, name="v2", version_grace=0.3):
        # v2 may not take it (it never declared it could), and no live worker executes
        # version 1: past the grace period it is paused, having run nothing more.
        paused = await until(store, run_id, lambda r: r.status == RunStatus.PAUSED)
        assert ran == [] and paused.lease is None
        assert [e.kind for e in await store.timeline(run_id)][before:] == ["paused"]
        assert paused.body.needs_version == v1.version
        event = (await store.timeline(run_id))[-1]
        assert event.kind == "paused"
        assert event.data == {"by": "v2", "reason": f"needs version {v1.version}"}
    gate.set()
    async with Worker(v1, store, poll_interval=0.01, name="v1 again"):  # resumes it
        assert await results(v1, store, [run_id]) == ["v1"]
    assert ran == ["v1"]
    kinds = [e.kind for e in await store.timeline(run_id)]
    assert kinds.count("resumed") == 1 and kinds[-1] == "completed"


async def test_poison_after_is_checked() -> None:
    with pytest.raises(ValueError, match="poison_after"):
        Worker(versioned("p", "1", "p"), "memory://", poison_after=0)
    assert issubclass(PoisonRun, Exception)


@pytest.mark.parametrize("url", ["memory://", "sqlite"])
async def test_a_late_commit_is_refused_and_shows_in_the_timeline(url: str, tmp_path: Any) -> None:
    from holon import ManualClock

    started, release = anyio.Event(), anyio.Event()

    async def slow(ctx: Any) -> str:
        started.set()
        await release.wait()
        return END

    wf = Workflow("late").Flow({START: slow})
    clock = ManualClock()
    store_url = url if url == "memory://" else f"sqlite:///{tmp_path}/late.db"
    async with WorkflowRunner(wf, store_url, clock=clock, lease_ttl=5) as runner:
        handle = await runner.Run()
        with anyio.fail_after(10):
            await started.wait()
        # Another executor takes the run over, as if this one had stalled past its lease
        # (the clock it reads is not moved, so this one's heartbeat has not noticed).
        taken = await runner.store.acquire_lease(handle.run_id, "other", 5, clock.now() + 60)
        assert taken is not None
        release.set()  # the stalled step finishes: its checkpoint comes too late
        with anyio.fail_after(10):
            while not (
                refused := [e for e in await handle.Timeline() if e.kind == "commit_refused"]
            ):
                await runner.store.signals.wait(runner.store.signals.event(handle.run_id), 0.05)
        assert refused[0].data["owner"] == runner.engine.owner
        assert refused[0].step == "__start__"
        assert "token" in refused[0].data["reason"]
        record = await handle.Record()
        assert record.status == RunStatus.RUNNING and record.lease is not None
        assert record.lease.owner == "other"  # the refused commit changed nothing


async def test_parallel_children_run_on_different_workers_and_join_once(store: Store) -> None:
    """Branches as child runs: each is claimed by whichever worker has room, so one
    run's branches execute on several workers at once; the join runs once, when the
    last branch's result is in."""
    from holon import Child, Parallel

    inside = 0
    most = 0
    three_in = anyio.Event()
    joins: list[dict[str, Any]] = []

    async def branch(ctx: Any) -> Next:
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        if inside == 3:
            three_in.set()
        with anyio.fail_after(10):
            await three_in.wait()  # three at once: more than one worker's two places
        inside -= 1
        return Next(END, output=ctx.Input["n"] * 10)

    def join(ctx: Any) -> Next:
        joins.append(dict(ctx.StepResults))
        return Next(END, output=sum(ctx.StepResults[f"b{i}"] for i in range(4)))

    part = Workflow("part").Flow({START: branch})
    whole = Workflow("whole").Flow(
        {
            START: lambda ctx: Parallel(
                [Child(part, {"n": i}, name=f"b{i}") for i in range(4)], "Join"
            ),
            "Join": join,
        }
    )
    (run_id,) = await queue(whole, store)
    async with (
        Worker([whole, part], store, concurrency=2, poll_interval=0.01, name="one"),
        Worker([whole, part], store, concurrency=2, poll_interval=0.01, name="two"),
    ):
        assert await results(whole, store, [run_id]) == [60]
    assert most >= 3  # more than one worker's two places: branches ran on both at once
    assert len(joins) == 1
