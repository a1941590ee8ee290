"""What the engine keeps about a run while executing it, and small shared helpers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio

from holon.builder import FlowPlan, Workflow
from holon.errors import UnknownStepError
from holon.stores.base import Control, RunRecord

__all__ = [
    "EXECUTE_STEP",
    "Execution",
    "LeaseLost",
    "branch_name",
    "idempotency_key",
    "unknown_step",
    "wants",
]


EXECUTE_STEP = "__execute__"
"""The cursor of an `.Execute()` run: its function, replayed from the top."""


def idempotency_key(run_id: str, step: str, occurrence: int) -> str:
    """Stable for a run, step and occurrence; the same across retries and crashes."""
    return f"{run_id}:{step}:{occurrence}"


class LeaseLost(Exception):
    """Internal: the run was taken over or changed under us; stop writing."""


@dataclass
class Execution:
    """One run being executed in this process."""

    run_id: str
    token: int
    workflow: Workflow
    record: RunRecord
    control: Control | None = None
    step_scope: anyio.CancelScope | None = None
    stop_requested: bool = False
    lease_lost: bool = False
    input_value: Any = None
    branch_functions: dict[str, Callable[..., Any]] = field(default_factory=dict)
    plan: FlowPlan = field(init=False, repr=False)
    """The workflow's `FlowPlan`: what every step reads."""
    _lock: anyio.Lock | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.plan = self.workflow.plan

    @property
    def lock(self) -> anyio.Lock:
        """Serialises commits of concurrent branches and tasks of this run. Made when
        first needed: most runs never have two commits under way at once."""
        if self._lock is None:
            self._lock = anyio.Lock()
        return self._lock

    @contextmanager
    def cancellable(self, own: bool = True) -> Iterator[anyio.CancelScope]:
        """A cancel scope around step code. With `own`, it is the run's step scope: an
        operator's Stop and a lost lease cancel it (code nested in another step scope,
        like a fan-out's branches, passes False and is cancelled with its parent)."""
        with anyio.CancelScope() as scope:
            if own:
                self.step_scope = scope
                if self.stop_requested:
                    scope.cancel()
            try:
                yield scope
            finally:
                if own:
                    self.step_scope = None

    def stopped(self, scope: anyio.CancelScope) -> bool:
        """After a `cancellable` scope: True when an operator's Stop cancelled it, False
        when it was not cancelled; raises `LeaseLost` when the lease was lost."""
        if not scope.cancelled_caught:
            return False
        if self.stop_requested and not self.lease_lost:
            return True
        raise LeaseLost()

    def request_stop(self) -> None:
        """Cancel the running step now (an operator's Stop in this process)."""
        self.stop_requested = True
        if self.step_scope is not None:
            self.step_scope.cancel()


def wants(control: Control | None, kind: str) -> bool:
    return control is not None and control.kind == kind


def unknown_step(workflow: Workflow, step: str, value: str, how: str) -> UnknownStepError:
    known = sorted(n for n in workflow.steps if n != "__start__")
    return UnknownStepError(
        f"workflow {workflow.name!r}: step {step!r} {how} {value!r}, which is not a step of "
        f"the flow; known steps: {known}",
        step=step,
        workflow=workflow.name,
    )


def branch_name(workflow: Workflow, fn: Callable[..., Any]) -> str:
    for name, spec in workflow.steps.items():
        if spec.fn is fn:
            return name
    return str(getattr(fn, "__name__", None) or repr(fn))
