"""A pydantic-ai agent with two tools and a scripted offline model, for the durable
agent tests (in process and in `tests.agent_worker`).

The model (`FunctionModel`) asks for `lookup`, then for `record`, then answers; every
call it gets is appended to a log file, so a test counts the model's calls across
processes. Each tool appends its invocation to the log too, and `record` applies its
effect at a sink file keyed by the tool call's idempotency key, applying a key once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import anyio
from pydantic_ai import Agent as PydanticAIAgent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from holon import END, START, Next, Workflow
from holon.agents import HolonDurability, PydanticAgent, tool_idempotency_key

__all__ = ["append", "build_agent", "read_log", "workflow"]


def append(path: str, entry: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as log:
        log.write(json.dumps({**entry, "pid": os.getpid()}) + "\n")


def read_log(path: str | Path) -> list[dict[str, Any]]:
    if not Path(path).exists():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line]


def build_agent(
    log: str, sink: str, *, hang_in: str | None = None, parked: anyio.Event | None = None
) -> PydanticAIAgent[None, str]:
    """The agent. With `hang_in` ("model:3", "tool:record"), that call announces itself
    on stdout (`inside`) and parks until the process is killed; `parked` is set there
    too (for in-process tests)."""

    async def park(where: str) -> None:
        if hang_in == where:
            print(json.dumps({"event": "inside", "where": where}), flush=True)
            if parked is not None:
                parked.set()
            await anyio.sleep_forever()  # sleep-ok: parked until the test kills us

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        made = sum(1 for m in messages if isinstance(m, ModelResponse))
        number = made + 1
        append(log, {"call": "model", "number": number})
        await park(f"model:{number}")
        if number == 1:
            return ModelResponse(parts=[ToolCallPart("lookup", {"company": "acme"}, "call-1")])
        if number == 2:
            return ModelResponse(parts=[ToolCallPart("record", {"note": "acme ok"}, "call-2")])
        return ModelResponse(parts=[TextPart("acme is ready")])

    agent = PydanticAIAgent(
        FunctionModel(model), name="researcher", capabilities=[HolonDurability()]
    )

    @agent.tool_plain
    async def lookup(company: str) -> str:
        append(log, {"call": "lookup", "key": tool_idempotency_key()})
        return f"{company}: 12 employees"

    @agent.tool_plain
    async def record(note: str) -> str:
        key = tool_idempotency_key()
        append(log, {"call": "record", "key": key})
        await park("tool:record")
        applied = {e["key"] for e in read_log(sink)}
        if key not in applied:  # the sink honours the key: one effect per key
            append(sink, {"key": key, "note": note})
        return "recorded"

    return agent


def workflow(
    log: str, sink: str, *, hang_in: str | None = None, parked: anyio.Event | None = None
) -> Workflow:
    """A Flow whose step `Research` runs the agent; its output is the run's result."""
    agent = build_agent(log, sink, hang_in=hang_in, parked=parked)

    async def research(ctx: Any) -> Any:
        async with await ctx.Agents.researcher as researcher:
            answer = await researcher.Run({"company": "acme"})
        return Next(END, output={"answer": answer})

    return (
        Workflow("DurableResearch")
        .Agents({"researcher": lambda: PydanticAgent(agent)})
        .Flow({START: lambda ctx: "Research", "Research": research})
    )
