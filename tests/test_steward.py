"""The Steward: a catalogue of workflow versions in the store, runners by name, retention."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from holon import (
    END,
    START,
    Context,
    HolonError,
    InputValidationError,
    ManualClock,
    Next,
    RunStatus,
    Steward,
    Workflow,
    WorkflowDefinitionError,
    WorkflowNotFound,
    WorkflowRunner,
)
from holon.stores.base import Store

pytestmark = pytest.mark.anyio


class Order(BaseModel):
    order_id: str
    amount: int = 0


class Progress(BaseModel):
    charged: bool = False


def charge(ctx: Context[Order, Progress]) -> Literal["Ship"]:
    ctx.SetState(charged=True)
    return "Ship"


def ship(ctx: Context[Order, Progress]) -> Next:
    return Next(END, output={"shipped": ctx.Input.order_id})


ORDERS = (
    Workflow("orders", "Charge and ship an order")
    .Input(Order)
    .State(Progress)
    .Flow({START: lambda ctx: "Charge", "Charge": charge, "Ship": ship})
)


def refund(ctx: Context[Order, Progress]) -> Literal["Ship"]:
    return "Ship"


ORDERS_V2 = (
    Workflow("orders", "Charge and ship an order")
    .Input(Order)
    .State(Progress)
    .Flow({START: lambda ctx: "Charge", "Charge": charge, "Refund": refund, "Ship": ship})
)


async def test_register_persists_the_catalogue_entry(store: Store) -> None:
    clock = ManualClock(start=100.0)
    steward = Steward(store, clock=clock)
    info = await steward.Register(ORDERS, owner="payments", tags=["shop", "money"])
    assert (info.name, info.version, info.owner) == ("orders", ORDERS.version, "payments")
    assert info.tags == ["money", "shop"]
    # A second steward over the same store (as another process would) sees it all.
    other = Steward(store)
    found = await other.Get("orders")
    assert found.description == "Charge and ship an order"
    assert found.input_schema is not None and found.input_schema["required"] == ["order_id"]
    assert found.state_schema is not None and "charged" in found.state_schema["properties"]
    steps = {s.name: s for s in found.graph.steps}
    assert steps["Charge"].edges == ["Ship"] and steps["Charge"].edges_complete
    assert not steps["Ship"].edges_complete
    assert found.mermaid == ORDERS.Mermaid()
    assert found.registered_at == 100.0 and found.source == "python"


async def test_versions_stay_discoverable_and_the_newest_is_latest(store: Store) -> None:
    clock = ManualClock(start=100.0)
    steward = Steward(store, clock=clock)
    await steward.Register(ORDERS)
    clock.advance(10)
    await steward.Register(ORDERS_V2, owner="payments")
    clock.advance(10)
    await steward.Register(ORDERS, owner="again")  # re-registering keeps its place
    assert (await steward.Get("orders")).version == ORDERS_V2.version
    old = await steward.Get("orders", version=ORDERS.version)
    assert "Refund" not in [s.name for s in old.graph.steps] and old.owner == "again"
    versions = await steward.Versions("orders")
    assert [v.version for v in versions] == [ORDERS.version, ORDERS_V2.version]
    with pytest.raises(WorkflowNotFound, match="has no version 'nope'"):
        await steward.Get("orders", version="nope")
    with pytest.raises(WorkflowNotFound, match=r"no workflow 'order'.*known: \['orders'\]"):
        await steward.Get("order")


async def test_a_changed_workflow_under_the_same_version_is_refused(store: Store) -> None:
    steward = Steward(store)
    await steward.Register(Workflow("pinned", version="1").Flow({START: lambda ctx: END}))
    changed = Workflow("pinned", version="1").Flow(
        {START: lambda ctx: "More", "More": lambda ctx: END}
    )
    with pytest.raises(WorkflowDefinitionError, match="needs a new version"):
        await steward.Register(changed)
    with pytest.raises(WorkflowDefinitionError, match="tags are a list"):
        await steward.Register(ORDERS, tags="shop")


async def test_list_filters_by_tag_and_counts_runs(store: Store) -> None:
    steward = Steward(store)
    await steward.Register(ORDERS, tags=["shop"])
    await steward.Register(Workflow("other").Flow({START: lambda ctx: END}), tags=["ops"])
    async with await steward.Runner("orders") as runner:
        done = await runner.Run({"order_id": "o-1"})
        await done.Result(timeout=10)
    async with await steward.Runner("orders", execute=False) as runner:
        await runner.Run({"order_id": "o-2"})
    listed = await steward.List()
    assert [i.name for i in listed] == ["orders", "other"]
    assert listed[0].runs == {"queued": 1, "completed": 1}
    assert listed[1].runs == {}
    assert [i.name for i in await steward.List(tag="ops")] == ["other"]


async def test_describe_gives_schemas_graph_mermaid_versions_and_counts(store: Store) -> None:
    steward = Steward(store)
    await steward.Register(ORDERS)
    await steward.Register(ORDERS_V2)
    described = await steward.Describe("orders")
    assert described["version"] == ORDERS_V2.version
    assert described["versions"] == [ORDERS.version, ORDERS_V2.version]
    assert described["input_schema"]["title"] == "Order"
    assert described["mermaid"].startswith("flowchart TD")
    assert [s["name"] for s in described["graph"]["steps"]] == [
        "__start__",
        "Charge",
        "Refund",
        "Ship",
    ]
    assert described["runs"] == {}
    old = await steward.Describe("orders", version=ORDERS.version)
    assert old["version"] == ORDERS.version


async def test_a_runner_by_name_without_the_code_starts_runs_for_others(store: Store) -> None:
    await Steward(store).Register(ORDERS)
    remote = Steward(store)  # knows the catalogue only
    runner = await remote.Runner("orders")
    assert runner.execute is False
    with pytest.raises(HolonError, match="does not have its code"):
        await remote.Runner("orders", execute=True)
    async with runner:
        with pytest.raises(InputValidationError, match="order_id: Field required"):
            await runner.Run({"amount": 3})
        handle = await runner.Run({"order_id": "o-9"})
        record = await handle.Record()
        assert (record.status, record.version) == (RunStatus.QUEUED, ORDERS.version)
        # A process with the code executes it (claimed by this call or by the worker's
        # own claim loop, whichever comes first: no count to assert).
        async with WorkflowRunner(ORDERS, store) as worker:
            await worker.recover_now()
            assert await handle.Result(timeout=10) == {"shipped": "o-9"}


async def test_bad_stored_input_fails_the_run_with_the_path(store: Store) -> None:
    await Steward(store).Register(ORDERS)
    async with await Steward(store).Runner("orders") as runner:
        handle = await runner.Run({"order_id": "o-1", "amount": "many"})
    async with WorkflowRunner(ORDERS, store) as worker:
        await worker.recover_now()
        record = await handle.WaitUntil(timeout=10)
    assert record.status == RunStatus.FAILED and record.body.error is not None
    assert "amount" in record.body.error.message
    assert record.body.error.type == "InputValidationError"


async def test_prune_removes_old_finished_runs_only(store: Store) -> None:
    clock = ManualClock(start=1_000.0)
    steward = Steward(store, clock=clock)
    await steward.Register(ORDERS)
    wait_forever = Workflow("held").Flow({START: lambda ctx: "Hold", "Hold": _hold})
    async with WorkflowRunner(ORDERS, store, clock=clock) as runner:
        old = await runner.Run({"order_id": "old"})
        await old.Result(timeout=10)
        clock.advance(3 * 86400)
        new = await runner.Run({"order_id": "new"})
        await new.Result(timeout=10)
    async with WorkflowRunner(wait_forever, store, clock=clock, execute=False) as runner:
        queued = await runner.Run()
        stopped = await runner.Run()
        await stopped.Stop()
    clock.advance(3600)
    with pytest.raises(ValueError, match="'queued' is not a final status"):
        await steward.Prune(older_than=0, status="queued")
    assert await steward.Prune(older_than=dt.timedelta(days=1), status=["failed"]) == 0
    assert await steward.Prune(older_than=dt.timedelta(days=1)) == 1
    remaining = {s.run_id for s in (await store.list_runs()).items}
    assert remaining == {new.run_id, queued.run_id, stopped.run_id}
    assert await steward.Prune(older_than=0, workflow="held") == 1
    remaining = {s.run_id for s in (await store.list_runs()).items}
    assert remaining == {new.run_id, queued.run_id}


def _hold(ctx: Any) -> str:
    return END


def test_agents_are_built_once_on_first_use() -> None:
    built: list[str] = []

    def factory() -> Any:
        built.append("writer")
        return lambda ctx: "text"

    steward = Steward("memory://")
    steward.RegisterAgent("writer", factory)
    assert built == []
    assert steward.Agent("writer") is steward.Agent("writer")
    assert built == ["writer"]
    with pytest.raises(HolonError, match="no agent 'reader'"):
        steward.Agent("reader")
    with pytest.raises(ValueError, match="non-empty name"):
        steward.RegisterAgent("", factory)
    with pytest.raises(TypeError, match="expected a function"):
        steward.RegisterTask("t", "not a function")  # type: ignore[arg-type]
