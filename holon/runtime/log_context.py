"""Which run and step the current task executes, for logs and telemetry.

The engine marks the task that executes a run (`executing`); everything that task and
the tasks it starts log or observe can then name the run, its workflow and the step at
its cursor. `install_log_context()` gives every `logging` record `run_id`, `workflow`
and `step` attributes (None outside a run), so a format can show them:

```py
install_log_context()
logging.basicConfig(format="%(levelname)s run=%(run_id)s step=%(step)s %(message)s")
```
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from holon.runtime.execution import Execution

__all__ = ["RunContext", "current_run", "executing", "install_log_context"]

_current: contextvars.ContextVar[Execution | None] = contextvars.ContextVar(
    "holon_execution", default=None
)


class RunContext:
    """What a log record or a span says of the run being executed."""

    __slots__ = ("attempt", "run_id", "step", "workflow")

    def __init__(self, execution: Execution) -> None:
        body = execution.body
        self.run_id: str = execution.run_id
        self.workflow: str = execution.workflow.name
        self.step: str | None = body.cursor.step if body.cursor is not None else None
        self.attempt: int = body.attempt


def current_run() -> RunContext | None:
    """The run the current task executes, read now (its step moves as it runs)."""
    execution = _current.get()
    return RunContext(execution) if execution is not None else None


@contextmanager
def executing(execution: Execution) -> Iterator[None]:
    """Mark the current task (and the tasks it starts) as executing `execution`."""
    token = _current.set(execution)
    try:
        yield
    finally:
        _current.reset(token)


def install_log_context() -> None:
    """Give every log record `run_id`, `workflow` and `step` (None outside a run).
    Idempotent: installing twice wraps the record factory once."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "holon_run_context", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        run = current_run()
        record.run_id = run.run_id if run else None
        record.workflow = run.workflow if run else None
        record.step = run.step if run else None
        return record

    factory.holon_run_context = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
