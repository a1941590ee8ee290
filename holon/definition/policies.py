"""Step policies: retries with backoff, timeouts, compensation.

```python
.Flow({
    START: lambda ctx: "Deploy",
    "Deploy": step(deploy, retry=Retry(attempts=5, backoff=2.0, max_delay=60),
                   timeout=30, compensate=rollback),
    ...
})
.Defaults(retry=Retry(attempts=3))          # for every step that sets none
```

A failed attempt is a timeline event with its error. The wait before the next attempt
is durable: its due time is checkpointed, and an executor that takes the run over after
a crash waits out only what is left of it. `ctx.Attempt` tells the attempt number.
Raise `NonRetryable` (or an error not listed in `Retry(on=...)`) to fail at once.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from holon.errors import HolonError

__all__ = ["NonRetryable", "Retry", "StepPolicy", "StepTimeout", "runs_in_thread", "step"]


class NonRetryable(HolonError):
    """Raise from a step to fail it without further attempts, whatever its retry policy.

    `raise NonRetryable("card declined") from exc` keeps the cause in the traceback.
    """


class StepTimeout(HolonError, TimeoutError):
    """A step ran longer than its `timeout`; it was cancelled. Counts as a failed attempt."""


@dataclass(frozen=True)
class Retry:
    """How often and how patiently to try a failing step again.

    Args:
        attempts: total attempts, the first included (1 means no retry).
        backoff: each wait is this many times the previous one.
        initial_delay: seconds before the second attempt.
        max_delay: no wait is longer than this.
        jitter: spread each wait randomly over [delay/2, delay], so that many runs
            failing together do not retry together.
        on: the error types worth another attempt; others fail the step at once.
    """

    attempts: int = 3
    backoff: float = 2.0
    initial_delay: float = 1.0
    max_delay: float = 60.0
    jitter: bool = True
    on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"Retry(attempts={self.attempts}) must be at least 1")
        if self.backoff < 1 or self.initial_delay < 0 or self.max_delay < 0:
            raise ValueError(
                f"Retry(backoff={self.backoff}, initial_delay={self.initial_delay}, "
                f"max_delay={self.max_delay}): backoff must be >= 1 and delays >= 0"
            )
        if not isinstance(self.on, tuple) or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in self.on
        ):
            raise TypeError(f"Retry(on=...) takes a tuple of exception types, got {self.on!r}")

    def retries(self, error: BaseException, attempt: int) -> bool:
        """Whether attempt number `attempt`, which failed with `error`, gets a successor."""
        if attempt >= self.attempts or isinstance(error, NonRetryable):
            return False
        return isinstance(error, self.on)

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """Seconds to wait after failed attempt number `attempt`."""
        base = min(self.max_delay, self.initial_delay * self.backoff ** (attempt - 1))
        if self.jitter:
            return base / 2 + rng() * base / 2
        return base


@dataclass(frozen=True)
class StepPolicy:
    """A step function with its policies; made by `step()`."""

    fn: Callable[..., Any]
    retry: Retry | None = None
    timeout: float | None = None
    compensate: Callable[..., Any] | None = None
    thread: bool | None = None
    """Call the function in a worker thread (True) or on the event loop (False); None:
    as `runs_in_thread` decides."""
    external: bool = False
    """The step calls or changes something outside the run (a model, another system): a
    replay answers it from its recording instead of running it."""


def step(
    fn: Callable[..., Any],
    *,
    retry: Retry | None = None,
    timeout: float | None = None,
    compensate: Callable[..., Any] | None = None,
    thread: bool | None = None,
    external: bool = False,
) -> StepPolicy:
    """Attach policies to a step of a flow.

    Args:
        fn: the step function.
        retry: how to retry it when it fails.
        timeout: seconds it may run; past that it is cancelled and the attempt fails
            with `StepTimeout` (a function running in a thread is left to finish in the
            background; what it returns then is discarded).
        compensate: `undo(ctx, output)`, run if the run fails after this step succeeded;
            `ctx.IdempotencyKey` is the step's own key, `output` what it returned.
        thread: True to call a synchronous function in a worker thread, False to call it
            on the event loop; by default a `def` function runs in a thread and a
            lambda on the loop (see `runs_in_thread`).
        external: True for a step that calls a model or writes to another system: its
            output is recorded in the timeline, and `handle.Replay()` answers it from
            that recording instead of running it (a replay never repeats the call).
    """
    where = getattr(fn, "__name__", repr(fn))
    check_policies(retry, timeout, compensate, where=where)
    if thread is not None and not isinstance(thread, bool):
        raise TypeError(f"{where}: thread= takes True or False, got {thread!r}")
    if not isinstance(external, bool):
        raise TypeError(f"{where}: external= takes True or False, got {external!r}")
    return StepPolicy(
        fn=fn,
        retry=retry,
        timeout=timeout,
        compensate=compensate,
        thread=thread,
        external=external,
    )


def runs_in_thread(fn: Callable[..., Any]) -> bool:
    """Whether a step (or task) function is called in a worker thread by default.

    A synchronous function defined with `def` is: it may block (a network call, a
    `time.sleep`), and on the event loop it would hold up every other run of the process
    and the heartbeats that keep their leases, and no timeout could stop it. A
    coroutine function is awaited on the loop, and a lambda runs there too: a lambda
    is an expression that routes (`lambda ctx: "Next"`), and a thread would cost it
    more than it does.
    """
    if inspect.iscoroutinefunction(fn):
        return False
    if not (inspect.isfunction(fn) or inspect.ismethod(fn)):
        # An object with a `__call__` method: as that method is.
        return not inspect.iscoroutinefunction(type(fn).__call__)
    return fn.__name__ != "<lambda>"


def check_policies(retry: Any, timeout: Any, compensate: Any, *, where: str) -> None:
    """Raise `TypeError`/`ValueError` naming `where` when a policy is malformed."""
    if retry is not None and not isinstance(retry, Retry):
        raise TypeError(f"{where}: retry= takes a Retry(...), got {retry!r}")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0
    ):
        raise ValueError(f"{where}: timeout= takes a positive number of seconds, got {timeout!r}")
    if compensate is not None and not callable(compensate):
        raise TypeError(f"{where}: compensate= takes a function (ctx, output), got {compensate!r}")
