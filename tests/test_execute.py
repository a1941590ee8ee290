"""The imperative model: `.Execute(fn)` with tasks, named steps, parallel tasks, waits,
key-value state, replay from the top, and non-determinism detection."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from pydantic import BaseModel

from holon import (
    ExecuteContext,
    HumanApproval,
    RunFailed,
    RunStatus,
    StateValidationError,
    Workflow,
    WorkflowRunner,
)
from holon.definition.policies import Retry
from holon.stores.base import Store

pytestmark = pytest.mark.anyio

calls: list[str] = []


class Topic(BaseModel):
    topic: str


class Progress(BaseModel):
    total: int = 0
    processed: int = 0


async def fetch_papers(topic: str) -> list[str]:
    calls.append("fetch_papers")
    return [f"{topic}-a", f"{topic}-b"]


async def analyse(papers: list[str]) -> str:
    calls.append("analyse")
    return " & ".join(papers)


def search(source: str, topic: str) -> str:
    calls.append(f"search:{source}")
    return f"{source}:{topic}"


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    calls.clear()


async def test_tasks_steps_and_parallel(store: Store) -> None:
    async def research(ctx: ExecuteContext[Topic, Any]) -> dict[str, Any]:
        papers = await ctx.Task(fetch_papers, ctx.Input.topic)
        notes = await ctx.Step("analysis", analyse(papers))
        arxiv, wiki = await ctx.Parallel(
            ctx.Task(search, "arxiv", ctx.Input.topic), ctx.Task(search, "wiki", ctx.Input.topic)
        )
        return {"notes": notes, "sources": [arxiv, wiki]}

    wf = Workflow("research").Input(Topic).Execute(research)
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run({"topic": "qc"})
        result = await handle.Result(timeout=10)
        events = await handle.Timeline()
    assert result == {"notes": "qc-a & qc-b", "sources": ["arxiv:qc", "wiki:qc"]}
    completed = [(e.step, e.data["position"]) for e in events if e.kind == "step_completed"]
    assert sorted(completed, key=lambda c: c[1]) == [
        ("fetch_papers", 0),
        ("analysis", 1),
        ("search", 2),
        ("search#2", 3),
    ]


async def test_resume_replays_recorded_steps_without_running_them(store: Store) -> None:
    gate = anyio.Event()

    async def slow_third(text: str) -> str:
        calls.append("third")
        await gate.wait()
        return text.upper()

    async def pipeline(ctx: ExecuteContext[Topic, Any]) -> str:
        papers = await ctx.Task(fetch_papers, ctx.Input.topic)
        notes = await ctx.Task(analyse, papers)
        return await ctx.Task(slow_third, notes)

    wf = Workflow("pipeline").Input(Topic).Execute(pipeline)
    async with WorkflowRunner(wf, store, lease_ttl=0.2) as first:
        await first.Run({"topic": "qc"}, run_id="p1")
        while "third" not in calls:
            await anyio.wait_all_tasks_blocked()
    assert calls == ["fetch_papers", "analyse", "third"]
    gate.set()
    async with WorkflowRunner(wf, store, lease_ttl=0.2) as second:
        handle = await second.Get("p1")
        assert await handle.Result(timeout=10) == "QC-A & QC-B"
    assert calls == ["fetch_papers", "analyse", "third", "third"]


async def test_a_changed_function_fails_with_non_determinism(store: Store) -> None:
    gate = anyio.Event()

    async def blocked() -> None:
        await gate.wait()

    async def v1(ctx: ExecuteContext[Topic, Any]) -> None:
        await ctx.Task(fetch_papers, ctx.Input.topic)
        await ctx.Task(blocked)

    async def v2(ctx: ExecuteContext[Topic, Any]) -> None:
        await ctx.Task(analyse, ["x"])  # a different step where fetch_papers was recorded
        await ctx.Task(blocked)

    first_version = Workflow("nd").Input(Topic).Execute(v1)
    async with WorkflowRunner(first_version, store) as first:
        await first.Run({"topic": "qc"}, run_id="nd-1")
        while calls != ["fetch_papers"]:
            await anyio.wait_all_tasks_blocked()
    gate.set()
    # The new version claims (wrongly) that it replays the old one's journal.
    second_version = Workflow("nd").Input(Topic).Execute(v2).Compatible(first_version.version)
    async with WorkflowRunner(second_version, store) as second:
        handle = await second.Get("nd-1")
        with pytest.raises(
            RunFailed,
            match="NonDeterminismError: .*at position 0 the journal "
            "records step 'fetch_papers', but the code now "
            "asks for 'analyse'",
        ):
            await handle.Result(timeout=10)


async def test_wait_for_approval_suspends_holding_nothing(store: Store) -> None:
    async def publish(ctx: ExecuteContext[Topic, Any]) -> dict[str, Any]:
        draft = await ctx.Task(analyse, [ctx.Input.topic])
        ok = await ctx.WaitFor(HumanApproval(approvers=["editor"], question="Publish?"))
        if not ok:
            return {"published": False}
        second = await ctx.WaitFor(HumanApproval(approvers=["legal"]))
        return {"published": second, "draft": draft}

    wf = Workflow("publish").Input(Topic).Execute(publish)
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run({"topic": "qc"})
        record = await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        assert record.lease is None
        await handle.Approve(by="editor")
        waiting = await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        assert waiting.body.wait is not None and waiting.body.wait.spec["approvers"] == ["legal"]
        await handle.Approve(by="legal")
        assert await handle.Result(timeout=10) == {"published": True, "draft": "qc"}
        rejected = await runner.Run({"topic": "no"})
        await rejected.WaitUntil(RunStatus.WAITING, timeout=10)
        await rejected.Reject(by="editor")
        assert await rejected.Result(timeout=10) == {"published": False}
    assert calls == ["analyse", "analyse"], "replays after each wait ran nothing twice"


async def test_key_value_state_is_validated_and_replayed(store: Store) -> None:
    async def work(item: str) -> str:
        return item

    async def process(ctx: ExecuteContext[Any, Progress]) -> dict[str, Any]:
        docs = ["a", "b", "c"]
        ctx.State.set("total", len(docs))
        for doc in docs:
            await ctx.Task(work, doc)
            ctx.State.set("processed", ctx.State.get("processed") + 1)
        with pytest.raises(StateValidationError, match="total"):
            ctx.State.set("total", "many")
        await ctx.WaitFor(HumanApproval(approvers=["ops"]))
        ctx.State.set("processed", ctx.State.get("processed") + 10)
        return ctx.State.as_dict()

    wf = Workflow("docs").State(Progress).Execute(process)
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        record = await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        assert record.body.state == {"total": 3, "processed": 3}
        await handle.Approve(by="ops")
        assert await handle.Result(timeout=10) == {"total": 3, "processed": 13}


async def test_task_retries_and_idempotency_keys(store: Store) -> None:
    keys: list[tuple[int, str]] = []

    async def flaky(ctx: ExecuteContext[Any, Any]) -> str:
        return "unused"

    async def charge(amount: int) -> str:
        from holon.runtime.imperative import current_step

        step = current_step()
        assert step is not None
        keys.append((step.Attempt, step.IdempotencyKey))
        if step.Attempt < 2:
            raise ConnectionError("gateway timeout")
        return f"charged {amount}"

    async def body(ctx: ExecuteContext[Any, Any]) -> str:
        return await ctx.Task(charge, 5, retry=Retry(attempts=3, initial_delay=0))

    wf = Workflow("charge").Execute(body)
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run(run_id="c-1")
        assert await handle.Result(timeout=10) == "charged 5"
    assert [a for a, _ in keys] == [1, 2]
    assert keys[0][1] == keys[1][1] == "c-1:charge:1"


async def test_failing_task_fails_the_run_naming_it(store: Store) -> None:
    async def boom() -> None:
        raise ValueError("bad data")

    async def body(ctx: ExecuteContext[Any, Any]) -> None:
        await ctx.Task(boom)

    async with WorkflowRunner(Workflow("fails").Execute(body), store) as runner:
        with pytest.raises(RunFailed, match="in step 'boom': ValueError: bad data"):
            await (await runner.Run()).Result(timeout=10)


async def test_idempotency_key_outside_a_task_is_an_error(store: Store) -> None:
    async def body(ctx: ExecuteContext[Any, Any]) -> str:
        return ctx.IdempotencyKey

    async with WorkflowRunner(Workflow("outside").Execute(body), store) as runner:
        with pytest.raises(RunFailed, match="belongs to the task running now"):
            await (await runner.Run()).Result(timeout=10)


undone: list[tuple[str, Any, str]] = []


def undo_booking(ctx: Any, output: Any) -> None:
    undone.append((ctx.StepName, output, ctx.IdempotencyKey))


async def book(what: str) -> str:
    return f"booked {what}"


async def test_task_compensations_run_in_reverse_when_the_function_fails(store: Store) -> None:
    undone.clear()

    async def trip(ctx: ExecuteContext[Any, Any]) -> None:
        await ctx.Task(book, "flight", compensate=undo_booking)
        await ctx.Task(book, "hotel", compensate=undo_booking)
        raise RuntimeError("no car available")

    async with WorkflowRunner(Workflow("trip").Execute(trip), store) as runner:
        handle = await runner.Run(run_id="t-1")
        with pytest.raises(RunFailed, match="RuntimeError: no car available"):
            await handle.Result(timeout=10)
        record = await handle.Record()
    assert undone == [
        ("book#2", "booked hotel", "t-1:book:2"),
        ("book", "booked flight", "t-1:book:1"),
    ]
    assert record.body.compensated


def test_compensations_of_tasks_must_be_findable_after_a_restart() -> None:
    from holon.runtime.compensation import undo_reference

    with pytest.raises(TypeError, match="must be a module-level function"):
        undo_reference(lambda ctx, output: None)
    assert undo_reference(undo_booking) == "tests.test_execute:undo_booking"


async def test_log_entries_stay_with_their_own_run(store: Store) -> None:
    both_logged = anyio.Event()
    logged = 0

    async def note(what: str) -> str:
        return what

    async def body(ctx: ExecuteContext[Topic, Any]) -> None:
        nonlocal logged
        ctx.Log(f"about {ctx.Input.topic}")
        logged += 1
        if logged == 2:
            both_logged.set()
        await both_logged.wait()  # both runs have a pending entry before either commits
        await ctx.Task(note, ctx.Input.topic)

    async with WorkflowRunner(Workflow("logs").Input(Topic).Execute(body), store) as runner:
        a = await runner.Run({"topic": "a"})
        b = await runner.Run({"topic": "b"})
        await a.Result(timeout=10)
        await b.Result(timeout=10)
        for handle, topic in ((a, "a"), (b, "b")):
            messages = [e.data["message"] for e in await handle.Timeline() if e.kind == "log"]
            assert messages == [f"about {topic}"]
