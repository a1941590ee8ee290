"""pydantic-ai agents made durable inside holon steps (the `holon[pydantic-ai]` extra).

```python
from pydantic_ai import Agent
from holon.agents import HolonDurability, PydanticAgent

researcher = Agent("openai:gpt-5", name="researcher", capabilities=[HolonDurability()])

wf = Workflow("onboard").Agents({"researcher": lambda: PydanticAgent(researcher)}).Flow(...)
```

`HolonDurability` plugs into pydantic-ai's public durability interface
(`pydantic_ai.durable_exec`), as its Temporal, DBOS and Prefect integrations do: every
model request and every tool call of an agent run is one durable unit, which holon
checkpoints inside the step running the agent (the step's journal, see
`holon.runtime.journal`). When the step runs again after a crash, the agent run starts
over and each recorded unit returns its recorded result: the model is called only for
the requests not yet recorded, and a tool call that completed is not made again. A
tool call that was under way when the process died runs again, with the same
`tool_idempotency_key()`: pass it to the system the tool changes.

Model requests add their tokens (and cost, where pydantic-ai knows the model's price)
to the run's usage, and the run's budget is checked before each one. Streamed text is
sent to the run's watchers (`ctx.Emit("text", delta)`), never checkpointed.

Outside a holon step (no agent handle running it) the capability does nothing: the
agent runs as it would without it.
"""

from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic_ai import Agent as PydanticAIAgent
from pydantic_ai import RunContext
from pydantic_ai.durable_exec import (
    JSON_CODEC,
    BaseDurabilityCapability,
    CallableOperationBackend,
    DurabilityEngineSpec,
    DurableOperationBackend,
    DurableOperationId,
    EventStreamHandlerId,
    JournalOperationNamer,
    ModelRequestId,
    RoleBasedOperationConfig,
    ToolsetCallToolId,
)
from pydantic_ai.messages import (
    AgentStreamEvent,
    ModelResponse,
    PartDeltaEvent,
    PartStartEvent,
    TextPart,
    TextPartDelta,
)
from pydantic_ai.run import AgentRunResult
from pydantic_ai.tools import AgentDepsT, DeferredToolRequests

from holon.agents.tool_approvals import decide_tool_calls
from holon.definition.conditions import HumanApproval
from holon.errors import HolonError
from holon.runtime.agents import agent_step

__all__ = ["HolonDurability", "PydanticAgent", "tool_idempotency_key"]

logger = logging.getLogger("holon.agents")

_tool_key: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "holon_tool_idempotency_key", default=None
)


def tool_idempotency_key() -> str:
    """The idempotency key of the tool call running now: stable across crashes and
    retries of the step (the step's key, the tool's name and the model's call id)."""
    key = _tool_key.get()
    if key is None:
        raise RuntimeError(
            "tool_idempotency_key() is known inside a tool called by an agent that runs "
            "in a holon step with HolonDurability"
        )
    return key


class _Backend(CallableOperationBackend[None]):
    """Runs each durable unit of an agent run through the journal of the holon step
    that runs the agent."""

    def __init__(self, agent_name: str) -> None:
        super().__init__(
            namer=JournalOperationNamer(agent_name),
            config=RoleBasedOperationConfig(model=None, event=None, capability=None, tool=None),
        )

    async def execute(
        self,
        *,
        operation_id: DurableOperationId,
        name: str,
        body: Callable[[], Awaitable[object]],
        cache_key: tuple[object, ...],
        config: None,
    ) -> object:
        ctx = agent_step()
        services = getattr(ctx, "services", None)
        if ctx is None or services is None or isinstance(operation_id, EventStreamHandlerId):
            return await body()  # events are delivered live, never journaled
        call_id = _tool_call_id(cache_key)
        if isinstance(operation_id, ToolsetCallToolId) and call_id is not None:
            unit = f"{name}/{call_id}"
        else:
            # Other units are numbered in the order the run makes them: the order of an
            # agent run's model requests does not change when it runs again.
            unit = f"{name}#{services.position(ctx, name)}"
        key = services.key(ctx, unit)
        found, payload = services.recorded(key)
        if found:
            return payload
        if isinstance(operation_id, ModelRequestId):
            await services.before_model_request(ctx)
            payload = await body()
            usage = _usage(payload)
            await services.record(
                ctx, key, payload, kind="model_request", data={"unit": name}, usage=usage
            )
            return payload
        if isinstance(operation_id, ToolsetCallToolId):
            tool_key = f"{ctx.IdempotencyKey}/{name.rsplit(':', 1)[-1]}/{call_id}"
            token = _tool_key.set(tool_key)
            try:
                payload = await body()
            finally:
                _tool_key.reset(token)
            data = {"unit": name, "tool_call_id": call_id, "idempotency_key": tool_key}
            await services.record(ctx, key, payload, kind="tool_call", data=data)
            return payload
        payload = await body()
        await services.record(ctx, key, payload, kind="agent_unit", data={"unit": name})
        return payload


def _tool_call_id(cache_key: tuple[object, ...]) -> str | None:
    for item in cache_key:
        if isinstance(item, RunContext):
            return item.tool_call_id
    return None


_RESPONSE = TypeAdapter(ModelResponse)


def _usage(payload: object) -> dict[str, Any]:
    """Tokens (and the cost, where pydantic-ai knows the price) of one model response."""
    if not isinstance(payload, dict):
        return {"requests": 1}
    usage = payload.get("usage") or {}
    input_tokens = int(usage.get("input_tokens") or 0)
    output_tokens = int(usage.get("output_tokens") or 0)
    out: dict[str, Any] = {
        "requests": 1,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "tokens": input_tokens + output_tokens,
    }
    if payload.get("model_name"):
        out["model"] = payload["model_name"]
    try:
        response = _RESPONSE.validate_python(payload)
        out["usd"] = float(response.cost().total_price)
    except Exception:  # no known price for this model: tokens only
        pass
    return out


async def _emit_text(ctx: RunContext[Any], events: AsyncIterable[AgentStreamEvent]) -> None:
    """Send a streamed model response's text to the run's watchers as it comes."""
    step = agent_step()
    async for event in events:
        text = None
        if isinstance(event, PartStartEvent) and isinstance(event.part, TextPart):
            text = event.part.content
        elif isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
            text = event.delta.content_delta
        if step is not None and text:
            step.Emit("text", text)


@dataclass(init=False, kw_only=True)
class HolonDurability(BaseDurabilityCapability[AgentDepsT]):
    """The capability that makes a pydantic-ai agent durable inside holon steps: add
    it to the agent (`Agent(..., name=..., capabilities=[HolonDurability()])`).

    Args:
        name: the name of the agent's durable units (default: the agent's `name`,
            which must then be set); part of every journal key, so keep it stable.
        stream_text: send the text of model responses to the run's watchers as it
            is generated (`ctx.Emit("text", delta)`); the model is then asked to
            stream its responses, so it must support streaming.
    """

    engine_spec = DurabilityEngineSpec(
        engine_name="holon",
        durable_unit_noun="checkpoint",
        durable_container_noun="step",
        codec=JSON_CODEC,
        wrapped_toolset_kinds=frozenset({"function", "mcp", "dynamic"}),
        toolset_lifecycles={
            "function": "enter-always",
            "mcp": "enter-in-durable-unit",
            "dynamic": "enter-never",
        },
        journal_discovery=True,
        sequential_tools_in_durable_context=False,
    )

    def __init__(self, *, name: str | None = None, stream_text: bool = False) -> None:
        super().__init__(name=name, event_stream_handler=_emit_text if stream_text else None)

    @property
    def in_durable_context(self) -> bool:
        return agent_step() is not None

    def get_durable_operation_backend(self) -> DurableOperationBackend[Any]:
        return _Backend(self.name)


class PydanticAgent:
    """A pydantic-ai agent as a holon agent (`holon.Agent`): `Run(input)` runs it and
    returns its output; `Close()` has nothing to release.

    The agent must carry `HolonDurability` (else nothing inside its run would be
    checkpointed, and this refuses it). An input that is not a string is sent to the
    model as JSON.

    Args:
        agent: the pydantic-ai agent.
        approvals: who approves each tool made with `requires_approval=True`, by tool
            name (see `holon.agents.tool_approvals`).
        run_options: passed to every `agent.run(...)`.
    """

    def __init__(
        self,
        agent: PydanticAIAgent[Any, Any],
        *,
        approvals: Mapping[str, HumanApproval] | None = None,
        **run_options: Any,
    ) -> None:
        if HolonDurability.from_agent(agent) is None:
            raise TypeError(
                f"pydantic-ai agent {agent.name!r} has no HolonDurability capability: make it "
                "with Agent(..., capabilities=[HolonDurability()]) so that its model requests "
                "and tool calls are checkpointed"
            )
        for tool, rules in (approvals or {}).items():
            if not isinstance(rules, HumanApproval):
                raise TypeError(f"approvals[{tool!r}] must be a HumanApproval, got {rules!r}")
        self.agent = agent
        self.approvals = dict(approvals or {})
        self.run_options = run_options

    async def Run(self, input: Any, /, **options: Any) -> Any:
        prompt = input if isinstance(input, str) else json.dumps(_jsonable(input))
        run_options = {**self.run_options, **options}
        output_type = [self.agent.output_type, DeferredToolRequests]
        result: AgentRunResult[Any] = await self.agent.run(
            prompt, output_type=output_type, **run_options
        )
        while isinstance(result.output, DeferredToolRequests):
            ctx = agent_step()
            if ctx is None or ctx.services is None:
                raise HolonError(
                    f"agent {self.agent.name!r} called tools that need approval outside a "
                    "holon step; run it through a step's agent handle"
                )
            decided = await decide_tool_calls(
                ctx, self.agent.name or "agent", result.output, self.approvals
            )
            result = await self.agent.run(
                message_history=result.all_messages(),
                deferred_tool_results=decided,
                output_type=output_type,
                **run_options,
            )
        return result.output

    async def Close(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"PydanticAgent({self.agent.name!r})"


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value
