"""Every error holon raises, under one root.

```
HolonError
├── WorkflowDefinitionError      a workflow that cannot be built (raised by the builder)
├── ValidationError              data that fails its schema; nothing was changed
│   ├── InputValidationError     the input of Run()
│   └── StateValidationError     a SetState patch or a Resume(state=...) patch
├── UnknownStepError             a step name that is not in the flow
├── StepOutputError              a value a step produced that cannot be stored as JSON
├── RunNotFound                  no run with that id in the store
├── InvalidRunState              a verb that does not apply to the run's status
│   └── NotWaiting               a decision for a run that waits for nothing (or not that)
├── NotAnApprover                a decision by someone the gate does not list
├── RunFailed                    Result() of a run that ended other than `completed`
└── StoreError                   the store refused or could not do an operation
    ├── StaleLease               a commit whose fencing token is no longer current
    ├── SeqConflict              a commit based on an out-of-date checkpoint
    └── CorruptRecord            a stored record that cannot be read back
```

Errors carry the ids a caller needs (`run_id`, `step`, `workflow`) as attributes, and
their messages name the thing at fault.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CorruptRecord",
    "HolonError",
    "InputValidationError",
    "InvalidRunState",
    "NotAnApprover",
    "NotWaiting",
    "RunFailed",
    "RunNotFound",
    "SeqConflict",
    "StaleLease",
    "StateValidationError",
    "StepOutputError",
    "StoreError",
    "UnknownStepError",
    "ValidationError",
    "WorkflowDefinitionError",
]


class HolonError(Exception):
    """Root of every error raised by holon."""

    def __init__(
        self,
        message: str,
        *,
        run_id: str | None = None,
        step: str | None = None,
        workflow: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.run_id = run_id
        self.step = step
        self.workflow = workflow


class WorkflowDefinitionError(HolonError):
    """The workflow being built is not valid; the message names the culprit."""


class ValidationError(HolonError, ValueError):
    """Data failed its schema. `errors` holds pydantic's error list when there is one."""

    def __init__(
        self,
        message: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        run_id: str | None = None,
        step: str | None = None,
        workflow: str | None = None,
    ) -> None:
        super().__init__(message, run_id=run_id, step=step, workflow=workflow)
        self.errors = errors or []


class InputValidationError(ValidationError):
    """The input given to `Run()` does not match the workflow's Input model."""


class StateValidationError(ValidationError):
    """A state patch does not match the workflow's State model."""


class UnknownStepError(HolonError):
    """A step name (returned by a step, or given to `goto=`) is not in the flow."""


class StepOutputError(HolonError):
    """A step produced a value that cannot be stored as JSON."""


class RunNotFound(HolonError, LookupError):
    """No run with the given id exists in the store."""


class InvalidRunState(HolonError):
    """The verb does not apply to the run in its current status."""

    def __init__(self, message: str, *, status: str, run_id: str | None = None) -> None:
        super().__init__(message, run_id=run_id)
        self.status = status


class NotWaiting(InvalidRunState):
    """A decision was sent to a run that is not waiting for it."""


class NotAnApprover(HolonError, PermissionError):
    """The identity deciding is not among the gate's approvers."""

    def __init__(self, message: str, *, by: str, run_id: str | None = None) -> None:
        super().__init__(message, run_id=run_id)
        self.by = by


class RunFailed(HolonError):
    """`Result()` of a run that ended `failed`, `stopped`, `rejected` or `expired`."""

    def __init__(
        self,
        message: str,
        *,
        status: str,
        error: dict[str, Any] | None = None,
        run_id: str | None = None,
        step: str | None = None,
    ) -> None:
        super().__init__(message, run_id=run_id, step=step)
        self.status = status
        self.error = error


class StoreError(HolonError):
    """The store could not do what was asked."""


class StaleLease(StoreError):
    """The commit's fencing token is not the run's current one: another owner took over."""


class SeqConflict(StoreError):
    """The commit was based on a checkpoint that is no longer the latest."""


class CorruptRecord(StoreError):
    """A stored run record cannot be decoded; the run is marked failed, others are untouched."""
