"""The code a Steward's declarative workflows and `ctx.Agent(...)` call, registered in
each process that executes them: agents (by factory) and task functions. Code is not
kept in the store; which agents the live executors serve is (`Steward.ListAgents`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from holon.errors import HolonError

__all__ = ["AgentFactory", "CodeRegistry"]

AgentFactory = Callable[[], Any]


class CodeRegistry:
    """Agents and task functions by name (a part of `Steward`)."""

    _agent_factories: dict[str, AgentFactory]
    _agents: dict[str, Any]
    _tasks: dict[str, Callable[..., Any]]

    def RegisterAgent(self, name: str, factory: AgentFactory) -> None:
        """Make an agent available to declarative steps (`agent: name`).

        `factory()` builds the agent the first time a step needs it; the agent is then
        called with the step's `ctx` (or its `run(ctx)` method is), sync or async, and
        what it returns is the step's result.
        """
        self._check_name("agent", name, factory)
        self._agent_factories[name] = factory
        self._agents.pop(name, None)

    def agent_factory(self, name: str) -> AgentFactory | None:
        """The factory registered as agent `name`, or None: how `ctx.Agent(name, ...)`
        and `ctx.Agents` find agents in runs executed by this steward's runners and
        workers."""
        return self._agent_factories.get(name)

    def agent_names(self) -> list[str]:
        """The agents registered in this process."""
        return sorted(self._agent_factories)

    def RegisterTask(self, name: str, fn: Callable[..., Any]) -> None:
        """Make a function available to declarative steps (`task: name`): called with
        the step's `ctx`, sync or async; what it returns is the step's result."""
        self._check_name("task", name, fn)
        self._tasks[name] = fn

    def Agent(self, name: str) -> Any:
        """The agent registered as `name`, built by its factory on first use."""
        if name not in self._agents:
            try:
                factory = self._agent_factories[name]
            except KeyError:
                raise HolonError(
                    f"no agent {name!r} is registered; agents: {sorted(self._agent_factories)}"
                ) from None
            self._agents[name] = factory()
        return self._agents[name]

    def _call(self, kind: str, name: str) -> Callable[..., Any]:
        if kind == "task":
            return self._tasks[name]
        agent = self.Agent(name)
        if callable(agent):
            return agent  # type: ignore[no-any-return]
        run = getattr(agent, "run", None)
        if callable(run):
            return run  # type: ignore[no-any-return]
        raise TypeError(f"agent {name!r} is neither callable nor has a run(ctx) method")

    @staticmethod
    def _check_name(kind: str, name: str, fn: Any) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a {kind} needs a non-empty name, got {name!r}")
        if not callable(fn):
            raise TypeError(f"{kind} {name!r}: expected a function, got {fn!r}")

    # The snake_case twins (`snake_case_aliases` checks them on `Steward`).
    register_agent = RegisterAgent
    register_task = RegisterTask
    agent = Agent
