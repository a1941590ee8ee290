"""Child runs on every store: a flow step's `Child(...)` and `.Execute()`'s
`ctx.Child(...)` start a durable run of their own, the parent waits holding nothing,
the child's output lands in the parent's step results, parent and child name each
other in records and timelines, and stopping the parent stops its children."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from holon import (
    END,
    START,
    Child,
    ChildFailed,
    Context,
    ExecuteContext,
    HumanApproval,
    Next,
    Parallel,
    RunFailed,
    RunStatus,
    Wait,
    Workflow,
    WorkflowRunner,
)
from holon.stores.base import Store

pytestmark = pytest.mark.anyio


class Number(BaseModel):
    n: int


def double(ctx: Context[Number, Any]) -> Next:
    return Next(END, output={"doubled": ctx.Input.n * 2})


Doubler = Workflow("doubler").Input(Number).Flow({START: double})
Broken = Workflow("broken").Flow({START: lambda ctx: 1 / 0})
Gated = Workflow("gated").Flow(
    {START: lambda ctx: Wait(HumanApproval(approvers=["ops"]), "Done"), "Done": lambda c: END}
)


def use(ctx: Context[Any, Any]) -> Next:
    return Next(END, output={"result": ctx.StepResults["Spawn"], "decision": ctx.Decision})


Parent = Workflow("parent").Flow(
    {
        START: lambda ctx: "Spawn",
        "Spawn": lambda ctx: Child(Doubler, {"n": 21}, "Use"),
        "Use": use,
    }
)


async def test_a_flow_child_runs_and_its_output_lands_in_the_parents_results(
    store: Store,
) -> None:
    async with WorkflowRunner(Parent, store) as runner:
        handle = await runner.Run(run_id="family")
        result = await handle.Result(timeout=10)
        child_id = "family/Spawn#1"
        assert result["result"] == {"doubled": 42}
        assert result["decision"] == {
            "run_id": child_id,
            "workflow": "doubler",
            "status": "completed",
            "output": {"doubled": 42},
            "error": None,
        }
        parent = await handle.Record()
        assert parent.body.children == [child_id]
        assert parent.results["Spawn"] == {"doubled": 42}
        child = await (await runner.Get(child_id)).Record()
        assert child.status == RunStatus.COMPLETED
        assert child.body.parent is not None
        assert (child.body.parent.run_id, child.body.parent.step) == ("family", "Spawn")
        timeline = await handle.Timeline()
        started = next(e for e in timeline if e.kind == "child_started")
        ended = next(e for e in timeline if e.kind == "child_ended")
        assert started.data["child_run_id"] == child_id and started.step == "Spawn"
        assert ended.data == {
            "child_run_id": child_id,
            "workflow": "doubler",
            "status": "completed",
        }
        child_started = (await runner.store.timeline(child_id, 0))[0]
        assert child_started.data["parent"] == {"run_id": "family", "step": "Spawn"}


async def test_a_child_that_fails_fails_its_parent_or_goes_to_on_failure(store: Store) -> None:
    failing = Workflow("failing").Flow(
        {START: lambda ctx: Child(Broken, None, "Done"), "Done": lambda ctx: END}
    )
    tolerant = Workflow("tolerant").Flow(
        {
            START: lambda ctx: Child(Broken, None, "Done", on_failure="Cope"),
            "Done": lambda ctx: END,
            "Cope": lambda ctx: Next(END, output=ctx.Decision["status"]),
        }
    )
    async with WorkflowRunner(failing, store) as runner:
        handle = await runner.Run()
        with pytest.raises(RunFailed, match="ChildFailed: child run .* ended failed: Zero"):
            await handle.Result(timeout=10)
    async with WorkflowRunner(tolerant, store) as runner:
        assert await (await runner.Run()).Result(timeout=10) == "failed"


async def test_a_child_by_an_unknown_name_or_with_a_bad_input_fails_the_parent_step(
    store: Store,
) -> None:
    unknown = Workflow("unknown").Flow(
        {START: lambda ctx: Child("nobody", None, "Done"), "Done": lambda ctx: END}
    )
    bad_input = Workflow("bad-input").Flow(
        {START: lambda ctx: Child(Doubler, {"n": "many"}, "Done"), "Done": lambda ctx: END}
    )
    typo = Workflow("typo").Flow(
        {START: lambda ctx: Child(Doubler, {"n": 1}, "Dnoe"), "Done": lambda ctx: END}
    )
    async with WorkflowRunner(unknown, store) as runner:
        with pytest.raises(RunFailed, match="WorkflowNotFound: Child\\('nobody'"):
            await (await runner.Run()).Result(timeout=10)
    for wf, error in ((bad_input, "InputValidationError"), (typo, "UnknownStepError")):
        async with WorkflowRunner(wf, store) as runner:
            handle = await runner.Run()
            with pytest.raises(RunFailed, match=error):
                await handle.Result(timeout=10)
            assert (await handle.Record()).body.children == []
    assert (await store.list_runs(workflow="doubler")).items == [], "no child was made"


async def test_execute_awaits_children_and_catches_their_failure(store: Store) -> None:
    async def family(ctx: ExecuteContext[Any, Any]) -> dict[str, Any]:
        first = await ctx.Child(Doubler, {"n": 1})
        second = await ctx.Child("doubler", {"n": 2})
        try:
            await ctx.Child(Broken)
        except ChildFailed as failed:
            return {"first": first, "second": second, "broken": failed.status}
        return {}

    async with WorkflowRunner(Workflow("family").Execute(family), store) as runner:
        handle = await runner.Run(run_id="fam")
        assert await handle.Result(timeout=10) == {
            "first": {"doubled": 2},
            "second": {"doubled": 4},
            "broken": "failed",
        }
        record = await handle.Record()
        assert record.body.children == [
            "fam/child:doubler#1",
            "fam/child:doubler#2",
            "fam/child:broken#1",
        ]


async def test_stopping_the_parent_stops_the_child_that_waits(store: Store) -> None:
    holder = Workflow("holder").Flow(
        {START: lambda ctx: Child(Gated, None, "Done"), "Done": lambda ctx: END}
    )
    async with WorkflowRunner(holder, store) as runner:
        handle = await runner.Run(run_id="holder")
        await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        child_handle = await runner.Get("holder/__start__#1")
        await child_handle.WaitUntil(RunStatus.WAITING, timeout=10)
        assert (await handle.Record()).lease is None, "the parent waits holding nothing"
        assert await handle.Stop(by="ops") == RunStatus.STOPPED
        assert await child_handle.Status() == RunStatus.STOPPED
        kinds = [e.kind for e in await child_handle.Timeline()]
        assert kinds[-1] == "stopped"


async def test_a_child_that_ended_before_its_parent_waited_is_taken_in(store: Store) -> None:
    """The child ran (here: by another runner) before its parent's wait was written: the
    parent's executor finds it ended once it waits, and goes on."""
    from holon.runtime.starting import new_run, validate_input
    from holon.stores.base import RunLink

    async with WorkflowRunner(Parent, store, execute=False) as submitter:
        await submitter.Run(run_id="early")
    record, events = new_run(
        Doubler,
        validate_input(Doubler, {"n": 21}),
        "early/Spawn#1",
        1.0,
        parent=RunLink(run_id="early", step="Spawn"),
    )
    await store.create_run(record, events)
    async with WorkflowRunner(Doubler, store) as child_runner:
        child = await child_runner.Get("early/Spawn#1")
        assert await child.Result(timeout=10) == {"doubled": 42}
    async with WorkflowRunner(Parent, store) as runner:
        handle = await runner.Get("early")
        result = await handle.Result(timeout=10)
        assert result["result"] == {"doubled": 42}


async def test_a_parallel_of_children_joins_once_all_completed(store: Store) -> None:
    fan = Workflow("fan").Flow(
        {
            START: lambda ctx: Parallel(
                [
                    Child(Doubler, {"n": 1}),
                    Child(Doubler, {"n": 2}),
                    Child(Doubler, {"n": 3}, name="third"),
                ],
                "Join",
            ),
            "Join": lambda ctx: Next(END, output=dict(ctx.StepResults)),
        }
    )
    async with WorkflowRunner(fan, store) as runner:
        handle = await runner.Run(run_id="fan")
        assert await handle.Result(timeout=10) == {
            "doubler": {"doubled": 2},
            "doubler#2": {"doubled": 4},
            "third": {"doubled": 6},
        }
        record = await handle.Record()
        base = "fan/__start__#1"
        assert record.body.children == [f"{base}/doubler", f"{base}/doubler#2", f"{base}/third"]
        timeline = await handle.Timeline()
        assert [e.kind for e in timeline].count("child_ended") == 3


async def test_a_parallel_child_that_fails_fails_the_parent_once_all_ended(store: Store) -> None:
    fan = Workflow("fan-fail").Flow(
        {
            START: lambda ctx: Parallel([Child(Doubler, {"n": 1}), Child(Broken, None)], "Join"),
            "Join": lambda ctx: END,
        }
    )
    async with WorkflowRunner(fan, store) as runner:
        handle = await runner.Run(run_id="fan-fail")
        with pytest.raises(RunFailed, match="ChildFailed: child run .*broken.* ended failed"):
            await handle.Result(timeout=10)
        record = await handle.Record()
        assert record.results["doubler"] == {"doubled": 2}
        assert sorted(record.body.decision["children"]) == ["broken", "doubler"]


async def test_a_parallel_of_steps_and_children_is_refused(store: Store) -> None:
    mixed = Workflow("mixed").Flow(
        {
            START: lambda ctx: Parallel(["Step", Child(Doubler, {"n": 1})], "Step"),
            "Step": lambda ctx: END,
        }
    )
    async with WorkflowRunner(mixed, store) as runner:
        with pytest.raises(RunFailed, match="runs steps or children"):
            await (await runner.Run()).Result(timeout=10)
