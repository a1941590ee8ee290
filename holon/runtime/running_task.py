"""The `.Execute()` task running now: its step context, known to the code it calls
(`current_step()`, `ctx.IdempotencyKey`), in a worker thread too."""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable
from typing import Any

import anyio

from holon.errors import HolonError
from holon.runtime.context import Context

__all__ = ["current_step", "invoke", "run_agent", "running"]

_current_step: contextvars.ContextVar[Context[Any, Any] | None] = contextvars.ContextVar(
    "holon_current_step", default=None
)


def current_step() -> Context[Any, Any] | None:
    """The context of the `.Execute()` task running now, or None."""
    return _current_step.get()


def running(what: str) -> Context[Any, Any]:
    """The context of the task running now; `ctx.<what>` read outside one is refused."""
    ctx = _current_step.get()
    if ctx is None:
        raise HolonError(
            f"ctx.{what} belongs to the task running now; read it inside a "
            "function run by ctx.Task(...) or ctx.Step(...)"
        )
    return ctx


async def invoke(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    in_thread: bool,
    step_ctx: Context[Any, Any],
) -> Any:
    """Call a task's function as the step `step_ctx` describes (`current_step()` and
    `ctx.IdempotencyKey` give it, in a worker thread too: anyio copies the context)."""
    token = _current_step.set(step_ctx)
    try:
        if in_thread:
            task = functools.partial(fn, *args, **kwargs)
            value = await anyio.to_thread.run_sync(task, abandon_on_cancel=True)
        else:
            value = fn(*args, **kwargs)
        if inspect.isawaitable(value):
            value = await value
        return value
    finally:
        _current_step.reset(token)


async def run_agent(name: str, input: Any) -> Any:
    """The body of `ctx.Agent(name, input)`: a handle opened, run and closed in the
    task's step."""
    ctx = running("Agent")
    async with await ctx.Agents.open(name) as agent:
        return await agent.Run(input)
