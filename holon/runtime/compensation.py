"""Compensation (saga): when a run fails, undo its completed compensable steps.

Each step given `compensate=undo` adds an entry to the run's compensation list when it
completes: the step, its idempotency key and its output. When the run fails later,
the entries are undone newest first, each one checkpointed as it completes, each one
retried under the step's retry policy, each called as `undo(ctx, output)` where
`ctx.IdempotencyKey` is the original step's key. A crash in the middle resumes with the
entries not yet undone. The run ends `failed` with `compensated=True`, or, if an undo
fails for good, `failed` with `compensated=False` and both errors in the timeline.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any

from holon.definition.policies import Retry, runs_in_thread
from holon.runtime.attempts import Attempts
from holon.runtime.context import Context
from holon.runtime.execution import Execution
from holon.runtime.transitions import Transitions
from holon.stores.base import Compensation, RunStatus, evolve

__all__ = ["Compensator", "undo_reference"]


def undo_reference(fn: Callable[..., Any]) -> str:
    """`module:qualname` of a module-level function, so it can be found after a restart."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", "")
    if not module or "<" in qualname:
        raise TypeError(
            f"compensate={fn!r} must be a module-level function (not a lambda or a nested "
            "function) so that it can be found again after a restart"
        )
    return f"{module}:{qualname}"


def _resolve(reference: str) -> Callable[..., Any]:
    module_name, _, qualname = reference.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"{reference} is not a function")
    return target  # type: ignore[no-any-return]


def _call_undo(undo: Callable[..., Any], output: Any, ctx: Context[Any, Any]) -> Any:
    return undo(ctx, output)


class Compensator:
    """Undoes a failed run's compensable steps. `Transitions.fail` switches a run with
    such steps to compensating; the engine then calls `run`."""

    def __init__(self, transitions: Transitions, attempts: Attempts) -> None:
        self.transitions = transitions
        self.attempts = attempts

    async def run(self, execution: Execution) -> None:
        """Undo the run's compensable steps, newest first, then end it `failed`."""
        transitions = self.transitions
        while execution.body.compensations:
            entry = execution.body.compensations[-1]
            try:
                undo, retry = self._undo_for(execution, entry)
            except (LookupError, TypeError, ImportError, AttributeError) as exc:
                await self._give_up(execution, entry, exc)
                return
            outcome = await self.attempts.run(
                execution,
                entry.step,
                functools.partial(_call_undo, undo, entry.output),
                functools.partial(self._context, execution, entry),
                retry=retry,
                timeout=None,
                durable=False,
                in_thread=runs_in_thread(undo),
            )
            if outcome.error is not None:
                await self._give_up(execution, entry, outcome.error)
                return
            body = execution.body
            await transitions.commit(
                execution,
                RunStatus.RUNNING,
                evolve(body, {"compensations": body.compensations[:-1]}),
                events=[
                    transitions.event(
                        "compensated", entry.step, idempotency_key=entry.idempotency_key
                    )
                ],
            )
        body = evolve(execution.body, {"compensating": False, "compensated": True})
        error = body.error
        await transitions.finish(
            execution,
            RunStatus.FAILED,
            body,
            transitions.event(
                "failed",
                error.step if error else None,
                compensated=True,
                error=error.type if error else None,
                message=error.message if error else None,
                traceback=error.traceback if error else None,
            ),
        )

    def _context(
        self, execution: Execution, entry: Compensation, attempt: int
    ) -> Context[Any, Any]:
        return execution.context(entry.step, attempt, key=entry.idempotency_key)

    def _undo_for(
        self, execution: Execution, entry: Compensation
    ) -> tuple[Callable[..., Any], Retry | None]:
        workflow = execution.workflow
        if entry.undo is not None:
            return _resolve(entry.undo), workflow.default_retry
        spec = workflow.steps.get(entry.step)
        if spec is None or spec.compensate is None:
            raise LookupError(
                f"step {entry.step!r} no longer has a compensate= function in workflow "
                f"{workflow.name!r}"
            )
        return spec.compensate, spec.retry or workflow.default_retry

    async def _give_up(
        self, execution: Execution, entry: Compensation, error: BaseException
    ) -> None:
        body = evolve(execution.body, {"compensating": False})
        await self.transitions.finish(
            execution,
            RunStatus.FAILED,
            body,
            self.transitions.event(
                "compensation_failed",
                entry.step,
                error=type(error).__name__,
                message=str(error),
                not_undone=[c.step for c in reversed(body.compensations)],
            ),
        )
