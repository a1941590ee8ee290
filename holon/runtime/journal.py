"""What a running step reaches of its run besides its own data: checkpoints inside the
step (the journal), usage and the budget, the live feed, and notes in the timeline.

A durable agent (`holon.agents.PydanticAgent`) checkpoints each model request and each
tool call of its run inside the step it runs in: `record(ctx, key, value, ...)` commits
the value under a key made from the step's idempotency key (`key(ctx, unit)`), and
`recorded(key)` finds it again when the step runs anew after a crash, so nothing
recorded is done twice. The
journal lives in the run's results under keys that start with `JOURNAL_PREFIX`; steps
do not see them in `ctx.StepResults`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from holon._json import to_json_value
from holon.definition.budget import add_usage, exhausted
from holon.definition.conditions import HumanApproval
from holon.definition.directives import Wait
from holon.errors import HolonError
from holon.runtime.agents import AgentFactory, RunHalted, StepAgents
from holon.runtime.context import JOURNAL_PREFIX, Context
from holon.runtime.execution import Execution
from holon.runtime.suspension import Suspender
from holon.runtime.transitions import Transitions
from holon.stores.base import Emitted, RunStatus, evolve

__all__ = ["JOURNAL_PREFIX", "RunHalted", "RunServices"]

logger = logging.getLogger("holon.journal")

BUDGET_EXHAUSTED = "budget exhausted"


class RunServices:
    """The services of one execution, shared by the contexts of its steps."""

    def __init__(
        self,
        execution: Execution,
        transitions: Transitions,
        suspender: Suspender,
        lookup: Callable[[str], AgentFactory | None] | None = None,
    ) -> None:
        self.execution = execution
        self.transitions = transitions
        self.suspender = suspender
        self.lookup = lookup
        self.journaled = any(key.startswith(JOURNAL_PREFIX) for key in execution.results)
        """Whether the run's results hold journal entries (which `StepResults` hides)."""

    # -- agents -----------------------------------------------------------------------

    def agents(self, ctx: Context[Any, Any]) -> StepAgents:
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
    def key(ctx: Context[Any, Any], unit: str) -> str:
        """The journal key of `unit` in the step `ctx` runs: stable across the step's
        attempts and crashes (it starts with the step's idempotency key)."""
        return f"{JOURNAL_PREFIX}{ctx.IdempotencyKey}/{unit}"

    @staticmethod
    def position(ctx: Context[Any, Any], name: str) -> int:
        """The position of the next unit called `name` in this step attempt (0, 1, ...):
        an agent run makes its model requests in the same order when it runs again."""
        positions = ctx.journal_positions
        if positions is None:
            positions = ctx.journal_positions = {}
        position: int = positions.get(name, 0)
        positions[name] = position + 1
        return position

    def recorded(self, key: str) -> tuple[bool, Any]:
        """(True, value) when `key` is recorded, else (False, None)."""
        entry = self.execution.results.get(key)
        if isinstance(entry, dict) and "value" in entry:
            return True, entry["value"]
        return False, None

    async def record(
        self,
        ctx: Context[Any, Any],
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
        execution.plan.rules.limits.check(
            "step_output", value, what=f"journal entry {key!r}", step=ctx.StepName
        )
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

    async def before_model_request(self, ctx: Context[Any, Any]) -> None:
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

    # -- decisions inside a step -----------------------------------------------------

    async def await_approval(
        self, ctx: Context[Any, Any], unit: str, condition: HumanApproval
    ) -> Any:
        """The decision on `condition` for `unit` of the step (a tool call), once a
        person made it; until then the run waits for it, durably, holding no task.

        The first time, the run halts on a wait whose id names the step, the unit and
        the digest of the condition's payload (`RunHalted` unwinds the step). When the
        wait closes, the step runs again; this call then finds the decision, records
        it in the journal under the unit (so it is used once, by this unit alone) and
        returns it: `{"approved": ..., "by": ..., "comment": ..., "args": ...}` (args:
        arguments an approver edited), or a timer record when the wait timed out.
        A payload that changed (other arguments) has another digest, hence another
        wait: an approval given for the old one does not apply to it.
        """
        key = self.key(ctx, f"approval/{unit}")
        found, decision = self.recorded(key)
        if found:
            return decision
        execution = self.execution
        spec = to_json_value(condition.spec(), what="approval", run_id=ctx.RunId, step=None)
        wait_id = f"{ctx.IdempotencyKey}/{unit}@{str(spec.get('digest'))[:16]}"
        body = execution.body
        closed = body.closed_wait
        if body.wait is None and closed is not None and closed.wait_id == wait_id:
            decision = body.decision
            await self.record(
                ctx, key, decision, kind="tool_decision", data={"unit": unit, "wait_id": wait_id}
            )
            return decision
        cursor = body.cursor
        if cursor is None or cursor.join is not None:
            raise HolonError(
                f"step {ctx.StepName!r} of run {ctx.RunId!r}: a decision inside a step "
                "cannot be awaited in a Parallel branch; run the agent in a step of its own",
                run_id=ctx.RunId,
                step=ctx.StepName,
            )
        again = cursor.step  # the run comes back to this step once the wait closes
        directive = Wait(condition, again, on_reject=again, on_timeout=again)
        checkpoint = self.suspender.checkpoint(
            execution, ctx.StepName, directive, 0, events=[], results={}, wait_id=wait_id
        )
        async with execution.lock:
            await self.transitions.write(execution, checkpoint)
        raise RunHalted()

    # -- the live feed ----------------------------------------------------------------

    async def flush(self) -> None:
        """Wait until what the run's steps emitted is published to other processes."""
        await self.transitions.store.signals.flush()

    def emit(self, step: str | None, kind: str, data: Any) -> None:
        """Send `data` to the run's watchers in this process (never stored)."""
        store = self.transitions.store
        execution = self.execution
        now = self.transitions.clock.now()
        item = Emitted(execution.run_id, execution.event_seq, kind, now, step, data)
        store.signals.publish(execution.run_id, item)
