"""Agents in steps: the `Agent` protocol, the handles a step opens, and their closing.

```python
async def research(ctx):
    async with await ctx.Agents.researcher as agent:     # or ctx.Agents["researcher"]
        return await agent.Run({"company": ctx.Input.company})
```

`.Agents({"researcher": factory})` names the agents a workflow's steps use. Opening one
in a step (`await ctx.Agents.researcher`) calls its factory and gives the step a handle
of its own; `Close()` releases it. holon closes every handle a step left open when the
step ends, however it ends (completed, failed, timed out, stopped, its lease lost), and
notes in the run's timeline that it had to (`agent_left_open`).

An agent is anything with `Run` and `Close` (the `Agent` protocol): a pydantic-ai agent
made durable by `holon.agents.PydanticAgent`, or a class of your own.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

import anyio

from holon._naming import snake_case_aliases
from holon.errors import AgentNotFound, HolonError

__all__ = [
    "Agent",
    "AgentDirectory",
    "AgentFactory",
    "AgentHandle",
    "RunHalted",
    "StepAgents",
    "agent_step",
    "already",
    "awaiting_step",
    "step_ending",
]

logger = logging.getLogger("holon.agents")

AgentFactory = Callable[[], Any]
"""Makes the agent a handle uses: called with no argument when a step opens the handle;
it may return the agent or an awaitable of it."""

_agent_step: contextvars.ContextVar[Any] = contextvars.ContextVar("holon_agent_step", default=None)


def agent_step() -> Any:
    """The `ctx` of the step whose agent handle is running now (inside `AgentHandle.Run`),
    else None. Durable agent integrations read it to checkpoint inside the step."""
    return _agent_step.get()


class AgentDirectory(Protocol):
    """Where an engine finds agents beyond a workflow's `.Agents({...})`: a `Steward`'s
    registry (`Steward.RegisterAgent`)."""

    def agent_factory(self, name: str) -> AgentFactory | None:
        """The factory of agent `name`, or None."""
        ...

    def agent_names(self) -> list[str]:
        """The names of the agents registered, announced with the executor (so other
        processes see which agents the fleet serves)."""
        ...


@runtime_checkable
class Agent(Protocol):
    """What holon needs of an agent: run it on an input, and release what it holds.

    Any object with these two methods is an agent (sync `Close` is accepted too)."""

    async def Run(self, input: Any, /) -> Any:
        """Run the agent on `input` and return its output (JSON data or a model)."""
        ...

    async def Close(self) -> None:
        """Release what the agent holds (connections, sessions); called once."""
        ...


@snake_case_aliases
class AgentHandle:
    """One step's use of one agent: `Run` it, `Close` it (or `async with` it).

    Args:
        name: the agent's name in `.Agents({...})`.
        agent: the agent object (made by the factory for this handle).
        ctx: the `ctx` of the step that opened it.
    """

    def __init__(self, name: str, agent: Any, ctx: Any) -> None:
        self.name = name
        self.agent = agent
        self._ctx = ctx
        self.closed = False
        self.runs = 0
        """How many times `Run` was called on this handle (numbers journal entries)."""

    def __repr__(self) -> str:
        return f"AgentHandle({self.name!r}, closed={self.closed})"

    async def Run(self, input: Any = None, /, **options: Any) -> Any:
        """Run the agent on `input`, inside this step (a durable agent checkpoints its
        model requests and tool calls in the step; see `agent_step`)."""
        if self.closed:
            raise HolonError(
                f"agent {self.name!r} in step {self._ctx.StepName!r}: its handle is closed; "
                "open another with `await ctx.Agents[...]`",
                run_id=self._ctx.RunId,
                step=self._ctx.StepName,
            )
        self.runs += 1
        token = _agent_step.set(self._ctx)
        try:
            value = self.agent.Run(input, **options)
            if inspect.isawaitable(value):
                value = await value
            return value
        finally:
            _agent_step.reset(token)

    async def Close(self) -> None:
        """Release the agent (its `Close`); a second call does nothing."""
        if self.closed:
            return
        self.closed = True
        close = getattr(self.agent, "Close", None) or getattr(self.agent, "close", None)
        if close is not None:
            value = close()
            if inspect.isawaitable(value):
                await value

    async def __aenter__(self) -> AgentHandle:
        return self

    # The snake_case twins (`snake_case_aliases` checks them).
    run = Run
    close = Close

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.Close()


class StepAgents:
    """`ctx.Agents` in a step: `await ctx.Agents.researcher` or
    `await ctx.Agents["researcher"]` opens a handle (`AgentHandle`) for this step.

    Args:
        ctx: the step's `ctx`.
        factories: the workflow's `.Agents({...})`.
        lookup: finds an agent factory by name elsewhere (the Steward's registry), or
            None.
        note: records in the run's timeline that handles were left open (when given).
    """

    def __init__(
        self,
        ctx: Any,
        factories: Mapping[str, AgentFactory],
        lookup: Callable[[str], AgentFactory | None] | None = None,
        note: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None,
    ) -> None:
        self._ctx = ctx
        self._factories = factories
        self._lookup = lookup
        self._note = note
        self.handles: list[AgentHandle] = []
        """Every handle this step opened, in order."""

    def __getattr__(self, name: str) -> Awaitable[AgentHandle]:
        if name.startswith("_"):
            raise AttributeError(name)
        return self.open(name)

    def __getitem__(self, name: str) -> Awaitable[AgentHandle]:
        return self.open(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._factory(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self._factories)

    def _factory(self, name: str) -> AgentFactory | None:
        factory = self._factories.get(name)
        if factory is None and self._lookup is not None:
            factory = self._lookup(name)
        return factory

    async def open(self, name: str) -> AgentHandle:
        """Open a handle on agent `name` for this step."""
        factory = self._factory(name)
        if factory is None:
            raise AgentNotFound(
                f"step {self._ctx.StepName!r} asked for agent {name!r}, which is not in "
                f".Agents({{...}}) nor registered with the Steward; agents: "
                f"{sorted(self._factories)}",
                run_id=self._ctx.RunId,
                step=self._ctx.StepName,
            )
        agent = factory()
        if inspect.isawaitable(agent):
            agent = await agent
        if not callable(getattr(agent, "Run", None)):
            raise TypeError(
                f"agent {name!r}: its factory returned {agent!r}, which has no Run method "
                "(see holon.Agent)"
            )
        handle = AgentHandle(name, agent, self._ctx)
        self.handles.append(handle)
        return handle

    async def close_left_open(self, ending: str) -> list[str]:
        """Close the handles still open as the step ends (`ending`: how it ended), note
        in the timeline that they were left open, and return their names. Shielded: it
        runs while the step is being cancelled too."""
        left = [h for h in self.handles if not h.closed]
        if not left:
            return []
        names = [h.name for h in left]
        with anyio.CancelScope(shield=True):
            for handle in left:
                try:
                    await handle.Close()
                except Exception:
                    logger.exception(
                        "run %s, step %s: closing agent %r failed",
                        self._ctx.RunId,
                        self._ctx.StepName,
                        handle.name,
                    )
            logger.warning(
                "run %s, step %s ended %s with agents left open: %s; holon closed them",
                self._ctx.RunId,
                self._ctx.StepName,
                ending,
                names,
            )
            if self._note is not None:
                try:
                    await self._note("agent_left_open", {"agents": names, "step_ended": ending})
                except Exception:
                    logger.exception("run %s: noting agents left open failed", self._ctx.RunId)
        return names


class RunHalted(BaseException):
    """The run halted inside a step (its budget ran out, or a tool call waits for a
    person): the step unwinds and the engine writes nothing more for it. A
    BaseException, so a step's `except Exception` does not swallow it."""


def step_ending(error: BaseException) -> str:
    """How a step that raised `error` ended, as `agent_left_open` events say it."""
    if isinstance(error, RunHalted):
        return "halted"
    if isinstance(error, anyio.get_cancelled_exc_class()):
        return "cancelled"
    return "failed"


async def already(value: Any) -> Any:
    """`value` as an awaitable (a synchronous step's, finished like an async one's)."""
    return value


async def awaiting_step(ctx: Any, pending: Awaitable[Any]) -> Any:
    """Await a step's `pending` value; then let the step finish (`Context.finish`: close
    the agent handles it left open, publish what it emitted), however it ended (a value,
    an error, a cancellation: timeout, Stop, lease lost)."""
    try:
        value = await pending
    except BaseException as error:
        if ctx.needs_finish:
            await ctx.finish(step_ending(error))
        raise
    if ctx.needs_finish:
        await ctx.finish("completed")
    return value
