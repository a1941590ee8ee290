"""Operators steering runs: Pause, Resume (goto, state), Stop, Approve, Reject."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from pydantic import BaseModel

from holon import (
    END,
    START,
    Context,
    HumanApproval,
    InvalidRunState,
    NotAnApprover,
    NotWaiting,
    RunFailed,
    RunStatus,
    StateValidationError,
    UnknownStepError,
    Wait,
    Workflow,
    WorkflowRunner,
)
from holon.stores.base import Store

pytestmark = pytest.mark.anyio


class Counter(BaseModel):
    visits: list[str] = []
    limit: int = 10


def visit(name: str, then: str) -> Any:
    def step(ctx: Context[Any, Counter]) -> str:
        ctx.SetState(visits=[*ctx.State.visits, name])
        return then

    step.__name__ = name
    return step


def kinds(events: list[Any]) -> list[str]:
    return [e.kind for e in events]


async def test_pause_takes_effect_at_the_next_boundary(store: Store) -> None:
    in_a, release_a = anyio.Event(), anyio.Event()

    async def a(ctx: Context[Any, Counter]) -> str:
        in_a.set()
        await release_a.wait()
        ctx.SetState(visits=["A"])
        return "B"

    wf = (
        Workflow("wf")
        .State(Counter)
        .Flow({START: lambda ctx: "A", "A": a, "B": visit("B", "C"), "C": visit("C", END)})
    )
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        await in_a.wait()
        assert await handle.Pause(by="op") == RunStatus.RUNNING  # requested, not yet applied
        release_a.set()
        record = await handle.WaitUntil(RunStatus.PAUSED, timeout=10)
        assert record.body.cursor is not None and record.body.cursor.step == "B"
        assert record.body.state["visits"] == ["A"], "the running step finished and was kept"
        events = await handle.Timeline()
        assert kinds(events)[-2:] == ["step_started", "paused"]
        assert events[-1].data["by"] == "op"
        assert await handle.Resume(by="op") == RunStatus.QUEUED
        assert await handle.Result(timeout=10) == {"visits": ["A", "B", "C"], "limit": 10}
        assert "resumed" in kinds(await handle.Timeline())


async def test_resume_with_goto_and_state_patch(store: Store) -> None:
    wf = (
        Workflow("wf")
        .State(Counter)
        .Flow(
            {
                START: lambda ctx: Wait(HumanApproval(approvers=["ops"]), "B"),
                "B": visit("B", "C"),
                "C": visit("C", END),
            }
        )
    )
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        assert await handle.Pause() == RunStatus.PAUSED
        with pytest.raises(UnknownStepError, match="'Nope' is not a step.*known steps"):
            await handle.Resume(goto="Nope")
        with pytest.raises(StateValidationError, match="limit"):
            await handle.Resume(state={"limit": "many"})
        with pytest.raises(StateValidationError, match="has no field 'limt'"):
            await handle.Resume(state={"limt": 3})
        assert await handle.Status() == RunStatus.PAUSED, "refused resumes change nothing"
        await handle.Resume(goto="C", state={"limit": 3}, by="op")
        assert await handle.Result(timeout=10) == {"visits": ["C"], "limit": 3}
        resumed = next(e for e in await handle.Timeline() if e.kind == "resumed")
        assert resumed.data == {"by": "op", "goto": "C", "state": {"limit": 3}}


async def test_pause_and_resume_a_waiting_run_keeps_the_wait(store: Store) -> None:
    wf = (
        Workflow("wf")
        .State(Counter)
        .Flow(
            {START: lambda ctx: Wait(HumanApproval(approvers=["ops"]), "B"), "B": visit("B", END)}
        )
    )
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        await handle.Pause()
        with pytest.raises(NotWaiting, match="paused, not waiting"):
            await handle.Approve(by="ops")
        assert await handle.Resume() == RunStatus.WAITING
        waiting = await handle.Waiting()
        assert waiting is not None and waiting.spec["approvers"] == ["ops"]
        await handle.Approve(by="ops")
        assert (await handle.Result(timeout=10))["visits"] == ["B"]


async def test_resume_refuses_a_running_or_finished_run(store: Store) -> None:
    wf = Workflow("wf").Flow({START: lambda ctx: END})
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        await handle.Result(timeout=10)
        with pytest.raises(InvalidRunState, match="is completed; Resume"):
            await handle.Resume()
        with pytest.raises(InvalidRunState, match="already ended completed; cannot pause"):
            await handle.Pause()
        with pytest.raises(InvalidRunState, match="already ended completed; cannot stop"):
            await handle.Stop()


async def test_stop_cancels_a_running_step(store: Store) -> None:
    in_step, step_cancelled = anyio.Event(), anyio.Event()

    async def forever(ctx: object) -> str:
        in_step.set()
        try:
            await anyio.sleep_forever()
        finally:
            step_cancelled.set()
        return END

    wf = Workflow("wf").Flow({START: lambda ctx: "Forever", "Forever": forever})
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        await in_step.wait()
        with anyio.fail_after(5):
            assert await handle.Stop(by="op") == RunStatus.STOPPED
        assert step_cancelled.is_set()
        events = await handle.Timeline()
        assert events[-1].kind == "stopped" and events[-1].step == "Forever"
        record = await handle.Record()
        assert record.lease is None and record.control is None
        with pytest.raises(RunFailed, match="ended stopped"):
            await handle.Result(timeout=1)
        assert await handle.Stop() == RunStatus.STOPPED  # stopping twice is fine


async def test_stop_a_waiting_run_then_decisions_are_refused(store: Store) -> None:
    wf = Workflow("wf").Flow(
        {START: lambda ctx: Wait(HumanApproval(approvers=["ops"]), "B"), "B": lambda ctx: END}
    )
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        assert await handle.Stop(by="op") == RunStatus.STOPPED
        with pytest.raises(NotWaiting, match="is stopped, not waiting"):
            await handle.Approve(by="ops")
        assert await handle.Status() == RunStatus.STOPPED
        events = await handle.Timeline()
        assert kinds(events)[-2:] == ["stopped", "decision_refused"]
        assert events[-1].data["by"] == "ops" and events[-1].data["error"] == "NotWaiting"


async def test_approval_gate(store: Store) -> None:
    wf = (
        Workflow("wf")
        .State(Counter)
        .Flow(
            {
                START: lambda ctx: Wait(
                    HumanApproval(approvers=["ops-lead", "cto"], question="Ship?"), "Release"
                ),
                "Release": lambda ctx: END if ctx.Decision["approved"] else "Release",
            }
        )
    )
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        before = await handle.Record()
        assert before.lease is None, "a waiting run holds nothing"
        with pytest.raises(NotAnApprover, match="'intern' is not an approver") as info:
            await handle.Approve(by="intern")
        assert info.value.by == "intern"
        after = await handle.Record()
        assert after.status == RunStatus.WAITING and after.body == before.body
        assert after.event_seq == before.event_seq + 1, "only the refusal was recorded"
        refused = (await handle.Timeline())[-1]
        assert refused.kind == "decision_refused" and refused.data["by"] == "intern"
        await handle.Approve(by="ops-lead", comment="looks good")
        await handle.Result(timeout=10)
        decision = [e for e in await handle.Timeline() if e.kind == "decision"]
        assert [(d.data["by"], d.data["comment"]) for d in decision] == [("ops-lead", "looks good")]
        with pytest.raises(NotWaiting, match="is completed, not waiting"):
            await handle.Approve(by="ops-lead")


async def test_reject_ends_the_run_or_goes_to_on_reject(store: Store) -> None:
    wf = Workflow("wf").Flow(
        {
            START: lambda ctx: Wait(HumanApproval(approvers=["ops"]), "Release"),
            "Release": lambda ctx: END,
        }
    )
    wf_with_fallback = (
        Workflow("wf2")
        .State(Counter)
        .Flow(
            {
                START: lambda ctx: Wait(
                    HumanApproval(approvers=["ops"]), "Release", on_reject="Rollback"
                ),
                "Release": lambda ctx: END,
                "Rollback": visit("Rollback", END),
            }
        )
    )
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        assert await handle.Reject(by="ops", comment="not today") == RunStatus.REJECTED
        with pytest.raises(RunFailed, match="ended rejected") as info:
            await handle.Result(timeout=1)
        assert info.value.status == "rejected"
    async with WorkflowRunner(wf_with_fallback, store) as runner:
        handle = await runner.Run()
        await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        await handle.Reject(by="ops")
        assert (await handle.Result(timeout=10))["visits"] == ["Rollback"]


async def test_quorum_of_two_and_duplicate_approvals(store: Store) -> None:
    wf = Workflow("wf").Flow(
        {
            START: lambda ctx: Wait(
                HumanApproval(approvers=["a", "b", "c"], min_approvals=2), "Done"
            ),
            "Done": lambda ctx: END,
        }
    )
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        assert await handle.Approve(by="a") == RunStatus.WAITING
        assert await handle.Approve(by="a") == RunStatus.WAITING  # recorded once
        assert await handle.Approve(by="b") == RunStatus.QUEUED
        await handle.Result(timeout=10)
        decisions = [e.data["by"] for e in await handle.Timeline() if e.kind == "decision"]
        assert decisions == ["a", "b"]
