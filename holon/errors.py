"""Every error holon raises, under one root.

```
HolonError
├── WorkflowDefinitionError      a workflow that cannot be built (raised by the builder)
│   └── DocumentError            a declarative document that does not compile (line, field)
├── ValidationError              data that fails its schema; nothing was changed
│   ├── InputValidationError     the input of Run()
│   ├── StateValidationError     a SetState patch or a Resume(state=...) patch
│   └── ValueTooLarge            a value over its size limit (`Limits`): not stored
├── StateReadOnly                `ctx.State.field = value` in a step (use `ctx.SetState`)
├── UnknownStepError             a step name that is not in the flow
├── StepOutputError              a value a step produced that cannot be stored as JSON
├── SecretKeyError               a secret with no key to seal or open it (`holon.sealing`)
├── RunNotFound                  no run with that id in the store
├── WorkflowNotFound             no workflow (or version) of that name in the catalogue
├── AgentNotFound                an agent a step asked for that nobody registered
├── InvalidRunState              a verb that does not apply to the run's status
│   └── NotWaiting               a decision for a run that waits for nothing (or not that)
├── RunConflict                  a run id taken by a run of another workflow or input
├── ResultTimeout                Result()/WaitUntil() gave up waiting; the run goes on
├── InboxFull                    an early event that cannot be kept: its inbox is full
├── DecisionRefused              a decision the wait does not accept (in the timeline)
│   ├── NotAnApprover            by someone the gate does not list, or who may not approve
│   ├── DigestMismatch           naming a payload digest other than the one shown
│   └── InvalidAnswer            an answer outside the options or failing the schema
├── DecisionConflict             a decision that lost a race to another one
├── NonDeterminismError          an .Execute() run whose code changed under it
├── PoisonRun                    a run whose executor died too often in one step
├── RunFailed                    Result() of a run that ended other than `completed`
├── ChildFailed                  a child run ended other than `completed`
└── StoreError                   the store refused or could not do an operation
    ├── StaleLease               a commit whose fencing token is no longer current
    ├── SeqConflict              a commit based on another checkpoint than the stored one
    └── CorruptRecord            a stored record that cannot be read back
```

Errors carry the ids a caller needs (`run_id`, `step`, `workflow`) as attributes, and
their messages name the thing at fault.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AgentNotFound",
    "ChildFailed",
    "CorruptRecord",
    "DocumentError",
    "DecisionConflict",
    "DecisionRefused",
    "DigestMismatch",
    "HolonError",
    "InboxFull",
    "InputValidationError",
    "InvalidAnswer",
    "InvalidRunState",
    "NonDeterminismError",
    "NotAnApprover",
    "NotWaiting",
    "PoisonRun",
    "ResultTimeout",
    "RunConflict",
    "RunFailed",
    "RunNotFound",
    "SeqConflict",
    "StaleLease",
    "StateReadOnly",
    "StateValidationError",
    "StepOutputError",
    "StoreError",
    "SecretKeyError",
    "UnknownStepError",
    "ValidationError",
    "ValueTooLarge",
    "WorkflowDefinitionError",
    "WorkflowNotFound",
    "seq_conflict",
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


class DocumentError(WorkflowDefinitionError):
    """A declarative workflow document does not compile.

    Attributes:
        line: the line of the document at fault (1-based), when the document was text.
        field: the path of the field at fault, e.g. `steps[2].agent`.
    """

    def __init__(
        self, message: str, *, line: int | None, field: str, workflow: str | None = None
    ) -> None:
        super().__init__(message, workflow=workflow)
        self.line = line
        self.field = field


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
    """A state patch, or a stored state read by `ctx.State`, does not match the workflow's
    State model."""


class ValueTooLarge(ValidationError):
    """A value is larger than its limit (see `holon.Limits`); nothing was stored.

    Attributes:
        field: the limit that applies (`input`, `answer`, `event_payload`,
            `state_patch`, `step_output`).
        size: the value's size, bytes of compact JSON.
        limit: the most that field allows.
    """

    def __init__(
        self,
        message: str,
        *,
        field: str,
        size: int,
        limit: int,
        run_id: str | None = None,
        step: str | None = None,
        workflow: str | None = None,
    ) -> None:
        super().__init__(message, run_id=run_id, step=step, workflow=workflow)
        self.field = field
        self.size = size
        self.limit = limit


class StateReadOnly(HolonError, AttributeError):
    """A step changed `ctx.State` in place (`ctx.State.field = value`). The change would
    be lost, so it fails instead: state changes through `ctx.SetState(field=value)`,
    which validates the change and stores it with the step's checkpoint."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} cannot be changed in place: the change would be lost. Use "
            "ctx.SetState(field=value), which validates it and stores it with the step's "
            "checkpoint"
        )


class UnknownStepError(HolonError):
    """A step name (returned by a step, or given to `goto=`) is not in the flow."""


class StepOutputError(HolonError):
    """A step produced a value that cannot be stored as JSON."""


class SecretKeyError(HolonError):
    """A secret (a `SecretStr`, `SecretBytes` or field marked `Secret()`) cannot be
    sealed, because no key is configured, or opened, because its key is not configured
    or its ciphertext was changed. Nothing is stored in its place: never the mask,
    never the plaintext."""


class RunNotFound(HolonError, LookupError):
    """No run with the given id exists in the store."""


class WorkflowNotFound(HolonError, LookupError):
    """No workflow of that name (or not that version) is in the catalogue."""


class AgentNotFound(HolonError, LookupError):
    """A step asked for an agent that is neither in the workflow's `.Agents({...})` nor
    registered with the Steward the runner was given."""


class InvalidRunState(HolonError):
    """The verb does not apply to the run in its current status."""

    def __init__(self, message: str, *, status: str, run_id: str | None = None) -> None:
        super().__init__(message, run_id=run_id)
        self.status = status


class NotWaiting(InvalidRunState):
    """A decision was sent to a run that is not waiting for it."""


class RunConflict(HolonError):
    """`Run(input, run_id=...)` names a run that exists with another workflow or another
    input: the id is taken, and the existing run is not the one asked for. (The same
    workflow and input again is an idempotent start: the existing run's handle.)

    Attributes:
        existing_workflow: the workflow of the run that holds the id.
    """

    def __init__(
        self,
        message: str,
        *,
        existing_workflow: str,
        run_id: str | None = None,
        workflow: str | None = None,
    ) -> None:
        super().__init__(message, run_id=run_id, workflow=workflow)
        self.existing_workflow = existing_workflow


class ResultTimeout(HolonError, TimeoutError):
    """`Result(timeout=...)` or `WaitUntil(timeout=...)` waited that long and the run had
    not reached the status wanted. Nothing changed: the run goes on.

    Attributes:
        status: the run's status when the wait gave up (e.g. `waiting`).
    """

    def __init__(self, message: str, *, status: str, run_id: str | None = None) -> None:
        super().__init__(message, run_id=run_id)
        self.status = status


class InboxFull(HolonError):
    """An event sent before its run waits for it could not be kept: the inbox (of the run,
    or of the event's name for a broadcast) already holds as many as it may. Nothing was
    kept; the events kept before stay until delivered or expired."""


class DecisionRefused(HolonError):
    """A decision the wait does not accept. The attempt is recorded in the run's timeline
    (`decision_refused`, with who and why) and the run keeps waiting."""

    def __init__(
        self,
        message: str,
        *,
        by: str,
        run_id: str | None = None,
        wait_id: str | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message, run_id=run_id)
        self.by = by
        self.wait_id = wait_id
        self.errors = errors or []


class NotAnApprover(DecisionRefused, PermissionError):
    """The identity deciding is not among the gate's approvers (or, with
    `forbid_self_approval`, started the run)."""


class DigestMismatch(DecisionRefused):
    """The decision names a payload digest other than the wait's: the approver saw
    something else than what is being approved."""


class InvalidAnswer(DecisionRefused, ValueError):
    """An answer to a `HumanInput` outside its options, or failing its schema."""


class DecisionConflict(HolonError):
    """Another decision closed the wait (or contradicts this one) between this
    decision's read of the run and its write: the first decision won."""

    def __init__(
        self, message: str, *, by: str, run_id: str | None = None, wait_id: str | None = None
    ) -> None:
        super().__init__(message, run_id=run_id)
        self.by = by
        self.wait_id = wait_id


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


class ChildFailed(HolonError):
    """A child run (`Child(...)`, `ctx.Child(...)`) ended other than `completed`. Raised
    into the `.Execute()` function that awaited it, and the error of a flow's parent run
    when its `Child` has no `on_failure` step.

    Attributes:
        child_run_id: the child run.
        status: how it ended (`failed`, `stopped`, `rejected`, `expired`).
        error: the child's error, as stored, when it failed.
    """

    def __init__(
        self,
        message: str,
        *,
        child_run_id: str,
        status: str,
        error: dict[str, Any] | None = None,
        run_id: str | None = None,
        step: str | None = None,
    ) -> None:
        super().__init__(message, run_id=run_id, step=step)
        self.child_run_id = child_run_id
        self.status = status
        self.error = error


class NonDeterminismError(HolonError):
    """An `.Execute()` run resumed under code that asks for a different step at a
    recorded position; the run fails rather than hand one step's result to another."""

    def __init__(
        self,
        message: str,
        *,
        position: int,
        recorded: str,
        requested: str,
        run_id: str | None = None,
        step: str | None = None,
    ) -> None:
        super().__init__(message, run_id=run_id, step=step)
        self.position = position
        self.recorded = recorded
        self.requested = requested


class PoisonRun(HolonError):
    """The executors of a run died in the same step, one after another, as many times as
    the worker allows (`poison_after`): the step is taken to kill whoever runs it, and
    the run ends `failed` rather than take down one worker after another. Once the cause
    is fixed, an operator continues the run from its last checkpoint."""

    def __init__(
        self, message: str, *, deaths: int, run_id: str | None = None, step: str | None = None
    ) -> None:
        super().__init__(message, run_id=run_id, step=step)
        self.deaths = deaths


class StoreError(HolonError):
    """The store could not do what was asked."""


class StaleLease(StoreError):
    """The commit's fencing token is not the run's current one: another owner took over."""


class SeqConflict(StoreError):
    """The commit was based on a checkpoint that is not the stored one: usually an older
    one (something else wrote the run since); or a newer one, when the store lost
    checkpoints this writer saw (`lost`).

    Attributes:
        stored_seq: the sequence number the store holds (None when not known).
        expected_seq: the one the commit was based on (None when not known).
    """

    def __init__(
        self,
        message: str,
        *,
        stored_seq: int | None = None,
        expected_seq: int | None = None,
        run_id: str | None = None,
    ) -> None:
        super().__init__(message, run_id=run_id)
        self.stored_seq = stored_seq
        self.expected_seq = expected_seq

    @property
    def lost(self) -> bool:
        """The store holds an older checkpoint than the writer saw: it lost writes (a
        Redis restarted from older data)."""
        return (
            self.stored_seq is not None
            and self.expected_seq is not None
            and self.stored_seq < self.expected_seq
        )


def seq_conflict(run_id: str, expected_seq: int, stored_seq: int) -> SeqConflict:
    """The refusal of a commit based on checkpoint `expected_seq` when the store holds
    `stored_seq`, saying which way they differ."""
    if stored_seq < expected_seq:
        why = "the store lost checkpoints this writer saw"
    else:
        why = "something else wrote the run since"
    return SeqConflict(
        f"run {run_id!r}: commit expected checkpoint {expected_seq}, the store has "
        f"{stored_seq} ({why})",
        stored_seq=stored_seq,
        expected_seq=expected_seq,
        run_id=run_id,
    )


class CorruptRecord(StoreError):
    """A stored run record cannot be decoded; the run is marked failed, others are untouched."""
