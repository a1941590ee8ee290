"""Refunds: the workflow docs/operators.md steers from the terminal.

`Check` asks a model whether the refund is fair (marked external: a replay answers it
from the recording), `Pay` calls the payment service, which is down while a file named
`.payments-down` exists in the current directory, and `Notify` tells the customer.

    holon worker examples.refunds:WORKFLOWS
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from holon import END, START, Next, Workflow, step


class Refund(BaseModel):
    order: str
    amount: int


class Progress(BaseModel):
    fair: bool = False
    paid: int = 0


async def check(ctx: Any) -> Next:
    """Stands in for a model call: small refunds are fair."""
    return Next("Pay", output={"fair": ctx.Input.amount <= 500})


def pay(ctx: Any) -> Literal["Notify"]:
    if Path(".payments-down").exists():
        raise ConnectionError("payment service unavailable")
    ctx.SetState(fair=ctx.StepResults["Check"]["fair"], paid=ctx.Input.amount)
    return "Notify"


def notify(ctx: Any) -> Next:
    return Next(END, output={"order": ctx.Input.order, "paid": ctx.State.paid})


REFUNDS = (
    Workflow("refunds", "Check, pay and notify a refund", version="1")
    .Input(Refund)
    .State(Progress)
    .Flow(
        {
            START: lambda ctx: "Check",
            "Check": step(check, external=True),
            "Pay": pay,
            "Notify": notify,
        }
    )
)

WORKFLOWS = [REFUNDS]
