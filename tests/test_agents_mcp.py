"""An MCP toolset of a durable pydantic-ai agent: its tool list and tool calls are
checkpointed in the step like the model's requests, so a step that runs again calls
the MCP server's tool once."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic_ai import Agent
from pydantic_ai.mcp import MCPToolset
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from holon import END, START, Next, Workflow, WorkflowRunner
from holon.agents import HolonDurability, PydanticAgent
from holon.stores import SQLiteStore

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SERVER = Path(__file__).resolve().parent / "mcp_crm_server.py"


def workflow(server: Path, parked: anyio.Event | None = None) -> Workflow:
    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        returns = [
            p for m in messages for p in getattr(m, "parts", []) if isinstance(p, ToolReturnPart)
        ]
        if not returns:
            return ModelResponse(parts=[ToolCallPart("lookup", {"company": "acme"}, "call-1")])
        if parked is not None:
            parked.set()
            await anyio.sleep_forever()  # sleep-ok: parked until the runner goes away
        return ModelResponse(parts=[TextPart(f"found {returns[-1].content}")])

    agent = Agent(
        FunctionModel(model),
        name="crm-agent",
        toolsets=[MCPToolset(server, id="crm")],
        capabilities=[HolonDurability()],
    )

    async def research(ctx: Any) -> Next:
        async with await ctx.Agents.crm as crm:
            return Next(END, output=await crm.Run("look acme up"))

    return (
        Workflow("McpResearch")
        .Agents({"crm": lambda: PydanticAgent(agent)})
        .Flow({START: lambda ctx: "Research", "Research": research})
    )


async def test_mcp_tool_calls_are_checkpointed(tmp_path: Path) -> None:
    server = tmp_path / "crm_server.py"
    shutil.copy(SERVER, server)
    store = SQLiteStore(f"sqlite:///{tmp_path / 'holon.db'}")
    parked = anyio.Event()
    async with WorkflowRunner(workflow(server, parked), store) as runner:
        handle = await runner.Run()
        with anyio.fail_after(30):
            await parked.wait()
    # The runner is gone mid-run, after the MCP tool call; another one finishes it.
    async with WorkflowRunner(workflow(server), store) as runner:
        handle = await runner.Get(handle.run_id)
        assert await handle.Result(timeout=30) == "found acme: 12 employees"
        timeline = await handle.Timeline()
    units = [e.data["unit"] for e in timeline if e.kind in ("agent_unit", "tool_call")]
    assert units == ["crm-agent__mcp_server__crm.get_tools", "crm-agent__mcp_server__crm.call_tool"]
    assert (tmp_path / "calls.log").read_text().splitlines() == ["acme"]
