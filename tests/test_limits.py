"""Size limits: a value over its limit is refused with `ValueTooLarge`, naming the field
and both sizes, and nothing is stored; on every store for what people send."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from holon import (
    END,
    START,
    Event,
    HumanInput,
    Limits,
    Next,
    RunFailed,
    RunStatus,
    ValueTooLarge,
    Wait,
    Workflow,
    WorkflowRunner,
)
from holon.limits import MAX_LIMIT, json_size
from holon.stores.base import Store

pytestmark = pytest.mark.anyio

TEN_MB = "x" * (10 * 1024 * 1024)


class Note(BaseModel):
    text: str = ""


def asks() -> Workflow:
    return (
        Workflow("asks")
        .State(Note)
        .Flow(
            {
                START: lambda ctx: "Ask",
                "Ask": lambda ctx: Wait(HumanInput("Why?"), "Hear"),
                "Hear": lambda ctx: Wait(Event("paid"), "Done"),
                "Done": lambda ctx: END,
            }
        )
    )


async def test_ten_megabytes_of_answer_event_and_input_are_refused(store: Store) -> None:
    wf = asks()
    async with WorkflowRunner(wf, store) as runner:
        with pytest.raises(ValueTooLarge) as refused_input:
            await runner.Run({"doc": TEN_MB})
        assert refused_input.value.field == "input"
        assert refused_input.value.limit == Limits().input
        assert refused_input.value.size == json_size({"doc": TEN_MB}) > 10 * 1024 * 1024
        message = str(refused_input.value)
        assert "input" in message and f"{refused_input.value.size:,}" in message
        assert f"{Limits().input:,}" in message and "nothing was stored" in message
        assert (await store.list_runs()).items == [], "the refused run was created"

        handle = await runner.Run({"doc": "small"}, run_id="r")
        await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        before = await handle.Record()
        with pytest.raises(
            ValueTooLarge, match="the answer by 'ann' to run 'r' is 10,485,762 bytes"
        ):
            await handle.Answer(TEN_MB, by="ann")
        with pytest.raises(ValueTooLarge, match="Limits.answer"):
            await handle.Answer("fine", by="ann", comment=TEN_MB)
        after = await handle.Record()
        assert (after.seq, after.event_seq) == (before.seq, before.event_seq), "it was stored"

        await handle.Answer("because", by="ann")
        await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        before = await handle.Record()
        with pytest.raises(ValueTooLarge, match="payload of event 'paid'") as refused:
            await handle.Send("paid", {"blob": TEN_MB})
        assert refused.value.field == "event_payload"
        with pytest.raises(ValueTooLarge, match="Limits.event_payload"):
            await runner.Send("paid", {"blob": TEN_MB})
        after = await handle.Record()
        assert (after.seq, after.event_seq) == (before.seq, before.event_seq), "it was stored"
        await handle.Send("paid", {"blob": "ok"})
        assert await handle.Result(timeout=10) == {"text": ""}


async def test_a_resume_state_patch_over_its_limit_is_refused() -> None:
    wf = asks().Limits(state_patch=1024)
    async with WorkflowRunner(wf, "memory://") as runner:
        handle = await runner.Run()
        await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        await handle.Pause()
        with pytest.raises(ValueTooLarge, match="state patch of Resume") as refused:
            await handle.Resume(state={"text": "y" * 2000})
        assert (refused.value.field, refused.value.limit) == ("state_patch", 1024)
        assert await handle.Status() == RunStatus.PAUSED
        await handle.Resume(state={"text": "short"})
        assert (await handle.Record()).body.state == {"text": "short"}


def writer(size: int, *, output: bool) -> Workflow:
    def write(ctx: Any) -> Any:
        if output:
            return Next(END, output={"blob": "z" * size})
        ctx.SetState(text="z" * size)
        return END

    return (
        Workflow("writer")
        .State(Note)
        .Flow({START: lambda ctx: "Write", "Write": write})
        .Limits(step_output=4096, state_patch=4096)
    )


@pytest.mark.parametrize("output", [True, False], ids=["step_output", "state_patch"])
async def test_a_step_over_its_limit_fails_naming_the_step_and_stores_nothing(
    output: bool,
) -> None:
    async with WorkflowRunner(writer(10_000, output=output), "memory://") as runner:
        handle = await runner.Run()
        with pytest.raises(RunFailed, match="ValueTooLarge") as failed:
            await handle.Result(timeout=10)
        assert failed.value.step == "Write"
        record = await handle.Record()
        assert record.body.error is not None
        field = "step_output" if output else "state_patch"
        assert f"Limits.{field}" in record.body.error.message
        assert "4,096 bytes" in record.body.error.message
        assert record.results == {} and record.body.state == {"text": ""}
    async with WorkflowRunner(writer(100, output=output), "memory://") as runner:
        handle = await runner.Run()
        await handle.Result(timeout=10)


def test_limits_are_checked_when_made() -> None:
    assert Workflow("w").size_limits == Limits()
    assert Workflow("w").Limits(answer=10).size_limits == Limits(answer=10)
    chained = Workflow("w").Limits(answer=10).Limits(input=20)
    assert chained.size_limits == Limits(answer=10, input=20)
    with pytest.raises(ValueError, match="Limits.answer must be a positive int"):
        Limits(answer=0)
    with pytest.raises(ValueError, match="the most a store holds"):
        Limits(input=MAX_LIMIT + 1)
    with pytest.raises(Exception, match="workflow 'w': .Limits\\(\\): Limits.input"):
        Workflow("w").Limits(input=-1)
