"""`.Execute(fn)`: running the imperative model, replayed from the top on resume.

`Imperative` runs a workflow function with an `ExecuteContext`
(`holon.runtime.execute_context`, where the journal and its replay are described):
each task the function awaits runs under its policies and is checkpointed, a wait or a
child run halts the run durably, and the function's return value completes it.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import time
from typing import Any

import anyio
from pydantic import BaseModel

from holon._json import digest, to_json_value
from holon.definition.directives import Child as ChildDirective
from holon.definition.directives import Wait, WaitCondition
from holon.errors import HolonError
from holon.runtime.attempts import Attempts
from holon.runtime.cassette import active as active_cassette
from holon.runtime.children import (
    child_failed,
    child_run_id,
    child_wait,
    resolve_child,
    start_child,
)
from holon.runtime.context import FLUSH_LIMIT, Context
from holon.runtime.definitions import Definitions
from holon.runtime.execute_context import (
    ExecuteContext,
    Suspended,
    TaskCall,
    _current_step,
    current_step,
)
from holon.runtime.execution import EXECUTE_STEP, Execution, idempotency_key, wants
from holon.runtime.suspension import Suspender
from holon.runtime.task_state import TaskState
from holon.runtime.transitions import Transitions
from holon.sealing import redact
from holon.stores.base import Compensation, NewEvent, RunLink, RunStatus, evolve

__all__ = ["ExecuteContext", "Imperative", "TaskCall", "TaskState", "current_step"]


class Imperative:
    """Runs `.Execute()` workflows."""

    def __init__(
        self,
        transitions: Transitions,
        attempts: Attempts,
        suspender: Suspender,
        definitions: Definitions,
    ) -> None:
        self.transitions = transitions
        self.attempts = attempts
        self.suspender = suspender
        self.definitions = definitions

    async def run(self, execution: Execution) -> None:
        """Run the workflow function from the top until it returns, fails or halts."""
        transitions = self.transitions
        fn = execution.workflow.execute_fn
        assert fn is not None
        ctx: ExecuteContext[Any, Any] = ExecuteContext(self, execution)
        error: BaseException | None = None
        value: Any = None
        try:
            value = fn(ctx)
            if inspect.isawaitable(value):
                value = await value
        except Suspended:
            return
        except Exception as exc:
            error = exc
        if error is not None:
            await transitions.fail(execution, ctx.last_step or EXECUTE_STEP, error)
            return
        try:
            output = to_json_value(
                value,
                what="result",
                run_id=execution.run_id,
                step=EXECUTE_STEP,
                keyring=execution.plan.rules.keyring,
            )
            execution.plan.rules.limits.check(
                "step_output", output, what="the result of the run", step=EXECUTE_STEP
            )
        except HolonError as exc:
            await transitions.fail(execution, EXECUTE_STEP, exc)
            return
        if ctx.emitted and execution.services is not None:
            with anyio.move_on_after(FLUSH_LIMIT):
                await execution.services.flush()  # watchers elsewhere get it before the end
        async with execution.lock:
            await self._checkpoint(
                execution,
                ctx,
                RunStatus.COMPLETED,
                {},
                output=output,
                events=[transitions.event("completed", None, output_digest=digest(output))],
            )

    async def run_task(self, ctx: ExecuteContext[Any, Any], call: TaskCall[Any]) -> Any:
        transitions = self.transitions
        execution = ctx._execution
        workflow = execution.workflow
        if wants(execution.control, "pause"):
            async with execution.lock:
                await self._checkpoint(
                    execution,
                    ctx,
                    RunStatus.PAUSED,
                    {},
                    events=[
                        transitions.event(
                            "paused",
                            call.name,
                            by=execution.control.by if execution.control else None,
                        )
                    ],
                )
            raise Suspended()
        if execution.hand_back:
            async with execution.lock:
                event = transitions.event("handed_back", call.name, owner=transitions.owner)
                await self._checkpoint(
                    execution, ctx, RunStatus.QUEUED, {}, events=[event], clear_control=False
                )
            raise Suspended()
        if call.external and (cassette := active_cassette()) is not None:
            recorded = cassette.play(call.name)  # a replay: never the real call
            call = dataclasses.replace(call, fn=lambda *a, **k: recorded, in_thread=False)
            call.awaited = True  # the copy runs here, as the original would have
        key = idempotency_key(execution.run_id, call.base, call.occurrence)
        ctx.last_step = call.name
        started = time.perf_counter()
        outcome = await self.attempts.run(
            execution,
            call.name,
            lambda step_ctx: _invoke(call, step_ctx),
            lambda attempt: execution.context(call.name, attempt, key=key),
            retry=call.retry or workflow.default_retry,
            timeout=call.timeout if call.timeout is not None else workflow.default_timeout,
            durable=False,
            in_thread=False,  # `_invoke` puts the task's function in a thread itself
        )
        if outcome.error is not None:
            raise outcome.error
        value = to_json_value(
            outcome.value,
            what="result",
            run_id=execution.run_id,
            step=call.name,
            keyring=execution.plan.rules.keyring,
        )
        execution.plan.rules.limits.check(
            "step_output", value, what=f"the result of task {call.name!r}", step=call.name
        )
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        compensation = (
            None
            if call.undo is None
            else Compensation(step=call.name, idempotency_key=key, output=value, undo=call.undo)
        )
        async with execution.lock:
            state_set, state_unset = ctx.State.take_pending()
            entry = {
                "at": call.position,
                "value": value,
                "state": {"set": state_set, "unset": state_unset},
            }
            await self._checkpoint(
                execution,
                ctx,
                RunStatus.RUNNING,
                {call.name: entry},
                compensation=compensation,
                events=[
                    transitions.event(
                        "step_completed",
                        call.name,
                        position=call.position,
                        duration_ms=duration_ms,
                        output_digest=digest(value),
                        attempt=outcome.ctx.Attempt if outcome.ctx else 1,
                    )
                ],
            )
        return outcome.value if isinstance(outcome.value, BaseModel) else value

    async def wait_for(
        self,
        ctx: ExecuteContext[Any, Any],
        condition: WaitCondition,
        position: int,
        name: str,
        occurrence: int,
    ) -> Any:
        execution = ctx._execution
        body = execution.body
        wait_id = f"{name}#{occurrence}"
        closed = body.closed_wait
        if body.wait is None and closed is not None and closed.wait_id == wait_id:
            value = _decision_value(condition, body.decision)
            state_set, state_unset = ctx.State.take_pending()
            ctx.pending[name] = {
                "at": position,
                "value": value,
                "state": {"set": state_set, "unset": state_unset},
            }
            return value
        directive = Wait(condition, EXECUTE_STEP, on_reject=EXECUTE_STEP, on_timeout=EXECUTE_STEP)
        checkpoint = self.suspender.checkpoint(
            execution,
            name,
            directive,
            occurrence,
            events=[],
            results=self._take_pending(ctx),
            update={"state": ctx.State.as_dict()},
        )
        async with execution.lock:
            await self.transitions.write(execution, checkpoint)
        raise Suspended()

    async def child(
        self,
        ctx: ExecuteContext[Any, Any],
        child: ChildDirective,
        position: int,
        name: str,
        occurrence: int,
    ) -> Any:
        execution = ctx._execution
        body = execution.body
        wait_id = f"{name}#{occurrence}"
        closed = body.closed_wait
        if body.wait is None and closed is not None and closed.wait_id == wait_id:
            outcome = body.decision if isinstance(body.decision, dict) else {}
            if outcome.get("status") != RunStatus.COMPLETED.value:
                raise child_failed(outcome, name)
            value = outcome.get("output")
            state_set, state_unset = ctx.State.take_pending()
            ctx.pending[name] = {
                "at": position,
                "value": value,
                "state": {"set": state_set, "unset": state_unset},
            }
            return value
        workflow = resolve_child(self.definitions, child)
        run_id = child_run_id(execution.run_id, f"child:{workflow.name}", occurrence)
        link = RunLink(run_id=execution.run_id, step=name)
        clock = self.transitions.clock
        await start_child(self.transitions.store, workflow, child.input, run_id, link, clock.now())
        started = self.transitions.event(
            "child_started",
            name,
            child_run_id=run_id,
            workflow=workflow.name,
            version=workflow.version,
        )
        checkpoint = self.suspender.checkpoint(
            execution,
            name,
            child_wait([(name, workflow, run_id)], EXECUTE_STEP, EXECUTE_STEP),
            occurrence,
            events=[started],
            results=self._take_pending(ctx),
            update={"state": ctx.State.as_dict(), "children": [*body.children, run_id]},
        )
        async with execution.lock:
            await self.transitions.write(execution, checkpoint)
        raise Suspended()

    def _take_pending(self, ctx: ExecuteContext[Any, Any]) -> dict[str, Any]:
        pending, ctx.pending = ctx.pending, {}
        return pending

    async def _checkpoint(
        self,
        execution: Execution,
        ctx: ExecuteContext[Any, Any],
        status: RunStatus,
        results: dict[str, Any],
        *,
        events: list[NewEvent],
        output: Any = None,
        compensation: Compensation | None = None,
        clear_control: bool = True,
    ) -> None:
        transitions = self.transitions
        body = execution.body
        update: dict[str, Any] = {"state": ctx.State.as_dict(), "attempt": 1, "deaths": 0}
        if compensation is not None:
            update["compensations"] = [*body.compensations, compensation]
        if status == RunStatus.COMPLETED:
            update.update(output=output, cursor=None)
        logs = [
            transitions.event(
                "log",
                ctx.last_step,
                **to_json_value(
                    redact(entry), what="log entry", run_id=ctx.RunId, step=ctx.last_step
                ),
            )
            for entry in ctx.logs
        ]
        ctx.logs.clear()
        terminal = status != RunStatus.RUNNING
        await transitions.commit(
            execution,
            status,
            evolve(body, update),
            results={**self._take_pending(ctx), **results},
            events=[*logs, *events],
            release=terminal,
            clear_control=terminal and clear_control,
        )


def _decision_value(condition: WaitCondition, decision: Any) -> Any:
    """What `ctx.WaitFor(condition)` returns (docs/execute.md): an approval's verdict,
    an event's payload, an answer, a timer's record; None after an event's or an
    answer's timeout."""
    if condition.kind == "approval" and isinstance(decision, dict):
        return bool(decision.get("approved"))
    timed_out = isinstance(decision, dict) and decision.get("timed_out") is True
    if condition.kind == "event":
        return None if timed_out or not isinstance(decision, dict) else decision.get("payload")
    if condition.kind == "input" and timed_out:
        return None
    return decision


async def _invoke(call: TaskCall[Any], step_ctx: Context[Any, Any]) -> Any:
    """Call the task's function as the step `step_ctx` describes (`current_step()` and
    `ctx.IdempotencyKey` give it, in a worker thread too: anyio copies the context)."""
    token = _current_step.set(step_ctx)
    try:
        if call.in_thread:
            task = functools.partial(call.fn, *call.args, **call.kwargs)
            value = await anyio.to_thread.run_sync(task, abandon_on_cancel=True)
        else:
            value = call.fn(*call.args, **call.kwargs)
        if inspect.isawaitable(value):
            value = await value
        return value
    finally:
        _current_step.reset(token)
