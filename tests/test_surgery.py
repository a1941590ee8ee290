"""Run surgery on real recorded runs, on a real SQLite file and a real Redis: retry after
a failure and after a fixed `NonDeterminismError`, re-run a step with its diff, replay
with a cassette, fork with a state patch, and bulk verbs."""

from __future__ import annotations

from typing import Any, Literal

import anyio
import pytest
from pydantic import BaseModel

from holon import (
    END,
    START,
    Client,
    Event,
    ExecuteContext,
    HumanApproval,
    InvalidRunState,
    Next,
    NonDeterminismError,
    RunFailed,
    RunStatus,
    StateValidationError,
    Wait,
    Workflow,
    WorkflowRunner,
    step,
)
from holon.stores.base import Store
from tests.durable_stores import durable, same_data

pytestmark = pytest.mark.anyio

__all__ = ["durable"]  # the fixture, imported for the tests here


class Tally(BaseModel):
    total: int = 0
    note: str = ""


def counting_flow(calls: dict[str, int], keys: list[str], broken: dict[str, bool]) -> Workflow:
    """Add -> Charge (fails while `broken`) -> Ship; counts each step's calls."""

    def add(ctx: Any) -> Literal["Charge"]:
        calls["Add"] = calls.get("Add", 0) + 1
        ctx.SetState(total=ctx.State.total + 5)
        return "Charge"

    def charge(ctx: Any) -> Literal["Ship"]:
        calls["Charge"] = calls.get("Charge", 0) + 1
        keys.append(ctx.IdempotencyKey)
        if broken["Charge"]:
            raise RuntimeError("card service down")
        return "Ship"

    def ship(ctx: Any) -> Next:
        calls["Ship"] = calls.get("Ship", 0) + 1
        return Next(END, output={"total": ctx.State.total})

    return (
        Workflow("billing", version="1")
        .State(Tally)
        .Flow({START: lambda ctx: "Add", "Add": add, "Charge": charge, "Ship": ship})
    )


async def test_retry_continues_a_failed_run_without_rerunning_completed_steps(
    durable: Store,
) -> None:
    calls: dict[str, int] = {}
    keys: list[str] = []
    broken = {"Charge": True}
    async with WorkflowRunner(counting_flow(calls, keys, broken), durable) as runner:
        handle = await runner.Run()
        with pytest.raises(RunFailed, match="card service down"):
            await handle.Result(timeout=10)
        broken["Charge"] = False
        assert await handle.Retry(by="ops") in (RunStatus.QUEUED, RunStatus.RUNNING)
        assert await handle.Result(timeout=10) == {"total": 5}
        with pytest.raises(InvalidRunState, match="completed; Retry"):
            await handle.Retry(by="ops")
        timeline = await handle.Timeline()
    assert calls == {"Add": 1, "Charge": 2, "Ship": 1}
    assert keys[0] == keys[1]  # the same idempotency key for the new attempt
    [retried] = [e for e in timeline if e.kind == "retried"]
    assert retried.data["by"] == "ops" and retried.data["previous"] == "failed"
    assert retried.step == "Charge" and retried.data["attempt"] == 2


async def test_retry_of_a_stopped_waiting_run_waits_again_and_goto_with_state(
    durable: Store,
) -> None:
    gate = (
        Workflow("gate", version="1")
        .State(Tally)
        .Flow(
            {
                START: lambda ctx: Wait(HumanApproval(approvers=["ann"]), "Done"),
                "Done": lambda ctx: Next(END, output=ctx.State.total),
            }
        )
    )
    async with WorkflowRunner(gate, durable) as runner:
        handle = await runner.Run()
        await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        assert await handle.Stop(by="ops") == RunStatus.STOPPED
        assert await handle.Retry(by="ops") == RunStatus.WAITING
        assert [w.run_id for w in await runner.Pending("ann")] == [handle.run_id]
        await handle.Stop(by="ops")
        with pytest.raises(StateValidationError, match="no field 'nope'"):
            await handle.Retry(goto="Done", state={"nope": 1})
        await handle.Retry(goto="Done", state={"total": 7}, by="ops")
        assert await handle.Result(timeout=10) == 7


def journal_code(calls: dict[str, int], first: str) -> Any:
    """An .Execute() function whose first task is named `first`."""

    async def fetch() -> str:
        calls["fetch"] = calls.get("fetch", 0) + 1
        return "data"

    async def other() -> str:
        calls["other"] = calls.get("other", 0) + 1
        return "other"

    async def publish(value: str) -> str:
        calls["publish"] = calls.get("publish", 0) + 1
        return f"published {value}"

    async def research(ctx: ExecuteContext[Any, Any]) -> str:
        got = await ctx.Task(fetch if first == "fetch" else other)
        await ctx.WaitFor(Event("go"))
        return await ctx.Task(publish, got)

    return research


async def test_retry_continues_an_execute_run_after_its_nondeterminism_is_fixed(
    durable: Store,
) -> None:
    calls: dict[str, int] = {}

    def version(first: str) -> Workflow:
        return Workflow("research", version="1").Execute(journal_code(calls, first))

    async with WorkflowRunner(version("fetch"), durable) as runner:
        handle = await runner.Run()
        await handle.WaitUntil(RunStatus.WAITING, timeout=10)
    # A deploy changes the code under the run in flight: its replay meets the change.
    async with WorkflowRunner(version("other"), durable) as changed:
        handle = await changed.Get(handle.run_id)
        await handle.Send("go")
        with pytest.raises(RunFailed, match="NonDeterminismError"):
            await handle.Result(timeout=10)
    record = await handle.Record()
    assert record.body.error is not None and record.body.error.type == "NonDeterminismError"
    assert "journal records step 'fetch'" in record.body.error.message
    assert NonDeterminismError.__name__ == record.body.error.type
    # The code is fixed: the run continues from its journal.
    async with WorkflowRunner(version("fetch"), durable) as fixed:
        handle = await fixed.Get(handle.run_id)
        await handle.Retry(by="ops")
        assert await handle.Result(timeout=10) == "published data"
    assert calls == {"fetch": 1, "publish": 1}  # fetch replayed from the journal, not run


class Score(BaseModel):
    score: int = 0
    label: str = ""


async def test_rerun_runs_one_step_from_its_snapshot_and_reports_the_diff(
    durable: Store,
) -> None:
    factor = {"value": 2}
    ran: list[str] = []

    def grade(ctx: Any) -> Next:
        ran.append(ctx.IdempotencyKey)
        score = ctx.State.score * factor["value"]
        ctx.SetState(score=score, label="high" if score > 10 else "low")
        return Next("Report", output={"score": score, "seen": ctx.StepResults["Seed"]})

    scoring = (
        Workflow("scoring", version="1")
        .State(Score)
        .Flow(
            {
                START: lambda ctx: "Seed",
                "Seed": lambda ctx: (ctx.SetState(score=4), Next("Grade", output="seed"))[1],
                "Grade": grade,
                "Report": lambda ctx: END,
            }
        )
    )
    async with WorkflowRunner(scoring, durable) as runner:
        handle = await runner.Run()
        await handle.Result(timeout=10)
        before = await handle.Record()
        events_before = len(await handle.Timeline())

        same = await handle.Rerun("Grade")
        assert same.same and same.outcome == "Report"
        assert same.output == {"score": 8, "seen": "seed"}

        factor["value"] = 3  # the incident: what would the step do now?
        changed = await handle.Rerun("Grade")
        assert not changed.same
        assert changed.diff["state_patch"] == {
            "recorded": {"score": 8, "label": "low"},
            "rerun": {"score": 12, "label": "high"},
        }
        assert "output_digest" in changed.diff and changed.output["score"] == 12
        assert changed.recorded["outcome"] == "Report"

        after = await handle.Record()
        assert after.seq == before.seq and after.body == before.body
        assert len(await handle.Timeline()) == events_before
    # Each re-run had idempotency keys of its own, apart from the original's.
    assert ran[0].startswith(handle.run_id)
    assert all(not key.startswith(handle.run_id) for key in ran[1:]) and len(set(ran)) == 3


async def test_replay_answers_external_steps_from_the_cassette_and_reports_divergence(
    durable: Store,
) -> None:
    model_calls = {"count": 0}
    threshold = {"value": 5}

    async def ask_model(ctx: Any) -> Next:
        model_calls["count"] += 1
        return Next("Decide", output={"answer": 7})

    def decide(ctx: Any) -> Next:
        answer = ctx.StepResults["Ask"]["answer"]
        verdict = "yes" if answer > threshold["value"] else "no"
        ctx.SetState(label=verdict)
        return Next(END, output=verdict)

    flow = {
        START: lambda ctx: "Ask",
        "Ask": step(ask_model, external=True),
        "Decide": decide,
    }
    agent = Workflow("agent", version="1").State(Score).Flow(flow)
    async with WorkflowRunner(agent, durable) as runner:
        handle = await runner.Run()
        assert await handle.Result(timeout=10) == "yes"
        assert model_calls["count"] == 1

        model_calls["count"] = 0
        unchanged = await handle.Replay(by="ops")
        assert unchanged.status == RunStatus.COMPLETED and not unchanged.diverged
        assert model_calls["count"] == 0 and unchanged.played == {"Ask#1": 1}

        threshold["value"] = 10  # a code change: replay shows what it changes
        report = await handle.Replay(by="ops")
        assert model_calls["count"] == 0
        assert report.divergence is not None
        assert report.divergence.original is not None and report.divergence.replay is not None
        assert report.divergence.original["step"] == "Decide"
        assert "state_patch" in report.divergence.fields
        assert report.divergence.original["state_patch"] == {"label": "yes"}
        assert report.divergence.replay["state_patch"] == {"label": "no"}

        # Sandbox runs are kept, flagged by id and name, and executed by nobody else.
        sandbox = await runner.store.load_run(report.run_id)
        assert sandbox is not None and sandbox.body.origin is not None
        assert report.run_id.startswith("sandbox-") and sandbox.workflow == "sandbox:agent"
        assert sandbox.body.origin.run_id == handle.run_id and sandbox.body.origin.sandbox
        listed = [r.workflow for r in (await runner.List()).items]
        assert listed.count("sandbox:agent") == 2 and listed.count("agent") == 1


async def test_an_external_step_with_no_recording_fails_closed(durable: Store) -> None:
    writes = {"count": 0}

    async def write(ctx: Any) -> str:
        writes["count"] += 1
        return END

    first = Workflow("writer", version="1").Flow({START: lambda ctx: END})
    second = Workflow("writer", version="1").Flow(
        {START: lambda ctx: "Write", "Write": step(write, external=True)}
    )
    async with WorkflowRunner(first, durable) as runner:
        original = await runner.Run()
        await original.Result(timeout=10)
    async with WorkflowRunner(second, durable) as runner:
        report = await (await runner.Get(original.run_id)).Replay()
    assert writes["count"] == 0
    assert report.status == RunStatus.FAILED and report.error is not None
    assert report.error.startswith("NoRecording") and "'Write#1'" in report.error
    assert report.divergence is not None and report.divergence.index == 0


async def test_replay_of_an_execute_run_answers_external_tasks(durable: Store) -> None:
    calls = {"search": 0, "summarise": 0}

    async def search(topic: str) -> list[str]:
        calls["search"] += 1
        return [f"{topic} paper"]

    async def summarise(papers: list[str]) -> str:
        calls["summarise"] += 1
        return f"{len(papers)} papers"

    async def research(ctx: ExecuteContext[Any, Any]) -> str:
        papers = await ctx.Task(search, "ants", external=True)
        return await ctx.Task(summarise, papers)

    wf = Workflow("lit", version="1").Execute(research)
    async with WorkflowRunner(wf, durable) as runner:
        handle = await runner.Run()
        assert await handle.Result(timeout=10) == "1 papers"
        report = await handle.Replay()
    assert calls == {"search": 1, "summarise": 2}
    assert report.played == {"search": 1} and not report.diverged
    assert report.status == RunStatus.COMPLETED


async def test_fork_starts_a_new_run_from_a_checkpoint_with_a_state_patch(
    durable: Store,
) -> None:
    calls: dict[str, int] = {}
    keys: list[str] = []
    flow = counting_flow(calls, keys, {"Charge": False})
    async with WorkflowRunner(flow, durable) as runner:
        handle = await runner.Run()
        assert await handle.Result(timeout=10) == {"total": 5}
        [charge] = [
            e for e in await handle.Timeline() if e.kind == "step_started" and e.step == "Charge"
        ]
        with pytest.raises(StateValidationError, match="no field 'bogus'"):
            await handle.Fork(at=charge.seq, state={"bogus": 1})
        forked = await handle.Fork(at=charge.seq, state={"total": 40}, by="ops")
        assert await forked.Result(timeout=10) == {"total": 40}
        record = await forked.Record()
    assert forked.run_id != handle.run_id
    assert record.body.origin is not None
    assert (record.body.origin.run_id, record.body.origin.seq) == (handle.run_id, charge.seq)
    assert record.body.origin.by == "ops" and not record.body.origin.sandbox
    assert calls == {"Add": 1, "Charge": 2, "Ship": 2}  # Add is not run again


async def test_bulk_stop_of_500_waiting_runs_is_paged_reported_and_safe_to_repeat(
    durable: Store,
) -> None:
    waiting = Workflow("held", version="1").Flow(
        {START: lambda ctx: Wait(Event("never"), "Done"), "Done": lambda ctx: END}
    )
    other = Workflow("kept", version="1").Flow(
        {START: lambda ctx: Wait(Event("never"), "Done"), "Done": lambda ctx: END}
    )
    async with WorkflowRunner(waiting, durable) as runner, WorkflowRunner(other, durable) as keep:
        handles = [await runner.Run() for _ in range(500)]
        kept = await keep.Run()
        with anyio.fail_after(120):
            for handle in handles:
                await handle.WaitUntil(RunStatus.WAITING)
            await kept.WaitUntil(RunStatus.WAITING)
    async with Client(same_data(durable)) as client:
        report = await client.Bulk("stop", workflow="held", status="waiting", by="ops")
        assert report.counts == {"done": 500}
        assert {o.status for o in report.outcomes} == {"stopped"}
        again = await client.Bulk("stop", workflow="held", by="ops")
        assert again.counts == {"skipped": 500}
        assert await (await client.Get(kept.run_id)).Status() == RunStatus.WAITING
        counts = await durable.count_runs(workflow="held")
        assert counts == {RunStatus.STOPPED: 500}
        retried = await client.Bulk("retry", workflow="held", status="stopped", by="ops")
        assert retried.counts == {"done": 500}
        assert await durable.count_runs(workflow="held") == {RunStatus.WAITING: 500}
        with pytest.raises(ValueError, match="bulk verb"):
            await client.Bulk("explode")
