"""The request bodies the API accepts, as pydantic models: they validate each body (a
bad one is a 422 naming the field's path) and give the OpenAPI document its schemas.

No body sets an identity: who acts is the caller's token. The fields older clients
send for it (`by`, `roles`, `started_by`) are accepted and have no effect, so a body
claiming someone else acts as the token's identity all the same.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AnswerBody",
    "BulkBody",
    "DecisionBody",
    "EventBody",
    "ForkBody",
    "RerunBody",
    "ResumeBody",
    "RetryBody",
    "StartBody",
    "WorkflowStartBody",
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: Any = Field(default=None, description="Has no effect: who acts is the token.")
    roles: Any = Field(default=None, description="Has no effect: roles come from the token.")
    started_by: Any = Field(default=None, description="Has no effect: the token starts it.")


class StartBody(_Body):
    """Start a run."""

    input: Any = None
    """The run's input, validated against the workflow's Input model."""
    run_id: str | None = Field(default=None, min_length=1, max_length=200)
    """Makes the start idempotent: the same start again returns the same run."""
    version: str | None = None
    """The workflow version (default: the latest)."""


class WorkflowStartBody(_Body):
    """Start a run of a workflow (the reference REST shape)."""

    input: Any = None


class DecisionBody(_Body):
    """Approve or reject the gate a run waits at."""

    comment: str | None = None
    digest: str | None = None
    """SHA-256 of the payload the approver saw; refused (409) when the payload differs."""
    wait_id: str | None = None
    """The wait meant; refused (409) when the run no longer waits there."""


class AnswerBody(_Body):
    """Answer the question a run waits on."""

    value: Any
    comment: str | None = None
    wait_id: str | None = None


class EventBody(_Body):
    """Deliver an event to a run waiting on it."""

    name: str = Field(min_length=1)
    payload: Any = None
    event_id: str | None = Field(default=None, min_length=1)
    """The same id again is recorded once."""


class ResumeBody(_Body):
    """Continue a paused run (with `goto`, also a waiting one)."""

    goto: str | None = None
    state: dict[str, Any] | None = None
    """Fields of the state to change first, validated against the State model."""


class BulkBody(_Body):
    """Apply a verb to every run the filter matches (every field given must match)."""

    workflow: str | None = None
    status: (
        Literal["queued", "running", "waiting", "paused", "completed", "failed", "stopped"]
        | Literal["rejected", "expired"]
        | None
    ) = None
    version: str | None = None
    started_after: float | None = None
    """Runs created at or after this time (seconds since the epoch)."""
    started_before: float | None = None


class RetryBody(_Body):
    """Continue a failed, stopped or expired run from its last checkpoint."""

    goto: str | None = None
    state: dict[str, Any] | None = None


class RerunBody(_Body):
    """Run one step again in a sandbox, from the snapshot recorded before it."""

    step: str = Field(min_length=1)
    seq: int | None = Field(default=None, ge=1)
    """The `step_started` event of the run to take the snapshot before (default: the
    step's last start)."""


class ForkBody(_Body):
    """Start a new run from a checkpoint of this one."""

    at: int = Field(ge=1)
    """The `step_started` event whose checkpoint the new run starts from."""
    state: dict[str, Any] | None = None
