"""Events sent before their run waits for them are kept, and delivered once when the
wait opens: to one run (its inbox) or to the runs that wait later (a kept broadcast)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from holon import (
    END,
    START,
    Event,
    InboxFull,
    ManualClock,
    MemoryStore,
    Next,
    NotWaiting,
    RunStatus,
    Wait,
    Worker,
    Workflow,
    WorkflowRunner,
)
from holon.runtime.inbox import KEPT_PER_RUN
from holon.stores.base import Store
from tests.test_policies import until

pytestmark = pytest.mark.anyio


def order_flow(gate: anyio.Event | None = None, name: str = "orders") -> Workflow:
    """Check (held by `gate`), then wait for `paid`, then end with the payment."""

    async def check(ctx: Any) -> str:
        if gate is not None:
            await gate.wait()
        return "AwaitPayment"

    return Workflow(name).Flow(
        {
            START: lambda ctx: "Check",
            "Check": check,
            "AwaitPayment": lambda ctx: Wait(Event("paid"), "Ship"),
            "Ship": lambda ctx: Next(END, output=ctx.Decision["payload"]),
        }
    )


async def received(store: Store, run_id: str) -> list[dict[str, Any]]:
    return [e.data for e in await store.timeline(run_id) if e.kind == "event_received"]


async def test_an_event_sent_while_the_run_works_is_delivered_when_it_waits(
    store: Store,
) -> None:
    gate = anyio.Event()
    wf = order_flow(gate)
    async with WorkflowRunner(wf, store, execute=False) as steer:
        handle = await steer.Run()
        async with Worker(wf, store, poll_interval=0.01):
            await until(store, handle.run_id, lambda r: r.status == RunStatus.RUNNING)
            # the run is in Check: the payment comes early, twice (a retried webhook)
            assert await handle.Send("paid", {"amount": 5}, event_id="pay-1") == RunStatus.RUNNING
            assert await handle.Send("paid", {"amount": 5}, event_id="pay-1") == RunStatus.RUNNING
            gate.set()
            assert await handle.Result(timeout=10) == {"amount": 5}
    events = await received(store, handle.run_id)
    assert [e["event_id"] for e in events] == ["pay-1"]
    assert await store.kept_events(f"run:{handle.run_id}", 1e12) == []


async def test_a_kept_event_delivered_once_is_not_delivered_to_a_later_wait(
    store: Store,
) -> None:
    gate = anyio.Event()

    async def check(ctx: Any) -> str:
        await gate.wait()
        return "First"

    wf = Workflow("twice").Flow(
        {
            START: lambda ctx: "Check",
            "Check": check,
            "First": lambda ctx: Wait(Event("tick"), "Second"),
            "Second": lambda ctx: Wait(Event("tick"), "Done"),
            "Done": lambda ctx: END,
        }
    )
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        await handle.Send("tick", {}, event_id="t1")
        gate.set()
        second = await until(
            store,
            handle.run_id,
            lambda r: r.body.wait is not None and r.body.wait.step == "Second",
        )
        assert second.status == RunStatus.WAITING  # t1 closed First, not Second
        await handle.Send("tick", {}, event_id="t2")
        await handle.Result(timeout=10)
    assert [e["event_id"] for e in await received(store, handle.run_id)] == ["t1", "t2"]


async def test_an_event_is_refused_when_asked_or_when_the_run_has_finished(
    store: Store,
) -> None:
    gate = anyio.Event()
    wf = order_flow(gate, name="refusing")
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        with pytest.raises(NotWaiting, match="not for event 'paid'"):
            await handle.Send("paid", {}, event_id="e", keep_for=None)
        gate.set()
        await handle.Send("paid", {"amount": 1}, event_id="pay")
        await handle.Result(timeout=10)
        with pytest.raises(NotWaiting, match="completed"):
            await handle.Send("paid", {}, event_id="late")
        with pytest.raises(TypeError, match="keep_for"):
            await handle.Send("paid", {}, keep_for=0)


async def test_a_kept_event_expires(store: Store) -> None:
    clock = ManualClock()
    gate = anyio.Event()
    wf = order_flow(gate, name="expiring")
    async with WorkflowRunner(wf, store, clock=clock) as runner:
        handle = await runner.Run()
        await handle.Send("paid", {"amount": 1}, event_id="old", keep_for=5)
        clock.advance(6)
        gate.set()
        await until(store, handle.run_id, lambda r: r.status == RunStatus.WAITING)
        assert await received(store, handle.run_id) == []  # expired: not delivered
        await handle.Send("paid", {"amount": 2}, event_id="new")
        assert await handle.Result(timeout=10) == {"amount": 2}


async def test_an_inbox_is_bounded() -> None:
    gate = anyio.Event()
    wf = order_flow(gate, name="bounded")
    async with WorkflowRunner(wf, MemoryStore()) as runner:
        handle = await runner.Run()
        for i in range(KEPT_PER_RUN):
            await handle.Send("other", {}, event_id=f"e{i}")
        with pytest.raises(InboxFull, match="inbox of events sent before their wait is full"):
            await handle.Send("paid", {"amount": 1}, event_id="one-too-many")
        await handle.Send("other", {}, event_id="e0")  # kept before: still fine
        gate.set()


async def test_a_kept_broadcast_reaches_each_run_that_waits_later_once(store: Store) -> None:
    async def check(ctx: Any) -> str:
        return "AwaitPayment"

    wf = Workflow("later").Flow(
        {
            START: lambda ctx: "Check",
            "Check": check,
            "AwaitPayment": lambda ctx: Wait(Event("paid", match={"shop": "a"}), "Ship"),
            "Ship": lambda ctx: Next(END, output=ctx.Decision["payload"]["n"]),
        }
    )
    async with WorkflowRunner(wf, store) as runner:
        assert await runner.Send("paid", {"shop": "a", "n": 1}, event_id="b1", keep_for=60) == []
        assert await runner.Send("paid", {"shop": "b", "n": 2}, event_id="b2", keep_for=60) == []
        first, second = await runner.Run(), await runner.Run()
        assert await first.Result(timeout=10) == 1
        assert await second.Result(timeout=10) == 1
        for handle in (first, second):
            assert [e["event_id"] for e in await received(store, handle.run_id)] == ["b1"]
