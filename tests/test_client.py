"""`Client` and `SyncClient`: runs started by workflow name and steered with the store
alone, executed by a `Worker` that has the code; on a real SQLite file and a real Redis."""

from __future__ import annotations

from typing import Any, Literal

import anyio
import pytest
from pydantic import BaseModel

from holon import (
    END,
    START,
    Client,
    Context,
    HolonError,
    HumanApproval,
    InputValidationError,
    Next,
    Page,
    RunFailed,
    RunNotFound,
    RunStatus,
    Steward,
    SyncClient,
    Wait,
    Worker,
    Workflow,
    WorkflowNotFound,
)
from holon.stores.base import Store
from tests.durable_stores import durable, same_data

pytestmark = pytest.mark.anyio

__all__ = ["durable"]  # the fixture, imported for the tests here


class Order(BaseModel):
    order_id: str


class Progress(BaseModel):
    charged: bool = False


def charge(ctx: Context[Order, Progress]) -> Literal["Approve"]:
    ctx.SetState(charged=True)
    return "Approve"


ORDERS = (
    Workflow("orders", "Charge, approve and ship an order")
    .Input(Order)
    .State(Progress)
    .Flow(
        {
            START: lambda ctx: "Charge",
            "Charge": charge,
            "Approve": lambda ctx: Wait(HumanApproval(approvers=["ops"]), "Ship"),
            "Ship": lambda ctx: Next(END, output={"shipped": ctx.Input.order_id}),
        }
    )
)

ECHO = Workflow("echo").Flow({START: lambda ctx: Next(END, output={"echo": ctx.Input})})


async def registered(store: Store) -> Steward:
    steward = Steward(store)
    await steward.Register(ORDERS)
    await steward.Register(ECHO)
    return steward


async def test_a_client_starts_by_name_and_a_worker_executes(durable: Store) -> None:
    steward = await registered(durable)
    async with Client(same_data(durable)) as client:
        handle = await client.Start("orders", {"order_id": "A-1"}, started_by="bob")
        # Nothing executes in a client: the run waits in the queue for a worker.
        assert await handle.Status() == RunStatus.QUEUED
        async with Worker(steward, poll_interval=0.01):
            await handle.WaitUntil(RunStatus.WAITING, timeout=10)
            [gate] = await client.Pending("ops")
            assert gate.run_id == handle.run_id
            assert await (await client.Get(handle.run_id)).Approve("ops") in (
                RunStatus.QUEUED,
                RunStatus.RUNNING,
                RunStatus.COMPLETED,
            )
            assert await handle.Result(timeout=10) == {"shipped": "A-1"}
            assert await client.Run("echo", [1, 2], timeout=10) == {"echo": [1, 2]}
        record = await handle.Record()
        assert record.body.state == {"charged": True} and record.body.started_by == "bob"


async def test_list_pages_are_iterable_and_filter(durable: Store) -> None:
    await registered(durable)
    async with Client(same_data(durable)) as client:
        started = [(await client.Start("echo", i)).run_id for i in range(5)]
        await client.Start("orders", {"order_id": "B-1"})
        first = await client.List(workflow="echo", limit=3)
        assert isinstance(first, Page) and len(first) == 3
        rest = await client.List(workflow="echo", limit=3, cursor=first.next_cursor)
        assert sorted([r.run_id for r in first] + [r.run_id for r in rest]) == sorted(started)
        assert rest.next_cursor is None
        assert len(await client.List(status="queued")) == 6
        assert [w.name for w in await client.Workflows()] == ["echo", "orders"]
        described = await client.Describe("orders")
        assert described["input_schema"]["required"] == ["order_id"]


async def test_send_reaches_the_runs_waiting_on_an_event(durable: Store) -> None:
    from holon import Event

    paid = Workflow("paid").Flow(
        {
            START: lambda ctx: Wait(Event("order.paid"), "Done"),
            "Done": lambda ctx: Next(END, output=ctx.Decision["payload"]),
        }
    )
    steward = Steward(durable)
    await steward.Register(paid)
    async with Client(same_data(durable)) as client, Worker(steward, poll_interval=0.01):
        handles = [await client.Start("paid") for _ in range(3)]
        for handle in handles:
            await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        reached = await client.Send("order.paid", {"amount": 5}, event_id="e-1")
        assert sorted(reached) == sorted(h.run_id for h in handles)
        assert await client.Send("order.paid", {"amount": 5}, event_id="e-1") == []
        for handle in handles:
            assert await handle.Result(timeout=10) == {"amount": 5}


async def test_bad_names_and_inputs_are_refused_and_create_nothing(durable: Store) -> None:
    await registered(durable)
    async with Client(same_data(durable)) as client:
        with pytest.raises(WorkflowNotFound, match="'nope'"):
            await client.Start("nope")
        with pytest.raises(WorkflowNotFound, match="no version '9'"):
            await client.Start("orders", {"order_id": "x"}, version="9")
        with pytest.raises(InputValidationError, match="order_id"):
            await client.Start("orders", {"id": "x"})
        with pytest.raises(RunNotFound, match="'missing'"):
            await client.Get("missing")
        assert len(await client.List()) == 0


async def test_handles_of_a_closed_client_say_so(durable: Store) -> None:
    await registered(durable)
    client = Client(same_data(durable))
    async with client:
        handle = await client.Start("echo", "hi")
    with pytest.raises(HolonError, match="the Client that made it was closed"):
        await handle.Status()
    with pytest.raises(HolonError, match="is closed"):
        await handle.Stop()
    with pytest.raises(HolonError, match="is closed"):
        await client.List()


async def test_a_client_from_a_steward_with_code_validates_state_patches(durable: Store) -> None:
    steward = await registered(durable)
    async with Client(steward) as client:
        handle = await client.Start("orders", {"order_id": "C-1"})
        await handle.Pause()
        with pytest.raises(HolonError, match="no field 'nope'"):
            await handle.Resume(state={"nope": 1})


def sync_session(store: Store) -> dict[str, Any]:
    """What a script does with a `SyncClient` (no event loop of its own)."""
    seen: dict[str, Any] = {}
    prefix = getattr(store, "key_prefix", "")
    with SyncClient(store.url, key_prefix=prefix) as client:
        seen["result"] = client.run("echo", {"n": 1}, timeout=10)
        handle = client.start("orders", {"order_id": "S-1"})
        handle.wait_until("waiting", timeout=10)
        seen["pending"] = [w.run_id for w in client.pending("ops")]
        seen["run_id"] = handle.run_id
        handle.approve("ops", comment="fine")
        seen["order"] = handle.result(timeout=10)
        seen["kinds"] = [e.kind for e in client.get(handle.run_id).watch()]
        seen["listed"] = len(client.list())
        with pytest.raises(RunFailed, match="stopped"):
            stopped = client.start("orders", {"order_id": "S-2"})
            stopped.wait_until("waiting", timeout=10)
            stopped.stop()
            stopped.result()
    with pytest.raises(HolonError, match="is closed"):
        handle.status()
    return seen


async def test_a_sync_client_runs_and_waits_for_results(durable: Store) -> None:
    steward = await registered(durable)
    async with Worker(steward, poll_interval=0.01):
        with anyio.fail_after(30):
            seen = await anyio.to_thread.run_sync(sync_session, durable)
    assert seen["result"] == {"echo": {"n": 1}}
    assert seen["pending"] == [seen["run_id"]]
    assert seen["order"] == {"shipped": "S-1"}
    assert seen["kinds"][0] == "started" and seen["kinds"][-1] == "completed"
    assert "decision" in " ".join(seen["kinds"]) or "approved" in seen["kinds"]
    assert seen["listed"] == 2


def sync_surgery(store: Store, run_id: str) -> dict[str, Any]:
    """Run surgery through a `SyncClient` that has the workflows' code."""
    seen: dict[str, Any] = {}
    prefix = getattr(store, "key_prefix", "")
    with SyncClient(store.url, key_prefix=prefix, workflows=[ORDERS, ECHO]) as client:
        handle = client.get(run_id)
        seen["status"] = handle.retry(by="ops")
        seen["result"] = handle.result(timeout=10)
        seen["rerun_same"] = handle.rerun(START.value).same
        seen["replayed"] = handle.replay(by="ops").status
        starts = [e.seq for e in handle.timeline() if e.kind == "step_started"]
        seen["forked"] = handle.fork(at=starts[-1], by="ops").result(timeout=10)
        seen["bulk"] = client.bulk("stop", workflow="echo", status="waiting").counts
    return seen


async def test_a_sync_client_with_the_code_does_run_surgery(durable: Store) -> None:
    steward = await registered(durable)
    async with Client(same_data(durable)) as client:
        handle = await client.Start("echo", {"n": 2})
        await handle.Stop(by="ops")
        waiting = await client.Start("orders", {"order_id": "W-1"})
        async with Worker(steward, poll_interval=0.01):
            await waiting.WaitUntil(RunStatus.WAITING, timeout=10)
            with anyio.fail_after(30):
                seen = await anyio.to_thread.run_sync(sync_surgery, durable, handle.run_id)
    assert seen["status"] in (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.COMPLETED)
    assert seen["result"] == {"echo": {"n": 2}} and seen["rerun_same"] is True
    assert seen["replayed"] == RunStatus.COMPLETED
    assert seen["forked"] == {"echo": {"n": 2}}
    assert seen["bulk"] == {}  # no echo run waits
