"""Human input, events and durable timers, on every store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from holon import (
    END,
    START,
    Context,
    Event,
    HumanInput,
    InvalidAnswer,
    ManualClock,
    NotWaiting,
    RunStatus,
    Sleep,
    Until,
    Wait,
    Workflow,
    WorkflowRunner,
)
from holon.stores.base import Store
from tests.waits_support import of_kind

pytestmark = pytest.mark.anyio


class Address(BaseModel):
    """A module-level model, so any process can validate an answer against it."""

    street: str
    zip: int


def asking(condition: Any, **wait: Any) -> tuple[Workflow, list[Any]]:
    """START -> Ask (waits on `condition`) -> Use, which keeps ctx.Decision."""
    seen: list[Any] = []

    def use(ctx: Context[Any, Any]) -> str:
        seen.append(ctx.Decision)
        return END

    wf = Workflow("ask").Flow(
        {
            START: lambda ctx: "Ask",
            "Ask": lambda ctx: Wait(condition, "Use", **wait),
            "Use": use,
            "Late": lambda ctx: END,
        }
    )
    return wf, seen


async def test_a_choice_outside_the_options_is_refused_and_the_run_keeps_waiting(
    store: Store,
) -> None:
    wf, seen = asking(HumanInput("Which region?", kind="choice", options=["eu", "us"]))
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        info = await handle.Waiting()
        assert info is not None and info.kind == "input" and info.options == ["eu", "us"]
        assert info.question == "Which region?"
        with pytest.raises(InvalidAnswer, match=r"'mars' is not one of the options") as refused:
            await handle.Answer("mars", by="pat")
        assert refused.value.by == "pat"
        assert await handle.Status() == RunStatus.WAITING
        event = (await handle.Timeline())[-1]
        assert event.kind == "decision_refused" and event.data["value"] == "mars"
        assert event.data["error"] == "InvalidAnswer"
        await handle.Answer("eu", by="pat", comment="closest")
        await handle.Result(timeout=10)
        assert seen == ["eu"]
        decision = of_kind(await handle.Timeline(), "decision")[0]
        assert decision.data["value"] == "eu" and decision.data["verdict"] == "answer"
        assert decision.data["by"] == "pat" and decision.data["comment"] == "closest"


async def test_an_answer_is_validated_against_its_schema(store: Store) -> None:
    wf, seen = asking(HumanInput("Where to ship?", schema=Address))
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        info = await handle.Waiting()
        assert info is not None and info.spec["schema"]["title"] == "Address"
        with pytest.raises(InvalidAnswer, match="does not match Address: zip") as refused:
            await handle.Answer({"street": "Main St", "zip": "north"}, by="pat")
        assert refused.value.errors and refused.value.errors[0]["loc"] == ("zip",)
        assert await handle.Status() == RunStatus.WAITING
        await handle.Answer({"street": "Main St", "zip": "1000"}, by="pat")
        await handle.Result(timeout=10)
        assert seen == [{"street": "Main St", "zip": 1000}]


async def test_text_and_approval_answers_have_their_types(store: Store) -> None:
    wf, seen = asking(HumanInput("Any notes?"))
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        with pytest.raises(InvalidAnswer, match="a text answer is a string"):
            await handle.Answer(42, by="pat")
        await handle.Answer("none", by="pat")
        await handle.Result(timeout=10)
    wf, seen_ok = asking(HumanInput("Proceed?", kind="approval"))
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        with pytest.raises(InvalidAnswer, match="true or false"):
            await handle.Answer("yes", by="pat")
        with pytest.raises(NotWaiting, match="waits for input"):
            await handle.Approve(by="pat")
        await handle.Answer(True, by="pat")
        await handle.Result(timeout=10)
    assert seen == ["none"] and seen_ok == [True]


async def test_an_event_with_match_and_an_idempotent_event_id(store: Store) -> None:
    wf, seen = asking(Event("payment.settled", match={"order.id": "A-17"}))
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        info = await handle.Waiting()
        assert info is not None and info.kind == "event"
        assert info.event == "payment.settled" and info.match == {"order.id": "A-17"}
        with pytest.raises(NotWaiting, match="does not match"):
            await handle.Send("payment.settled", {"order": {"id": "B-2"}}, event_id="e0")
        with pytest.raises(NotWaiting, match="not for event 'payment.failed'"):
            await handle.Send("payment.failed", {"order": {"id": "A-17"}}, keep_for=None)
        # by default another event is kept for a wait to come (see test_early_events)
        assert await handle.Send("payment.failed", {}) == RunStatus.WAITING
        paid = {"order": {"id": "A-17"}, "amount": 120}
        assert await handle.Send("payment.settled", paid, event_id="e1") == RunStatus.QUEUED
        await handle.Result(timeout=10)
        # The same delivery again (a webhook retried) is recorded once, without error.
        assert await handle.Send("payment.settled", paid, event_id="e1") == RunStatus.COMPLETED
        assert seen == [{"event": "payment.settled", "payload": paid, "event_id": "e1"}]
        received = of_kind(await handle.Timeline(), "event_received")
        assert len(received) == 1 and received[0].data["event_id"] == "e1"
        # Another event, with another id, finds no wait: refused, never ignored.
        with pytest.raises(NotWaiting):
            await handle.Send("payment.settled", paid, event_id="e2")


async def test_runner_send_reaches_every_matching_run_page_by_page(store: Store) -> None:
    wf, seen = asking(Event("deploy.done", match={"region": "eu"}))
    other, _ = asking(Event("deploy.done", match={"region": "us"}))
    async with WorkflowRunner(wf, store) as runner:
        eu = [await runner.Run(run_id=f"eu-{i:03}") for i in range(103)]
        for handle in eu:
            await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        async with WorkflowRunner(other, store) as us_runner:
            us = await us_runner.Run(run_id="us-000")
            await us.WaitUntil(RunStatus.WAITING, timeout=10)
        reached = await runner.Send("deploy.done", {"region": "eu"}, event_id="d-1")
        assert sorted(reached) == [h.run_id for h in eu]
        for handle in eu:
            await handle.Result(timeout=10)
        assert len(seen) == 103
        assert await runner.Send("deploy.done", {"region": "eu"}, event_id="d-1") == []
        assert (await runner.Get("us-000")) and await us.Status() == RunStatus.WAITING
        assert await runner.Send("deploy.done", {"region": "us"}) == ["us-000"]


async def test_event_timeout_goes_to_on_timeout(store: Store) -> None:
    clock = ManualClock()
    wf, seen = asking(Event("reply", timeout=60), on_timeout="Late")
    async with WorkflowRunner(wf, store, clock=clock) as runner:
        handle = await runner.Run()
        await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        clock.advance(60)
        await runner.recover_now()
        await handle.Result(timeout=10)
        assert seen == []
        assert (await runner.Send("reply", {})) == [], "no run waits for it any more"


async def test_sleep_is_a_durable_timer_on_the_injected_clock(store: Store) -> None:
    clock = ManualClock()
    wf, seen = asking(Sleep(timedelta(hours=1)))
    async with WorkflowRunner(wf, store, clock=clock) as runner:
        handle = await runner.Run()
        record = await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        assert record.lease is None, "a sleeping run holds nothing"
        info = await handle.Waiting()
        assert info is not None and info.kind == "timer"
        assert info.deadline == record.wake_at == clock.now() + 3600
        clock.advance(1800)
        await runner.recover_now()
        assert await handle.Status() == RunStatus.WAITING
        clock.advance(1800)
        await runner.recover_now()
        await handle.Result(timeout=10)
        assert seen[0]["due"] == info.deadline
        assert "timer_fired" in [e.kind for e in await handle.Timeline()]


async def test_until_waits_for_a_moment(store: Store) -> None:
    clock = ManualClock()
    moment = datetime.fromtimestamp(clock.now(), UTC) + timedelta(days=2)
    wf, seen = asking(Until(moment))
    async with WorkflowRunner(wf, store, clock=clock) as runner:
        handle = await runner.Run()
        await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        assert (await handle.Record()).wake_at == moment.timestamp()
        clock.advance(86400)
        await runner.recover_now()
        assert await handle.Status() == RunStatus.WAITING
        clock.advance(86400)
        await runner.recover_now()
        await handle.Result(timeout=10)
        assert len(seen) == 1


async def test_a_paused_timer_keeps_its_deadline(store: Store) -> None:
    clock = ManualClock()
    wf, seen = asking(Sleep(60))
    async with WorkflowRunner(wf, store, clock=clock) as runner:
        handle = await runner.Run()
        await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        await handle.Pause()
        clock.advance(120)
        await runner.recover_now()
        assert await handle.Status() == RunStatus.PAUSED, "a paused run does not fire"
        assert await handle.Resume() == RunStatus.WAITING
        assert (await handle.Record()).wake_at == clock.now() - 60
        await runner.recover_now()
        await handle.Result(timeout=10)
        assert len(seen) == 1


def test_conditions_refuse_bad_arguments() -> None:
    with pytest.raises(ValueError, match="needs options"):
        HumanInput("Pick", kind="choice")
    with pytest.raises(ValueError, match="expected 'text', 'choice' or 'approval'"):
        HumanInput("Pick", kind="colour")  # type: ignore[arg-type]

    class Local(BaseModel):
        x: int

    with pytest.raises(TypeError, match="define the model at module level"):
        HumanInput("Shape?", schema=Local)
    with pytest.raises(TypeError, match="timezone-aware"):
        Until(datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="must be positive"):
        Sleep(0)
    with pytest.raises(TypeError, match="non-empty string"):
        Event("")
    with pytest.raises(TypeError, match="Wait\\(condition, next\\)"):
        Wait("approval", "Next")  # type: ignore[arg-type]
