"""Onboard a customer: an agent researches them, a person approves exactly what the agent
found, and only then does outreach go out.

Run it with `python examples/onboard_customer.py`. The run is stored in the embedded
SQLite file `.holon/holon.db`. It halts at the approval (no task is left running while
it waits), an account manager approves it, bound to the digest of the research they were
shown, and the outreach step runs. The timeline is printed at the end.

The approval shows the research as its payload. holon stores the payload's SHA-256
digest; an approval that names another digest is refused, so a decision can never
approve research that changed after the approver read it.
"""

from __future__ import annotations

import datetime as dt
from datetime import timedelta
from typing import Any

import anyio
from pydantic import BaseModel

from holon import (
    END,
    START,
    Context,
    DigestMismatch,
    HumanApproval,
    Next,
    Wait,
    Workflow,
    WorkflowRunner,
    payload_digest,
)


class Customer(BaseModel):
    customer_id: str


class Onboarding(BaseModel):
    research: dict[str, Any] | None = None
    outreach_sent_to: str | None = None


Ctx = Context[Customer, Onboarding]


async def research(ctx: Ctx) -> Next:
    """Stands in for a research agent: what it found about the customer."""
    found = {
        "customer_id": ctx.Input.customer_id,
        "company": "Northwind Traders",
        "contact": "ana@northwind.example",
        "summary": "Wholesale importer, 40 staff, moving its ordering online this year.",
        "proposed_email": "Hello Ana, we help importers take orders online ...",
    }
    ctx.SetState(research=found)
    return Next("Review", output=found)


def review(ctx: Ctx) -> Wait:
    return Wait(
        HumanApproval(
            approvers=["role:account-manager"],
            question="Send this outreach to the customer?",
            payload=ctx.State.research,
            forbid_self_approval=True,
            timeout=timedelta(days=3),
            escalate_after=timedelta(days=1),
            escalate_to=["head-of-sales"],
        ),
        "Outreach",
        on_reject="Archive",
        on_timeout="Archive",
    )


async def outreach(ctx: Ctx) -> Next:
    research = ctx.State.research or {}
    # A real mailer would get ctx.IdempotencyKey, so a retried step sends one email.
    ctx.Log("email sent", to=research["contact"], key=ctx.IdempotencyKey)
    ctx.SetState(outreach_sent_to=research["contact"])
    return Next(END, output={"sent_to": research["contact"], "approved_by": ctx.Decision["by"]})


def archive(ctx: Ctx) -> Next:
    return Next(END, output={"sent_to": None, "why": ctx.Decision})


OnboardCustomer = (
    Workflow("OnboardCustomer", "Research, approve, reach out")
    .Input(Customer)
    .State(Onboarding)
    .Flow(
        {
            START: lambda ctx: "Research",
            "Research": research,
            "Review": review,
            "Outreach": outreach,
            "Archive": archive,
        }
    )
)


async def main() -> None:
    async with WorkflowRunner(OnboardCustomer) as runner:
        handle = await runner.Run({"customer_id": "C-1042"}, started_by="sdr-bot")
        print(f"run {handle.run_id} started")
        await handle.WaitUntil("waiting", timeout=30)
        shown = await handle.Waiting()
        assert shown is not None
        print(f"waiting: {shown.question} (approvers: {shown.approvers})")
        print(f"  payload digest {shown.digest}")

        # The approver's client computes the digest of what it displayed.
        seen = payload_digest(shown.payload)
        stale = payload_digest({**shown.payload, "summary": "an older draft"})
        try:
            await handle.Approve(by="maria", roles=["account-manager"], digest=stale)
        except DigestMismatch as refused:
            print(f"refused: {refused}")
        await handle.Approve(by="maria", roles=["account-manager"], digest=seen, comment="good fit")
        result = await handle.Result(timeout=30)
        print(f"completed: {result}")
        print("timeline:")
        for event in await handle.Timeline():
            at = dt.datetime.fromtimestamp(event.at).strftime("%H:%M:%S.%f")[:-3]
            print(
                f"  {event.seq:>3} {at} {event.kind:<17} {event.step or '':<9} {_short(event.data)}"
            )


def _short(data: dict[str, Any]) -> str:
    shown = {
        k: v
        for k, v in data.items()
        if v not in (None, [], {}) and k not in ("traceback", "payload", "reason")
    }
    text = ", ".join(f"{k}={v}" for k, v in shown.items())
    return text if len(text) < 90 else text[:87] + "..."


if __name__ == "__main__":
    anyio.run(main)
