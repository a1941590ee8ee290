"""Calling a step: one attempt under its timeout, and further attempts under its retry
policy, with the backoff checkpointed so that a crash does not restart the wait."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from holon.context import Context
from holon.execution import Execution
from holon.policies import Retry, StepTimeout
from holon.stores.base import RunStatus

if TYPE_CHECKING:
    from holon.engine import Engine

__all__ = ["Attempts", "Outcome"]


@dataclass
class Outcome:
    """How a step call ended: with a value, an error, or an operator's stop."""

    value: Any = None
    ctx: Context[Any, Any] | None = None
    error: BaseException | None = None
    stopped: bool = False


class Attempts:
    """Runs step functions for an engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

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
        own_scope: bool,
    ) -> Outcome:
        """Call `fn` until it succeeds, fails for good, or the run is stopped.

        Args:
            make_ctx: a fresh context for attempt number n (state changes of a failed
                attempt are dropped with it).
            durable: checkpoint the attempt number and the backoff's due time (for the
                one step at the run's cursor; concurrent calls pass False).
            own_scope: register the call's cancel scope as the run's step scope, so an
                operator's Stop cancels it (False inside a fan-out, whose group has one).
        """
        engine = self.engine
        attempt = execution.record.body.attempt if durable else 1
        retry_at = execution.record.body.retry_at if durable else None
        while True:
            if retry_at is not None:
                stopped = await self._backoff(execution, retry_at - engine.clock.now(), own_scope)
                if stopped:
                    return Outcome(stopped=True)
            ctx = make_ctx(attempt)
            outcome = await self.call_once(execution, fn, ctx, timeout, own_scope=own_scope)
            outcome.ctx = ctx
            error = outcome.error
            if error is None or outcome.stopped or retry is None:
                return outcome
            if not retry.retries(error, attempt):
                return outcome
            delay = retry.delay(attempt)
            retry_at = engine.clock.now() + delay
            event = engine.event(
                "attempt_failed",
                name,
                attempt=attempt,
                error=type(error).__name__,
                message=str(error),
                retry_in=round(delay, 3),
            )
            body = execution.record.body
            if durable:
                body = body.model_copy(update={"attempt": attempt + 1, "retry_at": retry_at})
            async with execution.lock:
                await engine.commit(execution, RunStatus.RUNNING, body, events=[event])
            attempt += 1

    async def _backoff(self, execution: Execution, seconds: float, own_scope: bool) -> bool:
        """Wait out a backoff; True if the run was stopped meanwhile."""
        if seconds <= 0:
            return False
        with execution.cancellable(own_scope) as scope:
            await self.engine.clock.sleep(seconds)
        return execution.stopped(scope)

    async def call_once(
        self,
        execution: Execution,
        fn: Callable[[Context[Any, Any]], Any],
        ctx: Context[Any, Any],
        timeout: float | None,
        *,
        own_scope: bool = True,
    ) -> Outcome:
        """One attempt. Sync functions run on the event loop; async ones are awaited."""
        with execution.cancellable(own_scope) as scope:
            try:
                # Without a timeout, no second cancel scope: it costs microseconds a step.
                with anyio.move_on_after(timeout) if timeout is not None else nullcontext():
                    value = fn(ctx)
                    if inspect.isawaitable(value):
                        value = await value
                    return Outcome(value=value)
                return Outcome(
                    error=StepTimeout(
                        f"step {ctx.StepName!r} of run {ctx.RunId!r} ran longer than its "
                        f"timeout of {timeout} s and was cancelled",
                        run_id=ctx.RunId,
                        step=ctx.StepName,
                    )
                )
            except Exception as exc:
                return Outcome(error=exc)
        # Every way out of the block returns, unless the scope was cancelled.
        return Outcome(stopped=execution.stopped(scope))
