"""An agent drafts a support reply; a person approves it from another process that knows
nothing but the run's id.

    python examples/agent_approval.py serve            # a worker: starts a run, prints
                                                       # its id, waits for its result
    python examples/agent_approval.py approve RUN_ID   # anywhere else: shows what the
                                                       # run waits for, approves it

Both processes reach the store named by `HOLON_STORE` (by default the embedded SQLite
file `.holon/holon.db`). The approving process has no workflow code and executes
nothing: a `SyncClient` reaches the run by its id, reads what it waits for (the draft
and its digest) and approves exactly that. The worker, which waited holding nothing,
then sends the reply.
"""

from __future__ import annotations

import sys

import anyio
from pydantic import BaseModel

from holon import (
    END,
    START,
    Client,
    Context,
    HumanApproval,
    Next,
    SyncClient,
    Wait,
    Worker,
    Workflow,
)
from holon.stores import default_store_url


class Ticket(BaseModel):
    ticket_id: str
    question: str


class Draft(BaseModel):
    reply: str = ""


class WritingAgent:
    """Stands in for a model-backed agent (a pydantic-ai agent wrapped in
    `holon.agents.PydanticAgent` has this shape, `holon.Agent`), without a network call."""

    async def Run(self, prompt: str, /) -> str:
        return f"Thanks for writing. About {prompt!r}: a refund is on its way."

    async def Close(self) -> None:
        return None


async def draft(ctx: Context[Ticket, Draft]) -> Wait:
    async with await ctx.Agents.writer as agent:  # a handle for this step, closed after
        reply = await agent.Run(ctx.Input.question)
    ctx.SetState(reply=reply)
    return Wait(
        HumanApproval(
            approvers=["support-lead"],
            question=f"Send this reply to ticket {ctx.Input.ticket_id}?",
            payload={"ticket": ctx.Input.ticket_id, "reply": reply},
            require_digest=True,
        ),
        "Send",
    )


def send(ctx: Context[Ticket, Draft]) -> Next:
    return Next(END, output={"sent": ctx.State.reply, "approved_by": ctx.Decision["by"]})


SupportReply = (
    Workflow("support_reply", "An agent drafts a reply; a person approves it")
    .Input(Ticket)
    .State(Draft)
    .Agents({"writer": WritingAgent})
    .Flow({START: lambda ctx: "Draft", "Draft": draft, "Send": send})
)


async def serve() -> None:
    store = default_store_url()
    async with Worker(SupportReply, store, poll_interval=0.05), Client(store) as client:
        handle = await client.Start(
            "support_reply", {"ticket_id": "T-1042", "question": "Where is my refund?"}
        )
        print(f"run {handle.run_id}", flush=True)
        await handle.WaitUntil("waiting", timeout=30)
        print("waiting for approval", flush=True)
        print(f"completed: {await handle.Result(timeout=600)}", flush=True)


def approve(run_id: str) -> None:
    with SyncClient(default_store_url()) as client:
        handle = client.get(run_id)
        info = handle.waiting()
        if info is None:
            sys.exit(f"run {run_id} waits for nothing (it is {handle.status().value})")
        print(f"question: {info.question}")
        print(f"payload: {info.payload}")
        status = handle.approve("support-lead", comment="reads well", digest=info.digest)
        print(f"approved: the run is {status.value}")


def main(argv: list[str]) -> None:
    if argv[:1] == ["serve"]:
        anyio.run(serve)
    elif argv[:1] == ["approve"] and len(argv) == 2:
        approve(argv[1])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
