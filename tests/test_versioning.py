"""Runs in flight across a deploy: a run paused on v1 is resumed by an executor of v2.

Each case shows what the run's timeline records: `version_changed` when the run fits
the new definition, `state_migrated` when `.Migrate()` upgraded its state, and a
`paused` event with reason `incompatible definition` when it does not fit, after which
the operator's `Resume(goto=..., state=...)` decides.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from pydantic import BaseModel, ConfigDict

from holon import (
    END,
    START,
    Context,
    Next,
    RunStatus,
    Workflow,
    WorkflowDefinitionError,
    WorkflowRunner,
)
from holon.stores.base import Checkpoint, Store, TimelineEvent

pytestmark = pytest.mark.anyio


class Notes(BaseModel):
    notes: list[str] = []


def article_v1(entered: anyio.Event, release: anyio.Event) -> Workflow:
    async def draft(ctx: Context[Any, Notes]) -> str:
        entered.set()
        await release.wait()
        ctx.SetState(notes=[*ctx.State.notes, "drafted"])
        return "Review"

    return (
        Workflow("article")
        .State(Notes)
        .Flow({START: lambda ctx: "Draft", "Draft": draft, "Review": review_v1, "Publish": publish})
    )


def draft(ctx: Context[Any, Notes]) -> str:
    ctx.SetState(notes=[*ctx.State.notes, "drafted"])
    return "Review"


def review_v1(ctx: Context[Any, Notes]) -> str:
    ctx.SetState(notes=[*ctx.State.notes, "reviewed v1"])
    return "Publish"


def publish(ctx: Context[Any, Any]) -> Next:
    return Next(END, output={"published": ctx.State.model_dump()})


V1 = article_v1(anyio.Event(), anyio.Event())
"""Only its version is used: the fingerprint of step names, edges and schemas."""


async def paused_on_v1(store: Store) -> str:
    """A run of v1 that finished Draft and was paused by an operator before Review."""
    entered, release = anyio.Event(), anyio.Event()
    async with WorkflowRunner(article_v1(entered, release), store) as runner:
        handle = await runner.Run()
        await entered.wait()
        await handle.Pause(by="deployer")
        release.set()
        record = await handle.WaitUntil(RunStatus.PAUSED, timeout=10)
    assert record.version == V1.version
    assert record.body.cursor is not None and record.body.cursor.step == "Review"
    assert record.body.state == {"notes": ["drafted"]}
    return handle.run_id


def kinds(events: list[TimelineEvent]) -> list[str]:
    return [e.kind for e in events]


def only(events: list[TimelineEvent], kind: str) -> TimelineEvent:
    found = [e for e in events if e.kind == kind]
    assert len(found) == 1, (kind, kinds(events))
    return found[0]


async def test_compatible_definition_continues_with_version_changed(store: Store) -> None:
    class NotesV2(BaseModel):
        notes: list[str] = []
        reviewer: str = "nobody"

    def review_v2(ctx: Context[Any, NotesV2]) -> str:
        ctx.SetState(notes=[*ctx.State.notes, "reviewed v2"], reviewer="ada")
        return "Publish"

    v2 = (
        Workflow("article")
        .State(NotesV2)
        .Flow({START: lambda ctx: "Draft", "Draft": draft, "Review": review_v2, "Publish": publish})
    )
    assert v2.version != V1.version
    run_id = await paused_on_v1(store)
    async with WorkflowRunner(v2, store) as runner:
        handle = await runner.Get(run_id)
        await handle.Resume(by="deployer")
        result = await handle.Result(timeout=10)
        record = await handle.Record()
        events = await handle.Timeline()
    assert result == {"published": {"notes": ["drafted", "reviewed v2"], "reviewer": "ada"}}
    changed = only(events, "version_changed")
    assert changed.step == "Review"
    assert changed.data == {
        "from_version": V1.version,
        "to_version": v2.version,
        "state_fields_added": ["reviewer"],
        "state_fields_dropped": [],
    }
    order = kinds(events)
    assert order.index("resumed") < order.index("version_changed") < len(order) - 4
    assert [(e.kind, e.step) for e in events[order.index("version_changed") + 1 :]][:1] == [
        ("step_completed", "Review")
    ]
    assert record.version == V1.version, "the run still says what it started on"
    assert record.body.version == v2.version, "and what it continued on"


async def test_incompatible_definition_pauses_until_the_operator_decides(store: Store) -> None:
    def check(ctx: Context[Any, Notes]) -> str:
        ctx.SetState(notes=[*ctx.State.notes, "checked"])
        return "Publish"

    v2 = (
        Workflow("article")
        .State(Notes)
        .Flow({START: lambda ctx: "Draft", "Draft": draft, "Check": check, "Publish": publish})
    )
    run_id = await paused_on_v1(store)
    async with WorkflowRunner(v2, store) as runner:
        handle = await runner.Get(run_id)
        await handle.Resume(by="deployer")
        record = await handle.WaitUntil(RunStatus.PAUSED, timeout=10)
        assert record.body.cursor is not None and record.body.cursor.step == "Review"
        assert record.body.state == {"notes": ["drafted"]}, "nothing ran, nothing changed"
        events = await handle.Timeline()
        paused = events[-1]
        assert paused.kind == "paused" and paused.step == "Review"
        assert paused.data["reason"] == "incompatible definition"
        assert paused.data["problems"] == [
            f"the step at the cursor 'Review' is not a step of version {v2.version!r}"
        ]
        assert (paused.data["from_version"], paused.data["to_version"]) == (
            V1.version,
            v2.version,
        )
        # Never a crash loop: the paused run is not picked up again by itself.
        assert await runner.recover_now() == 0
        assert kinds(await handle.Timeline()) == kinds(events)
        await handle.Resume(goto="Check", by="deployer")
        result = await handle.Result(timeout=10)
        events = await handle.Timeline()
    assert result == {"published": {"notes": ["drafted", "checked"]}}
    assert only(events, "version_changed").step == "Check"
    assert "Review" not in [e.step for e in events if e.kind == "step_completed"]


async def test_incompatible_state_is_named_by_path_and_repaired_on_resume(store: Store) -> None:
    class Scored(BaseModel):
        notes: list[int] = []

    def review_scored(ctx: Context[Any, Scored]) -> str:
        ctx.SetState(notes=[*ctx.State.notes, 10])
        return "Publish"

    v2 = (
        Workflow("article")
        .State(Scored)
        .Flow(
            {
                START: lambda ctx: "Draft",
                "Draft": draft,
                "Review": review_scored,
                "Publish": publish,
            }
        )
    )
    run_id = await paused_on_v1(store)
    async with WorkflowRunner(v2, store) as runner:
        handle = await runner.Get(run_id)
        await handle.Resume()
        await handle.WaitUntil(RunStatus.PAUSED, timeout=10)
        paused = (await handle.Timeline())[-1]
        assert paused.data["reason"] == "incompatible definition"
        [problem] = paused.data["problems"]
        assert "does not match Scored" in problem and "notes.0" in problem
        await handle.Resume(state={"notes": [7]}, by="deployer")
        assert await handle.Result(timeout=10) == {"published": {"notes": [7, 10]}}


async def test_migration_upgrades_the_state_with_a_checkpoint(store: Store) -> None:
    class Item(BaseModel):
        text: str

    class Items(BaseModel):
        model_config = ConfigDict(extra="forbid")
        items: list[Item] = []

    def review_items(ctx: Context[Any, Items]) -> str:
        ctx.SetState(items=[*ctx.State.items, Item(text="reviewed v2")])
        return "Publish"

    def upgrade(old: dict[str, Any]) -> dict[str, Any]:
        return {"items": [{"text": note} for note in old["notes"]]}

    flow = {START: lambda ctx: "Draft", "Draft": draft, "Review": review_items, "Publish": publish}
    v2 = Workflow("article").State(Items).Flow(flow).Migrate(V1.version, upgrade)
    run_id = await paused_on_v1(store)
    async with WorkflowRunner(v2, store) as runner:
        handle = await runner.Get(run_id)
        await handle.Resume(by="deployer")
        result = await handle.Result(timeout=10)
        events = await handle.Timeline()
    assert result == {"published": {"items": [{"text": "drafted"}, {"text": "reviewed v2"}]}}
    migrated = only(events, "state_migrated")
    assert migrated.data == {"from_version": V1.version, "to_version": v2.version}
    changed = only(events, "version_changed")
    assert changed.seq == migrated.seq + 1, "both in the checkpoint before Review runs"
    assert changed.data["state_fields_added"] == ["items"]
    assert changed.data["state_fields_dropped"] == ["notes"]


async def test_without_a_migration_the_same_change_pauses(store: Store) -> None:
    class Items(BaseModel):
        model_config = ConfigDict(extra="forbid")
        items: list[str] = []

    v2 = (
        Workflow("article")
        .State(Items)
        .Flow({START: lambda ctx: "Draft", "Draft": draft, "Review": review_v1, "Publish": publish})
    )
    run_id = await paused_on_v1(store)
    async with WorkflowRunner(v2, store) as runner:
        handle = await runner.Get(run_id)
        await handle.Resume()
        await handle.WaitUntil(RunStatus.PAUSED, timeout=10)
        [problem] = (await handle.Timeline())[-1].data["problems"]
        assert "notes: Extra inputs are not permitted" in problem


async def test_a_failing_migration_pauses_the_run_and_changes_nothing(store: Store) -> None:
    def broken(old: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("items")

    v2 = (
        Workflow("article", version="2")
        .State(Notes)
        .Flow({START: lambda ctx: "Draft", "Draft": draft, "Review": review_v1, "Publish": publish})
        .Migrate(V1.version, broken)
    )
    run_id = await paused_on_v1(store)
    async with WorkflowRunner(v2, store) as runner:
        handle = await runner.Get(run_id)
        await handle.Resume()
        record = await handle.WaitUntil(RunStatus.PAUSED, timeout=10)
        events = await handle.Timeline()
    assert record.body.state == {"notes": ["drafted"]} and record.body.version is None
    assert "state_migrated" not in kinds(events)
    [problem] = events[-1].data["problems"]
    assert f"from version {V1.version!r} raised KeyError" in problem


async def test_stored_state_that_fails_its_own_schema_fails_closed(store: Store) -> None:
    run_id = await paused_on_v1(store)
    record = await store.load_run(run_id)
    assert record is not None
    body = record.body.model_copy(update={"state": {"notes": ["ok", {"bad": 1}]}})
    await store.commit(
        run_id,
        expected_seq=record.seq,
        token=None,
        checkpoint=Checkpoint(status=RunStatus.PAUSED, body=body, at=record.updated_at),
    )
    ran: list[str] = []

    def review_spy(ctx: Context[Any, Notes]) -> str:
        ran.append("Review")
        return "Publish"

    same = (
        Workflow("article", version=V1.version)
        .State(Notes)
        .Flow(
            {START: lambda ctx: "Draft", "Draft": draft, "Review": review_spy, "Publish": publish}
        )
    )
    async with WorkflowRunner(same, store) as runner:
        handle = await runner.Get(run_id)
        await handle.Resume()
        await handle.WaitUntil(RunStatus.PAUSED, timeout=10)
        paused = (await handle.Timeline())[-1]
        assert paused.data["reason"] == "invalid stored state"
        [problem] = paused.data["problems"]
        assert "notes.1" in problem and "does not match Notes" in problem
        assert ran == [], "no step saw the bad state"
        await handle.Resume(state={"notes": ["ok"]})
        await handle.Result(timeout=10)
    assert ran == ["Review"]


def test_migrate_is_validated_when_building() -> None:
    with pytest.raises(WorkflowDefinitionError, match="two .Migrate"):
        V1.Migrate("a", dict).Migrate("a", dict)
    with pytest.raises(WorkflowDefinitionError, match="version it upgrades from"):
        V1.Migrate("", dict)
    with pytest.raises(WorkflowDefinitionError, match="function of the state"):
        V1.Migrate("a", "nope")  # type: ignore[arg-type]
    assert V1.Migrate("a", dict).version == V1.version, "migrations are not part of the shape"


async def test_an_approved_wait_whose_next_step_is_gone_pauses(store: Store) -> None:
    from holon import HumanApproval, Wait

    gate = {START: lambda ctx: Wait(HumanApproval(approvers=["ops"]), "Ship")}
    v1 = Workflow("shipping").Flow({**gate, "Ship": lambda ctx: Next(END, output="shipped")})
    v2 = Workflow("shipping").Flow({**gate, "Release": lambda ctx: Next(END, output="released")})
    async with WorkflowRunner(v1, store) as runner:
        handle = await runner.Run()
        await handle.WaitUntil(RunStatus.WAITING, timeout=10)
    async with WorkflowRunner(v2, store) as runner:
        handle = await runner.Get(handle.run_id)
        await handle.Approve(by="ops")
        await handle.WaitUntil(RunStatus.PAUSED, timeout=10)
        paused = (await handle.Timeline())[-1]
        assert paused.data["reason"] == "incompatible definition"
        assert paused.data["problems"] == [
            f"the step at the cursor 'Ship' is not a step of version {v2.version!r}"
        ]
        await handle.Resume(goto="Release")
        assert await handle.Result(timeout=10) == "released"
