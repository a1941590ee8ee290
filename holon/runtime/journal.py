"""What a running step reaches of its run besides its own data: checkpoints inside the
step (the journal), usage and the budget, the live feed, and notes in the timeline.

A durable agent (`holon.agents.PydanticAgent`) checkpoints each model request and each
tool call of its run inside the step it runs in: `record(ctx, key, value)` commits the
value under a key made from the step's idempotency key, and `recorded(ctx, key)` finds
it again when the step runs anew after a crash, so nothing recorded is done twice. The
journal lives in the run's results under keys that start with `JOURNAL_PREFIX`; steps
do not see them in `ctx.StepResults`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from holon.definition.budget import add_usage, exhausted
from holon.runtime.agents import AgentFactory, StepAgents
from holon.runtime.context import JOURNAL_PREFIX
from holon.runtime.execution import Execution
from holon.runtime.transitions import Transitions
from holon.stores.base import Emitted, RunStatus, evolve

__all__ = ["JOURNAL_PREFIX", "RunHalted", "RunServices"]

logger = logging.getLogger("holon.journal")

BUDGET_EXHAUSTED = "budget exhausted"


class RunHalted(BaseException):
    """The run halted inside a step (its budget ran out): the step unwinds and the
    engine writes nothing more for it. A BaseException, so a step's `except Exception`
    does not swallow it."""


class RunServices:
    """The services of one execution, shared by the contexts of its steps."""

    def __init__(
        self,
        execution: Execution,
        transitions: Transitions,
        lookup: Callable[[str], AgentFactory | None] | None = None,
    ) -> None:
        self.execution = execution
        self.transitions = transitions
        self.lookup = lookup
        self.journaled = any(key.startswith(JOURNAL_PREFIX) for key in execution.results)
        """Whether the run's results hold journal entries (which `StepResults` hides)."""

    # -- agents -----------------------------------------------------------------------

    def agents(self, ctx: Any) -> StepAgents:
        """`ctx.Agents` for a step."""
        return StepAgents(
            ctx, self.execution.plan.agents, self.lookup, partial(self.note, ctx.StepName)
        )

    async def note(self, step: str | None, kind: str, data: dict[str, Any]) -> None:
        """Add an event to the run's timeline now, without a checkpoint."""
        event = self.transitions.event(kind, step, **data)
        await self.transitions.store.append_timeline(self.execution.run_id, [event])

    # -- the journal ------------------------------------------------------------------

    @staticmethod
    def key(ctx: Any, unit: str) -> str:
        """The journal key of `unit` in the step `ctx` runs: stable across the step's
        attempts and crashes (it starts with the step's idempotency key)."""
        return f"{JOURNAL_PREFIX}{ctx.IdempotencyKey}/{unit}"

    def recorded(self, key: str) -> tuple[bool, Any]:
        """(True, value) when `key` is recorded, else (False, None)."""
        entry = self.execution.results.get(key)
        if isinstance(entry, dict) and "value" in entry:
            return True, entry["value"]
        return False, None

    async def record(
        self,
        ctx: Any,
        key: str,
        value: Any,
        *,
        kind: str,
        data: dict[str, Any],
        usage: dict[str, Any] | None = None,
    ) -> None:
        """Checkpoint `value` under `key` inside the step, with a `kind` event in the
        timeline; `usage` (of a model request) is added to the run's and step's usage."""
        execution = self.execution
        async with execution.lock:
            body = execution.body
            if usage:
                body = evolve(body, {"usage": add_usage(body.usage, ctx.StepName, usage)})
                data = {**data, **usage}
            event = self.transitions.event(kind, ctx.StepName, key=key, **data)
            await self.transitions.commit(
                execution, RunStatus.RUNNING, body, events=[event], results={key: {"value": value}}
            )
        self.journaled = True

    # -- budget -----------------------------------------------------------------------

    async def before_model_request(self, ctx: Any) -> None:
        """Pause the run before a model request its budget has no room for: the pause
        is checkpointed (reason `budget exhausted`) and the step unwinds (`RunHalted`);
        `Resume()` runs the step again, its recorded requests replayed."""
        execution = self.execution
        body = execution.body
        measure = exhausted(body.budget, body.usage)
        if measure is None:
            return
        async with execution.lock:
            body = execution.body
            event = self.transitions.event(
                "paused",
                ctx.StepName,
                reason=BUDGET_EXHAUSTED,
                measure=measure,
                budget=body.budget,
                usage={k: v for k, v in body.usage.items() if k != "steps"},
            )
            paused = evolve(body, {"paused_from": RunStatus.RUNNING})
            await self.transitions.finish(execution, RunStatus.PAUSED, paused, event)
        logger.info(
            "run %s paused in step %s: budget exhausted (%s)", ctx.RunId, ctx.StepName, measure
        )
        raise RunHalted()

    # -- the live feed ----------------------------------------------------------------

    def emit(self, step: str | None, kind: str, data: Any) -> None:
        """Send `data` to the run's watchers in this process (never stored)."""
        store = self.transitions.store
        item = Emitted(self.execution.run_id, kind, step, data, self.transitions.clock.now())
        store.signals.publish(self.execution.run_id, item)
