"""Running flows end to end on every store: steps, state, outputs, Parallel, context."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from pydantic import BaseModel

from holon import (
    END,
    START,
    Context,
    Next,
    Parallel,
    RunFailed,
    RunStatus,
    Workflow,
    WorkflowRunner,
)
from holon.stores.base import Store
from holon.stores.memory import MemoryStore

pytestmark = pytest.mark.anyio


class Topic(BaseModel):
    topic: str


class Notes(BaseModel):
    count: int = 0
    summary: str | None = None


def kinds(events: list[Any]) -> list[tuple[str, str | None]]:
    return [(e.kind, e.step) for e in events]


async def test_linear_flow_with_state_outputs_and_timeline(store: Store) -> None:
    async def fetch(ctx: Context[Topic, Notes]) -> Next:
        ctx.SetState(count=ctx.State.count + 3)
        return Next("Summarise", output={"papers": [f"{ctx.Input.topic}-{i}" for i in range(3)]})

    def summarise(ctx: Context[Topic, Notes]) -> str:
        papers = ctx.StepResults["Fetch"]["papers"]
        ctx.SetState({"summary": " + ".join(papers)})
        return END

    wf = (
        Workflow("research")
        .Input(Topic)
        .State(Notes)
        .Flow({START: lambda ctx: "Fetch", "Fetch": fetch, "Summarise": summarise})
    )
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run({"topic": "qc"})
        result = await handle.Result(timeout=10)
        assert result == {"count": 3, "summary": "qc-0 + qc-1 + qc-2"}
        record = await handle.Record()
        assert record.status == RunStatus.COMPLETED and record.lease is None
        assert record.results == {"Fetch": {"papers": ["qc-0", "qc-1", "qc-2"]}}
        assert kinds(await handle.Timeline()) == [
            ("started", None),
            ("step_started", "__start__"),
            ("step_completed", "__start__"),
            ("step_started", "Fetch"),
            ("step_completed", "Fetch"),
            ("state_changed", "Fetch"),
            ("step_started", "Summarise"),
            ("step_completed", "Summarise"),
            ("state_changed", "Summarise"),
            ("completed", None),
        ]
        seqs = [e.seq for e in await handle.Timeline()]
        assert seqs == list(range(1, len(seqs) + 1))


async def test_a_steps_events_share_its_time_and_log_fields_are_kept_whole(
    store: Store,
) -> None:
    def note(ctx: Context[Any, Notes]) -> str:
        # Fields named like an event's own attributes are data like any other.
        ctx.Log("checked", at="the gate", kind="manual", step="two")
        ctx.SetState(count=1)
        return END

    wf = Workflow("wf").State(Notes).Flow({START: lambda ctx: "Note", "Note": note})
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        await handle.Result(timeout=10)
        events = [e for e in await handle.Timeline() if e.step == "Note" or e.kind == "completed"]
    assert kinds(events) == [
        ("step_started", "Note"),
        ("step_completed", "Note"),
        ("state_changed", "Note"),
        ("log", "Note"),
        ("completed", None),
    ]
    log = events[3]
    assert log.data == {"message": "checked", "at": "the gate", "kind": "manual", "step": "two"}
    # Everything the step's commit wrote happened at one time.
    assert len({e.at for e in events[1:]}) == 1
    assert (await handle.Record()).updated_at == events[-1].at


async def test_next_end_output_is_the_result(store: Store) -> None:
    wf = Workflow("wf").Flow({START: lambda ctx: Next(END, output={"answer": 42})})
    async with WorkflowRunner(wf, store) as runner:
        assert await (await runner.Run()).Result(timeout=10) == {"answer": 42}


async def test_context_ids_attempts_and_idempotency_keys(store: Store) -> None:
    seen: list[tuple[str, str, int, str]] = []

    def loop(ctx: Context[Any, Notes]) -> str:
        seen.append((ctx.RunId, ctx.StepName, ctx.Attempt, ctx.IdempotencyKey))
        ctx.SetState(count=ctx.State.count + 1)
        return "Loop" if ctx.State.count < 3 else END

    wf = Workflow("wf").State(Notes).Flow({START: lambda ctx: "Loop", "Loop": loop})
    async with WorkflowRunner(wf, store) as runner:
        one = await runner.Run(run_id="one")
        await one.Result(timeout=10)
        two = await runner.Run(run_id="two")
        await two.Result(timeout=10)
    keys_one = [key for run, _, _, key in seen if run == "one"]
    keys_two = [key for run, _, _, key in seen if run == "two"]
    assert len(set(keys_one)) == 3, "each occurrence of a looping step gets its own key"
    assert not set(keys_one) & set(keys_two), "keys differ across runs"
    assert all(step == "Loop" and attempt == 1 for _, step, attempt, _ in seen)


async def test_same_run_id_returns_the_same_run(store: Store) -> None:
    calls = 0

    def count(ctx: object) -> str:
        nonlocal calls
        calls += 1
        return END

    wf = Workflow("wf").Flow({START: count})
    async with WorkflowRunner(wf, store) as runner:
        first = await runner.Run(run_id="order-17")
        await first.Result(timeout=10)
        second = await runner.Run(run_id="order-17")
        assert second.run_id == first.run_id
        assert await second.Status() == RunStatus.COMPLETED
    assert calls == 1


async def test_parallel_branches_by_name_and_callable(store: Store) -> None:
    both_started = anyio.Event()
    started: set[str] = set()

    async def branch(ctx: Context[Any, Any]) -> dict[str, str]:
        started.add(ctx.StepName)
        if len(started) == 2:
            both_started.set()
        await both_started.wait()  # proves the branches run concurrently
        return {"built": ctx.StepName}

    async def build_win(ctx: Context[Any, Any]) -> str:
        return "win.zip"

    def join(ctx: Context[Any, Any]) -> Next:
        return Next(END, output=dict(ctx.StepResults))

    wf = Workflow("wf").Flow(
        {
            START: lambda ctx: Parallel(["Linux", "Mac"], "Bundle"),
            "Linux": branch,
            "Mac": branch,
            "Bundle": lambda ctx: Parallel([build_win], "Join"),
            "Join": join,
        }
    )
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        result = await handle.Result(timeout=10)
    assert result == {"Linux": {"built": "Linux"}, "Mac": {"built": "Mac"}, "build_win": "win.zip"}
    events = kinds(await handle.Timeline())
    assert ("parallel_started", "__start__") in events
    assert ("branch_completed", "build_win") in events


async def test_failing_branch_fails_the_run_and_cancels_siblings(store: Store) -> None:
    cancelled = anyio.Event()

    async def slow(ctx: object) -> str:
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()
        return "never"

    async def broken(ctx: object) -> str:
        raise RuntimeError("disk full")

    wf = Workflow("wf").Flow(
        {
            START: lambda ctx: Parallel(["Slow", "Broken"], "Join"),
            "Slow": slow,
            "Broken": broken,
            "Join": lambda ctx: END,
        }
    )
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        with pytest.raises(RunFailed, match="in step 'Broken': RuntimeError: disk full") as info:
            await handle.Result(timeout=10)
        assert info.value.status == "failed" and info.value.step == "Broken"
    assert cancelled.is_set()
    failed = (await handle.Timeline())[-1]
    assert failed.kind == "failed" and "disk full" in failed.data["traceback"]


async def test_list_filters_by_status_and_workflow(store: Store) -> None:
    wf = Workflow("listed").Flow({START: lambda ctx: END})
    async with WorkflowRunner(wf, store) as runner:
        for i in range(3):
            await (await runner.Run(run_id=f"r{i}")).Result(timeout=10)
        page = await runner.List(status="completed", workflow="listed", limit=2)
        assert [s.run_id for s in page.items] == ["r2", "r1"]
        rest = await runner.List(status="completed", limit=2, cursor=page.next_cursor)
        assert [s.run_id for s in rest.items] == ["r0"]
        assert (await runner.List(status=RunStatus.FAILED)).items == []


async def test_snake_case_aliases_work() -> None:
    wf = Workflow("wf").Flow({START: lambda ctx: Next(END, output=1)})
    async with WorkflowRunner(wf, "memory://") as runner:
        handle = await runner.run()  # type: ignore[attr-defined]
        assert await handle.result(timeout=10) == 1  # type: ignore[attr-defined]
        assert await handle.status() == RunStatus.COMPLETED  # type: ignore[attr-defined]


async def test_runner_without_async_with_starts_in_the_background(tmp_path: Any) -> None:
    wf = Workflow("wf").Flow({START: lambda ctx: Next(END, output="done")})
    runner = WorkflowRunner(wf, f"sqlite:///{tmp_path / 'one-liner.db'}")
    handle = await runner.Run()
    assert await handle.Result(timeout=10) == "done"
    await runner.Close()


async def test_watch_streams_events_live_until_the_end(store: Store) -> None:
    release = anyio.Event()

    async def gated(ctx: object) -> str:
        await release.wait()
        return END

    wf = Workflow("wf").Flow({START: lambda ctx: "Gated", "Gated": gated})
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        seen: list[str] = []
        async for event in handle.Watch(timeout=10):
            seen.append(event.kind)
            if event.kind == "step_started" and event.step == "Gated":
                release.set()  # the run goes on only once the watcher has seen this
        assert seen[-2:] == ["step_completed", "completed"]
        assert seen == [e.kind for e in await handle.Timeline()]
        later = [e.seq async for e in handle.Watch(after=3)]
        assert later == list(range(4, len(seen) + 1))


async def test_waiting_on_a_long_run_does_not_reload_it_at_every_step(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads = 0
    load_run = store.load_run

    async def counting(run_id: str) -> Any:
        nonlocal loads
        loads += 1
        return await load_run(run_id)

    monkeypatch.setattr(store, "load_run", counting)

    def loop(ctx: Context[Any, Notes]) -> str:
        ctx.SetState(count=ctx.State.count + 1)
        return "Loop" if ctx.State.count < 300 else END

    wf = Workflow("long").State(Notes).Flow({START: lambda ctx: "Loop", "Loop": loop})
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        assert (await handle.Result(timeout=30))["count"] == 300
    assert loads <= 5, f"{loads} full reads while waiting on one run"


class AnswerHeldStore(MemoryStore):
    """A store whose claims are applied at once but answered only when `answer` is set:
    a claim on its way, as over a network, when the runner starts to close."""

    def __init__(self) -> None:
        super().__init__()
        self.claimed = anyio.Event()
        self.answer = anyio.Event()

    async def claim(
        self, owner: str, workflows: Any, limit: int, ttl: float, now: float, **kwargs: Any
    ) -> Any:
        grants = await super().claim(owner, workflows, limit, ttl, now, **kwargs)
        if grants:
            self.claimed.set()
            await self.answer.wait()
        return grants


async def test_a_runner_closing_while_a_claim_is_on_its_way_leaves_no_lease_behind() -> None:
    store = AnswerHeldStore()
    wf = Workflow("w").Flow({START: lambda ctx: END})
    async with WorkflowRunner(wf, store, execute=False) as submitter:
        handle = await submitter.Run()
    closed = anyio.Event()

    async def close_when_claimed() -> None:
        async with WorkflowRunner(wf, store, lease_ttl=3600):
            await store.claimed.wait()  # the claim took the lease; its answer is held
        closed.set()

    async with anyio.create_task_group() as group:
        group.start_soon(close_when_claimed)
        await store.claimed.wait()
        await anyio.wait_all_tasks_blocked()  # the runner is closing, held by the claim
        assert not closed.is_set()
        store.answer.set()
    record = await store.load_run(handle.run_id)
    assert record is not None and record.lease is None, "the closed runner kept the lease"
    # So another runner takes the run at once, not an hour later.
    async with WorkflowRunner(wf, store) as runner:
        assert await (await runner.Get(handle.run_id)).Result(timeout=10) == {}
