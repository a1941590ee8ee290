"""Onboard a customer with pydantic-ai agents: a research agent finds out about the
customer, an account manager approves exactly what it found, and an outreach agent
writes and sends the welcome e-mail.

Run it with `python examples/onboard_customer_agents.py` (needs `holon[pydantic-ai]`).
The models are offline (pydantic-ai's `FunctionModel`, scripted below), so it runs
with no network and no keys; give the agents a real model (`"openai:gpt-5"`, ...)
and nothing else changes.

What holon adds to the agents:

* each model request and tool call of an agent run is checkpointed inside its step
  (`HolonDurability`): a crash in the middle of the research resumes it without asking
  the model again for what it already answered;
* the approval shows the research as its payload and is bound to its digest;
* the e-mail tool gets an idempotency key (`tool_idempotency_key()`) that stays the
  same if the step runs again, so the mail service sends one e-mail;
* every model request's tokens are in the timeline and summed per step and run, and
  the run's budget (`.Budget(...)`) is checked before each request;
* the outreach agent's text is streamed to whoever watches the run (`handle.Watch()`).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, cast

import anyio
from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, DeltaToolCalls, FunctionModel

from holon import (
    END,
    START,
    Context,
    Emitted,
    HumanApproval,
    Next,
    TimelineEvent,
    Wait,
    Workflow,
    WorkflowRunner,
    payload_digest,
)
from holon.agents import HolonDurability, PydanticAgent, tool_idempotency_key


class Customer(BaseModel):
    customer_id: str
    company: str


class Research(BaseModel):
    company: str
    contact: str
    summary: str


SENT: dict[str, dict[str, str]] = {}
"""Stands in for the mail service, which sends one e-mail per idempotency key."""


# -- the research agent -------------------------------------------------------------


def research_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Scripted: look the company up, then answer with the research."""
    found = [p for m in messages for p in getattr(m, "parts", []) if isinstance(p, ToolReturnPart)]
    if not found:
        return ModelResponse(parts=[ToolCallPart("lookup_company", {"name": "Northwind"})])
    facts = cast(dict[str, str], found[-1].content)  # what lookup_company returned
    answer = {
        "company": "Northwind Traders",
        "contact": facts["contact"],
        "summary": facts["about"],
    }
    return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, answer)])


researcher = Agent(
    FunctionModel(research_model),
    name="researcher",
    output_type=Research,
    capabilities=[HolonDurability()],
)


@researcher.tool_plain
def lookup_company(name: str) -> dict[str, str]:
    """What the CRM knows about a company."""
    return {
        "contact": "ana@northwind.example",
        "about": "Wholesale importer, 40 staff, moving its ordering online this year.",
    }


# -- the outreach agent -------------------------------------------------------------


async def outreach_model(
    messages: list[ModelMessage], info: AgentInfo
) -> AsyncIterator[str | DeltaToolCalls]:
    """Scripted and streamed: send the e-mail, then say so, a few words at a time."""
    sent = [p for m in messages for p in getattr(m, "parts", []) if isinstance(p, ToolReturnPart)]
    if not sent:
        body = "Hello Ana, we help importers take their orders online."
        args = json.dumps({"to": "ana@northwind.example", "body": body})
        yield {0: DeltaToolCall(name="send_email", json_args=args)}
        return
    for word in ("Welcome ", "e-mail ", "sent ", "to ", "Ana."):
        yield word


def unstreamed(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    raise NotImplementedError("the outreach agent streams")


writer = Agent(
    FunctionModel(unstreamed, stream_function=outreach_model),
    name="writer",
    capabilities=[HolonDurability(stream_text=True)],
)


@writer.tool_plain
def send_email(to: str, body: str) -> str:
    """Send an e-mail, once per idempotency key."""
    key = tool_idempotency_key()
    SENT.setdefault(key, {"to": to, "body": body})
    return f"sent to {to}"


# -- the workflow -------------------------------------------------------------------

Ctx = Context[Customer, Any]


async def research(ctx: Ctx) -> Next:
    async with await ctx.Agents.researcher as agent:
        found: Research = await agent.Run(ctx.Input.model_dump())
    return Next("Review", output=found)


def review(ctx: Ctx) -> Wait:
    return Wait(
        HumanApproval(
            approvers=["role:account-manager"],
            question="Reach out to this customer?",
            payload=ctx.StepResults["Research"],
            forbid_self_approval=True,
            timeout=timedelta(days=3),
        ),
        "Outreach",
        on_reject=END,
    )


async def outreach(ctx: Ctx) -> Next:
    async with await ctx.Agents.writer as agent:
        said = await agent.Run({"research": ctx.StepResults["Research"]})
    return Next(END, output={"said": said, "approved_by": ctx.Decision["by"]})


OnboardCustomer = (
    Workflow("OnboardCustomerAgents", "Research, approve, reach out, with agents")
    .Input(Customer)
    .Agents(
        {"researcher": lambda: PydanticAgent(researcher), "writer": lambda: PydanticAgent(writer)}
    )
    .Budget(tokens=20_000, requests=20)
    .Flow(
        {
            START: lambda ctx: "Research",
            "Research": research,
            "Review": review,
            "Outreach": outreach,
        }
    )
)


async def main() -> None:
    async with WorkflowRunner(OnboardCustomer) as runner:
        handle = await runner.Run(
            {"customer_id": "C-1042", "company": "Northwind"}, started_by="sdr"
        )
        print(f"run {handle.run_id} started")
        await handle.WaitUntil("waiting", timeout=30)
        shown = await handle.Waiting()
        assert shown is not None
        print(f"waiting: {shown.question} {shown.payload}")
        watch = handle.Watch(timeout=30)
        await handle.Approve(
            "maria", roles=["account-manager"], digest=payload_digest(shown.payload)
        )
        streamed = []
        async for item in watch:
            if isinstance(item, Emitted) and item.kind == "text":
                streamed.append(item.data)
            elif isinstance(item, TimelineEvent) and item.kind in ("model_request", "tool_call"):
                print(f"  {item.kind:<13} {item.step:<9} {item.data.get('tokens', '')}")
        print(f"streamed: {''.join(streamed)!r}")
        print(f"completed: {await handle.Result(timeout=30)}")
        usage = (await handle.Record()).body.usage
        print(f"usage: {usage['tokens']} tokens in {usage['requests']} requests")
        print(f"e-mails sent: {len(SENT)}")


if __name__ == "__main__":
    anyio.run(main)
