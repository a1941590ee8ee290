"""Calling a step: one attempt under its timeout, and further attempts under its retry
policy, with the backoff checkpointed so that a crash does not restart the wait.

Nothing here handles an operator's Stop: the engine runs an execution inside one
cancel scope, and a Stop cancels whatever is under way, a backoff included. Synchronous
functions run in worker threads (`call_step`)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio

from holon.definition.policies import Retry, StepTimeout
from holon.runtime.agents import awaiting_step
from holon.runtime.context import Context
from holon.runtime.execution import Execution
from holon.runtime.transitions import Transitions
from holon.stores.base import RunStatus, evolve

__all__ = ["Attempts", "Outcome", "call_step"]


async def call_step(fn: Callable[..., Any], ctx: Context[Any, Any], in_thread: bool) -> Any:
    """Call a step function with `ctx` and return what it gives, awaited if it is
    awaitable.

    With `in_thread`, the function runs in a worker thread, so that a blocking function
    holds up neither the other runs of the process nor the heartbeats that keep their
    leases. When the call is cancelled (a timeout, an operator's Stop, a lost lease),
    the thread is let go: it finishes in the background, and what it returns is dropped,
    never checkpointed.
    """
    if in_thread:
        value = await anyio.to_thread.run_sync(fn, ctx, abandon_on_cancel=True)
    else:
        value = fn(ctx)
    if inspect.isawaitable(value):
        value = await awaiting_step(ctx, value)
    return value


@dataclass
class Outcome:
    """How a step call ended: with a value or an error. (An operator's Stop or a lost
    lease cancels the call: that ends the execution, not just the call.)"""

    value: Any = None
    ctx: Context[Any, Any] | None = None
    error: BaseException | None = None


class Attempts:
    """Runs step functions under their policies."""

    def __init__(self, transitions: Transitions) -> None:
        self.transitions = transitions

    async def run(
        self,
        execution: Execution,
        name: str,
        fn: Callable[[Context[Any, Any]], Any],
        make_ctx: Callable[[int], Context[Any, Any]],
        *,
        retry: Retry | None,
        timeout: float | None,
        durable: bool,
        in_thread: bool,
    ) -> Outcome:
        """Call `fn` until it succeeds or fails for good.

        Args:
            make_ctx: a fresh context for attempt number n (state changes of a failed
                attempt are dropped with it).
            durable: checkpoint the attempt number and the backoff's due time (for the
                one step at the run's cursor; concurrent calls pass False).
            in_thread: call `fn` in a worker thread (see `call_step`).
        """
        transitions = self.transitions
        clock = transitions.clock
        attempt = execution.body.attempt if durable else 1
        retry_at = execution.body.retry_at if durable else None
        while True:
            if retry_at is not None and retry_at > clock.now():
                await clock.sleep(retry_at - clock.now())
            ctx = make_ctx(attempt)
            outcome = await self.call_once(fn, ctx, timeout, in_thread)
            outcome.ctx = ctx
            error = outcome.error
            if error is None or retry is None or not retry.retries(error, attempt):
                return outcome
            delay = retry.delay(attempt)
            retry_at = clock.now() + delay
            event = transitions.event(
                "attempt_failed",
                name,
                attempt=attempt,
                error=type(error).__name__,
                message=str(error),
                retry_in=round(delay, 3),
            )
            body = execution.body
            if durable:
                body = evolve(body, {"attempt": attempt + 1, "retry_at": retry_at})
            async with execution.lock:
                await transitions.commit(execution, RunStatus.RUNNING, body, events=[event])
            attempt += 1

    @staticmethod
    async def call_once(
        fn: Callable[[Context[Any, Any]], Any],
        ctx: Context[Any, Any],
        timeout: float | None,
        in_thread: bool,
    ) -> Outcome:
        """One attempt, cancelled when it outlasts `timeout` (a thread is let go then,
        see `call_step`)."""
        try:
            if timeout is None:
                return Outcome(value=await call_step(fn, ctx, in_thread))
            with anyio.move_on_after(timeout):
                return Outcome(value=await call_step(fn, ctx, in_thread))
        except Exception as exc:
            return Outcome(error=exc)
        return Outcome(
            error=StepTimeout(
                f"step {ctx.StepName!r} of run {ctx.RunId!r} ran longer than its "
                f"timeout of {timeout} s and was cancelled",
                run_id=ctx.RunId,
                step=ctx.StepName,
            )
        )
