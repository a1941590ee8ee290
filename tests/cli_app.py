"""The workflows the CLI tests drive through `holon` (`--app tests.cli_app:WORKFLOWS`).

`flaky`'s step fails while the file named by `HOLON_TEST_FLAKY` exists; `slow`'s step
holds until the file named by `HOLON_TEST_RELEASE` exists (a step in flight while a
worker is told to stop).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from holon import (
    END,
    START,
    Event,
    HumanApproval,
    HumanInput,
    Next,
    Wait,
    Workflow,
    step,
)


class Person(BaseModel):
    name: str


class Verdict(BaseModel):
    label: str = ""
    total: int = 0


def _greet(ctx: Any) -> Next:
    return Next(END, output={"greeting": f"Hello, {ctx.Input.name}!"})


GREET = (
    Workflow("greet", "Greets a person once ann approves", version="1")
    .Input(Person)
    .Flow(
        {
            START: lambda ctx: "Ask",
            "Ask": lambda ctx: Wait(HumanApproval(approvers=["ann"]), "Greet"),
            "Greet": _greet,
        }
    )
)

FORM = Workflow("form", version="1").Flow(
    {
        START: lambda ctx: Wait(HumanInput("Favourite colour?"), "Done"),
        "Done": lambda ctx: Next(END, output={"colour": ctx.Decision}),
    }
)

PAID = Workflow("paid", version="1").Flow(
    {
        START: lambda ctx: Wait(Event("order.paid"), "Done"),
        "Done": lambda ctx: Next(END, output=ctx.Decision["payload"]),
    }
)


def _charge(ctx: Any) -> str:
    marker = os.environ.get("HOLON_TEST_FLAKY")
    if marker and Path(marker).exists():
        raise RuntimeError("card service down")
    ctx.SetState(total=ctx.State.total + 10)
    return "Ship"


FLAKY = (
    Workflow("flaky", version="1")
    .State(Verdict)
    .Flow(
        {
            START: lambda ctx: "Charge",
            "Charge": _charge,
            "Ship": lambda ctx: Next(END, output={"total": ctx.State.total}),
        }
    )
)


async def _ask_model(ctx: Any) -> Next:
    return Next("Decide", output={"answer": 7})


def _decide(ctx: Any) -> Next:
    label = "yes" if ctx.StepResults["Ask"]["answer"] > 5 else "no"
    ctx.SetState(label=label)
    return Next(END, output=label)


MODEL = (
    Workflow("model", version="1")
    .State(Verdict)
    .Flow({START: lambda ctx: "Ask", "Ask": step(_ask_model, external=True), "Decide": _decide})
)


def _hold(ctx: Any) -> str:
    release = Path(os.environ["HOLON_TEST_RELEASE"])
    while not release.exists():  # the test creates it once the worker is told to stop
        time.sleep(0.01)  # sleep-ok: polling a file another process creates
    return "Done"


SLOW = Workflow("slow", version="1").Flow(
    {START: lambda ctx: "Hold", "Hold": _hold, "Done": lambda ctx: Next(END, output="done")}
)

WORKFLOWS = [GREET, FORM, PAID, FLAKY, MODEL, SLOW]
