"""Bad input gets a clear error naming the thing at fault, and changes nothing."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pydantic import BaseModel

from holon import (
    END,
    START,
    Context,
    InputValidationError,
    Next,
    RunFailed,
    RunNotFound,
    StateValidationError,
    ValidationError,
    Workflow,
    WorkflowRunner,
)
from holon.stores.base import Store

pytestmark = pytest.mark.anyio


class Repo(BaseModel):
    repo: str
    branch: str = "main"


class Build(BaseModel):
    artifact: str | None = None
    size: int = 0


async def test_invalid_input_raises_and_creates_nothing(store: Store) -> None:
    wf = Workflow("wf").Input(Repo).Flow({START: lambda ctx: END})
    async with WorkflowRunner(wf, store) as runner:
        with pytest.raises(
            InputValidationError, match="does not match Repo: repo: Field required"
        ) as info:
            await runner.Run({"branch": "dev"}, run_id="bad")
        assert isinstance(info.value, ValidationError) and info.value.workflow == "wf"
        assert info.value.errors[0]["loc"] == ("repo",)
        assert (await runner.List()).items == []
        with pytest.raises(RunNotFound):
            await runner.Get("bad")


async def test_step_returning_an_unknown_step_fails_the_run_naming_it(store: Store) -> None:
    wf = Workflow("deploy").Flow(
        {START: lambda ctx: "Clone", "Clone": lambda ctx: "Biuld", "Build": lambda ctx: END}
    )
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        with pytest.raises(RunFailed) as info:
            await handle.Result(timeout=10)
    message = str(info.value)
    assert "step 'Clone' returned 'Biuld'" in message
    assert "known steps: ['Build', 'Clone']" in message
    assert info.value.error is not None and info.value.error["type"] == "UnknownStepError"


async def test_invalid_set_state_fails_that_step_and_keeps_the_state(store: Store) -> None:
    reached: list[str] = []

    def bad(ctx: Context[Any, Build]) -> str:
        ctx.SetState(size="huge")
        reached.append("after SetState")
        return END

    wf = (
        Workflow("wf")
        .State(Build)
        .Flow(
            {
                START: lambda ctx: "Good",
                "Good": lambda ctx: (ctx.SetState(artifact="a.tar"), "Bad")[1],
                "Bad": bad,
            }
        )
    )
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        with pytest.raises(
            RunFailed, match="in step 'Bad'.*size: Input should be a valid integer.*'huge'"
        ):
            await handle.Result(timeout=10)
        record = await handle.Record()
    assert reached == [], "the invalid patch raised inside the step"
    assert record.body.state == {"artifact": "a.tar", "size": 0}
    assert record.body.error is not None and record.body.error.type == "StateValidationError"


def test_stored_state_that_no_longer_fits_the_model_is_named_when_read() -> None:
    # A state stored before the State model changed: reading it names run, step, field.
    ctx: Context[None, Build] = Context(
        run_id="r-1",
        step="Package",
        attempt=1,
        idempotency_key="r-1:Package:1",
        input=None,
        state={"artifact": "a.tar", "size": "huge"},
        state_model=Build,
        results={},
        decision=None,
        agents={},
    )
    with pytest.raises(StateValidationError, match=r"run 'r-1' in step 'Package'.*size") as caught:
        _ = ctx.State
    assert caught.value.errors and caught.value.errors[0]["loc"] == ("size",)


async def test_set_state_of_an_unknown_field_names_it(store: Store) -> None:
    wf = Workflow("wf").State(Build).Flow({START: lambda ctx: (ctx.SetState(artefact="x"), END)[1]})
    async with WorkflowRunner(wf, store) as runner:
        with pytest.raises(RunFailed, match="Build has no field 'artefact'"):
            await (await runner.Run()).Result(timeout=10)


async def test_non_json_output_names_the_step_and_type(store: Store) -> None:
    class Opaque:
        pass

    wf = Workflow("wf").Flow(
        {
            START: lambda ctx: "Emit",
            "Emit": lambda ctx: Next(END, output={"when": dt.date(2024, 1, 2), "obj": Opaque()}),
        }
    )
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        with pytest.raises(
            RunFailed,
            match="output of step 'Emit'.* holds at when a value of type date .*JSON cannot hold",
        ):
            await handle.Result(timeout=10)
        assert (await handle.Record()).results == {}


async def test_step_returning_none_says_what_a_step_returns(store: Store) -> None:
    wf = Workflow("wf").Flow({START: lambda ctx: None})
    async with WorkflowRunner(wf, store) as runner:
        with pytest.raises(
            RunFailed, match="returned None; a step returns the next step's name, END"
        ):
            await (await runner.Run()).Result(timeout=10)


async def test_get_of_an_unknown_run(store: Store) -> None:
    wf = Workflow("wf").Flow({START: lambda ctx: END})
    async with WorkflowRunner(wf, store) as runner:
        with pytest.raises(RunNotFound, match="no run 'nope'"):
            await runner.Get("nope")
