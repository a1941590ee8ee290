"""Fan-out: running the branches of a `Parallel` and checkpointing each as it finishes."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any

import anyio
from anyio.abc import TaskGroup

from holon._json import digest, to_json_value
from holon.definition.directives import Next, Parallel, Wait
from holon.definition.policies import runs_in_thread
from holon.errors import HolonError, UnknownStepError
from holon.runtime.attempts import Attempts
from holon.runtime.context import Context
from holon.runtime.execution import Execution, LeaseLost, branch_name, next_step, unknown_step
from holon.runtime.transitions import Transitions
from holon.stores.base import Compensation, Cursor, RunStatus, evolve

__all__ = ["FanOut"]


class FanOut:
    """Plans and runs fan-outs."""

    def __init__(self, transitions: Transitions, attempts: Attempts) -> None:
        self.transitions = transitions
        self.attempts = attempts

    def plan(self, execution: Execution, step: str, parallel: Parallel) -> Cursor:
        """The cursor of the fan-out `step` returned. Raises when it names a step the
        flow does not have, or a branch twice."""
        workflow = execution.workflow
        next_step(workflow, step, parallel.join, "joins the fan-out at")
        names: list[str] = []
        for branch in parallel.branches:
            if isinstance(branch, str):
                if branch not in workflow.steps:
                    raise unknown_step(workflow, step, branch, "named as a Parallel branch")
                name = branch
            elif callable(branch):
                name = branch_name(workflow, branch)
                execution.branch_functions[name] = branch
            else:
                raise TypeError(
                    f"step {step!r}: Parallel branch {branch!r} is neither a step "
                    "name nor a function"
                )
            if name in names:
                raise ValueError(f"step {step!r}: Parallel names branch {name!r} twice")
            names.append(name)
        return Cursor(step=step, branches=names, join=parallel.join)

    async def _branch_function(
        self, execution: Execution, cursor: Cursor, name: str
    ) -> Callable[..., Any]:
        spec = execution.workflow.steps.get(name)
        if spec is not None:
            return spec.fn
        if name not in execution.branch_functions:
            # After a restart the callables are gone: ask the step that fanned out again.
            parent = execution.workflow.steps.get(cursor.step)
            if parent is not None:
                outcome = parent.fn(execution.context(cursor.step))
                if inspect.isawaitable(outcome):
                    outcome = await outcome
                if isinstance(outcome, Parallel):
                    self.plan(execution, cursor.step, outcome)
        try:
            return execution.branch_functions[name]
        except KeyError:
            raise UnknownStepError(
                f"step {cursor.step!r} no longer returns a Parallel branch named {name!r}",
                run_id=execution.run_id,
                step=cursor.step,
            ) from None

    async def run(self, execution: Execution, cursor: Cursor) -> None:
        pending = [b for b in cursor.branches if b not in cursor.done]
        failures: list[tuple[str, BaseException]] = []
        try:
            functions = {b: await self._branch_function(execution, cursor, b) for b in pending}
        except HolonError as exc:
            await self.transitions.fail(execution, cursor.step, exc)
            return

        workflow = execution.workflow

        async def branch(name: str, group: TaskGroup) -> None:
            spec = workflow.steps.get(name)
            started = time.perf_counter()
            outcome = await self.attempts.run(
                execution,
                name,
                functions[name],
                lambda attempt: execution.context(name, attempt),
                retry=(spec.retry if spec else None) or workflow.default_retry,
                timeout=spec.timeout
                if spec and spec.timeout is not None
                else workflow.default_timeout,
                durable=False,
                in_thread=spec.in_thread if spec else runs_in_thread(functions[name]),
            )
            try:
                if outcome.error is not None or outcome.ctx is None:
                    raise outcome.error or HolonError(f"branch {name!r} did not run")
                value = outcome.value
                if isinstance(value, (Next, Wait, Parallel)):
                    raise TypeError(
                        f"Parallel branch {name!r} returned {value!r}; a branch "
                        "returns its result, the join step decides what is next"
                    )
                result = to_json_value(
                    value,
                    what="result",
                    run_id=execution.run_id,
                    step=name,
                    keyring=execution.plan.rules.keyring,
                )
                execution.plan.rules.limits.check(
                    "step_output", result, what=f"the result of branch {name!r}", step=name
                )
            except Exception as exc:
                failures.append((name, exc))
                group.cancel_scope.cancel()
                return
            duration_ms = round((time.perf_counter() - started) * 1000, 3)
            async with execution.lock:
                try:
                    await self._commit_branch(
                        execution,
                        name,
                        outcome.ctx,
                        result,
                        duration_ms,
                        compensate=spec.compensate if spec else None,
                    )
                except LeaseLost:
                    execution.lease_lost = True
                    group.cancel_scope.cancel()

        async with anyio.create_task_group() as group:
            for name in pending:
                group.start_soon(branch, name, group)
        if execution.lease_lost:
            raise LeaseLost()
        if failures:
            name, error = failures[0]
            await self.transitions.fail(execution, name, error)

    async def _commit_branch(
        self,
        execution: Execution,
        name: str,
        ctx: Context[Any, Any],
        result: Any,
        duration_ms: float,
        *,
        compensate: Callable[..., Any] | None,
    ) -> None:
        transitions = self.transitions
        body = execution.body
        cursor = body.cursor
        assert cursor is not None and cursor.join is not None
        done = [*cursor.done, name]
        counts = {**body.counts, name: body.counts.get(name, 0) + 1}
        now = transitions.clock.now()
        events = [
            transitions.event(
                "branch_completed",
                name,
                at=now,
                duration_ms=duration_ms,
                output_digest=digest(result),
                attempt=body.attempt,
            )
        ]
        transitions.step_events(events, name, ctx, at=now)
        if set(done) >= set(cursor.branches):
            next_cursor = transitions.cursor_at(cursor.join)
            events.append(transitions.event("step_started", cursor.join, at=now))
            attempt = 1
        else:
            next_cursor = evolve(cursor, {"done": done})
            attempt = body.attempt
        new_body = evolve(
            body,
            {
                "state": {**body.state, **ctx.state_patch},
                "counts": counts,
                "cursor": next_cursor,
                "attempt": attempt,
                "deaths": 0,
                "compensations": body.compensations
                if compensate is None
                else [
                    *body.compensations,
                    Compensation(step=name, idempotency_key=ctx.IdempotencyKey, output=result),
                ],
            },
        )
        await transitions.commit(
            execution, RunStatus.RUNNING, new_body, results={name: result}, events=events
        )
