"""The records holon persists: a run's status, its record and body, the wait it waits
at, its timeline events, and what an executor's writes carry (a `Checkpoint`) and get
back. JSON models only: nothing here is pickled. `holon.stores.base` re-exports them
beside the `Store` protocol that reads and writes them."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BODY_SCHEMA_VERSION",
    "TERMINAL_STATUSES",
    "Checkpoint",
    "Committed",
    "Compensation",
    "Control",
    "Cursor",
    "Decision",
    "ErrorInfo",
    "Lease",
    "LeaseGrant",
    "NewEvent",
    "Origin",
    "RunBody",
    "RunLink",
    "RunProgress",
    "RunRecord",
    "RunStatus",
    "RunSummary",
    "TimelineEvent",
    "WaitRecord",
    "evolve",
    "quarantined_body",
]


class RunStatus(enum.StrEnum):
    """Where a run is in its life. The last five are terminal."""

    QUEUED = "queued"
    """Ready to execute; no executor holds it yet."""
    RUNNING = "running"
    """Leased by an executor that is running its steps."""
    WAITING = "waiting"
    """Halted on a `Wait`; holds no task, only its record."""
    PAUSED = "paused"
    """Halted by an operator; `Resume()` continues it."""
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"
    REJECTED = "rejected"
    """An approval was refused and the wait had no `on_reject` step."""
    EXPIRED = "expired"
    """A wait timed out and had no `on_timeout` step."""

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {
        RunStatus.COMPLETED,
        RunStatus.FAILED,
        RunStatus.STOPPED,
        RunStatus.REJECTED,
        RunStatus.EXPIRED,
    }
)


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


_RecordT = TypeVar("_RecordT", bound=_Record)
_set_attribute = object.__setattr__


_ALL_FIELDS: dict[type[BaseModel], set[str]] = {}


def _all_fields(cls: type[BaseModel]) -> set[str]:
    fields = _ALL_FIELDS[cls] = set(cls.model_fields)
    return fields


def evolve(record: _RecordT, changes: dict[str, Any]) -> _RecordT:
    """A copy of `record` with `changes`, unvalidated, like `model_copy(update=...)`.

    The engine makes a new body at every step, so this is on the hot path: it builds
    the copy directly, without `model_copy`'s generic copying (a record has no extra or
    private attributes to carry over). `model_copy` here costs 8 % of a step (12,600 of
    152,000 instructions, a sync step on the memory store).
    """
    cls = type(record)
    copy = cls.__new__(cls)
    _set_attribute(copy, "__dict__", {**record.__dict__, **changes})
    # Every field counts as given, in one set per model shared by all its copies: no
    # set to build per copy, and one object fewer for the garbage collector to walk.
    # Assigning a field (records allow it) adds to the set in place, which cannot
    # change a set that holds every field already; and nothing reads it.
    _set_attribute(copy, "__pydantic_fields_set__", _ALL_FIELDS.get(cls) or _all_fields(cls))
    _set_attribute(copy, "__pydantic_extra__", None)
    _set_attribute(copy, "__pydantic_private__", None)
    return copy


class Cursor(_Record):
    """What the run does next."""

    step: str
    """The step to run next; while fanning out, the step that returned `Parallel`."""
    branches: list[str] = Field(default_factory=list)
    """The branches of a fan-out in progress (empty for a plain step)."""
    branch_refs: dict[str, str] = Field(default_factory=dict)
    """For callable branches: branch name -> `module:qualname` of the callable."""
    join: str | None = None
    """The step to run once every branch finished; set only while fanning out."""
    done: list[str] = Field(default_factory=list)
    """Branches whose result is checkpointed."""


class Decision(_Record):
    """One decision on a wait: who, when, what, and why."""

    decision_id: str
    verdict: Literal["approve", "reject", "answer", "event"]
    by: str
    at: float
    comment: str | None = None
    value: Any = None
    digest: str | None = None
    """The payload digest the decider named, if any."""
    roles: list[str] = Field(default_factory=list)
    """The roles the decider held (when a `role:` entry admitted them)."""


class WaitRecord(_Record):
    """What a waiting run waits for. Conditions describe themselves in `spec`."""

    wait_id: str
    """Unique within the run: `<step>#<occurrence>`, so a decision for an older wait is
    told apart from one for the current wait."""
    kind: str
    step: str
    next: str
    on_reject: str | None = None
    on_timeout: str | None = None
    spec: dict[str, Any] = Field(default_factory=dict)
    decisions: list[Decision] = Field(default_factory=list)
    opened_at: float
    deadline: float | None = None
    """When the wait times out (for a timer: when it fires)."""
    escalate_at: float | None = None
    """When `escalate_to` join the approvers, until `escalated_at` is set."""
    escalated_at: float | None = None


class ErrorInfo(_Record):
    """Why a run failed."""

    type: str
    message: str
    step: str | None = None
    traceback: str | None = None


class Control(_Record):
    """An operator's pending request to an executing run."""

    kind: Literal["pause", "stop"]
    at: float
    by: str | None = None


class Lease(_Record):
    owner: str
    token: int
    expires_at: float


class Compensation(_Record):
    """A completed step to undo if the run fails later."""

    step: str
    idempotency_key: str
    output: Any = None
    undo: str | None = None
    """`module:qualname` of the undo function when it is not the flow step's own
    `compensate=` (as for `ctx.Task(..., compensate=...)`)."""


class Origin(_Record):
    """The run an operator made this run from (`Fork`, `Replay`, `Rerun`)."""

    run_id: str
    """The run it came from."""
    kind: Literal["fork", "replay", "rerun"]
    seq: int | None = None
    """The timeline event of the original run whose checkpoint it started from (the
    `step_started` of the step it starts at); None: the original's start."""
    by: str | None = None
    """Who made it."""
    sandbox: bool = False
    """A sandbox run: its external steps answered from the original's recording, its
    idempotency keys its own, no worker executes it (`handle.Replay()`)."""


BODY_SCHEMA_VERSION = 1
"""The version of `RunBody`'s schema this holon writes and reads. A stored body of
another version is a corrupt record to this holon: its run fails alone."""


class RunLink(_Record):
    """Where a child run comes from: its parent run and the parent's step that started
    it (`Child(...)` or `ctx.Child(...)`)."""

    run_id: str
    step: str


class RunBody(_Record):
    """The part of a run that each checkpoint rewrites whole."""

    schema_version: int = BODY_SCHEMA_VERSION
    """The schema the body was written with (see `BODY_SCHEMA_VERSION`)."""
    cursor: Cursor | None = None
    state: dict[str, Any] = Field(default_factory=dict)
    counts: dict[str, int] = Field(default_factory=dict)
    """Completed occurrences per step, for idempotency keys of steps that run again."""
    attempt: int = 1
    """Attempt number of the step at the cursor (a crash mid-step adds one)."""
    deaths: int = 0
    """Executors that died in a row in the step at the cursor (taken over with no
    checkpoint in between); past the worker's limit the run fails as poison."""
    wait: WaitRecord | None = None
    decision: Any = None
    """The decision that closed the last wait; the next step reads it as `ctx.Decision`."""
    paused_from: RunStatus | None = None
    """The status a paused run returns to on `Resume()` (`waiting` when paused mid-wait)."""
    needs_version: str | None = None
    """Set on a run paused because no live worker could execute its version for longer
    than the grace period: a worker that can resumes it."""
    output: Any = None
    error: ErrorInfo | None = None
    version: str | None = None
    """The definition version the run continues on after it was adopted by a newer one
    (None: still the version it started on, `RunRecord.version`)."""
    started_by: str | None = None
    """The identity that started the run (`Run(started_by=...)`)."""
    closed_wait: WaitRecord | None = None
    """The wait closed last, with its decisions: a repeated decision is told apart from
    a late one by it."""
    events_seen: list[str] = Field(default_factory=list)
    """Ids of the latest events delivered to the run, so a redelivery is recorded once."""
    retry_at: float | None = None
    """While a failed step waits out its backoff: when its next attempt is due. Durable,
    so an executor that takes over after a crash waits out the rest of it."""
    compensations: list[Compensation] = Field(default_factory=list)
    """Completed steps that have a compensation, oldest first: undone in reverse order
    if the run fails."""
    compensating: bool = False
    """The run failed and its compensations are running."""
    compensated: bool = False
    """The run failed and every compensation completed."""
    usage: dict[str, Any] = Field(default_factory=dict)
    """What the run's model requests used: `tokens`, `input_tokens`, `output_tokens`,
    `requests`, `usd` (where the price is known), and the same per step under `steps`."""
    budget: dict[str, Any] | None = None
    """The run's budget (`tokens`, `usd`, `requests`; see `Workflow.Budget`), or None."""
    parent: RunLink | None = None
    """The run that started this one as its child, if one did."""
    children: list[str] = Field(default_factory=list)
    """The ids of the child runs this run started, oldest first."""
    origin: Origin | None = None
    """Set on a run made from another one by an operator (a fork, a sandbox replay)."""


def quarantined_body(reason: str) -> RunBody:
    """The body written over a record that cannot be decoded."""
    return RunBody(error=ErrorInfo(type="CorruptRecord", message=f"corrupt record: {reason}"))


class RunRecord(_Record):
    """Everything stored about one run."""

    run_id: str
    workflow: str
    version: str
    status: RunStatus
    input: Any
    body: RunBody
    results: dict[str, Any] = Field(default_factory=dict)
    """Latest result per step name (branch results and `Next(output=...)`)."""
    seq: int = 0
    """Checkpoint sequence number; every commit increments it."""
    event_seq: int = 0
    """Sequence number of the last timeline event."""
    control: Control | None = None
    lease: Lease | None = None
    fence: int = 0
    """The last fencing token issued for this run."""
    wake_at: float | None = None
    """When a waiting run must be looked at again (a deadline), if ever."""
    created_at: float
    updated_at: float

    def lease_live(self, now: float) -> bool:
        return self.lease is not None and self.lease.expires_at > now

    @property
    def current_version(self) -> str:
        """The version of the definition the run runs on now: the one it started on,
        or the newer one it moved to (`RunBody.version`)."""
        return self.body.version or self.version


class RunSummary(_Record):
    """One row of a listing."""

    run_id: str
    workflow: str
    version: str
    status: RunStatus
    created_at: float
    updated_at: float


class TimelineEvent(_Record):
    """One entry of a run's timeline."""

    run_id: str
    seq: int
    kind: str
    at: float
    step: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


@dataclass(slots=True)
class NewEvent:
    """A timeline event before the store numbers it. Not changed once made (not frozen
    only because a frozen dataclass costs twice as much to make, and a step makes
    three)."""

    kind: str
    at: float
    step: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Checkpoint:
    """One atomic write of a run's progress."""

    status: RunStatus
    body: RunBody
    at: float
    results: dict[str, Any] = field(default_factory=dict)
    """Step results added by this checkpoint (merged into the stored ones)."""
    events: list[NewEvent] = field(default_factory=list)
    wake_at: float | None = None
    release_lease: bool = False
    clear_control: bool = False
    wait_keys: list[str] | None = None
    """Keys to index the run under while it waits (e.g. `event:order.paid`,
    `approver:alice`), replacing any it had; `[]` clears them; None leaves them as
    they are. `find_waiting(key)` reads this index."""
    version: str | None = None
    """The definition version the run moves to with this checkpoint (a newer one took
    it over, `RunBody.version`); None: it stays on its version. Stores index runs waiting
    for an executor by their current version, which `claim` filters on."""


@dataclass(slots=True)
class Committed:
    """What a commit returns: the new sequence numbers and any pending control request."""

    seq: int
    event_seq: int
    control: Control | None


@dataclass(frozen=True)
class RunProgress:
    """Where a run is, without its body, results or input: what waiters poll."""

    status: RunStatus
    seq: int
    event_seq: int


@dataclass(frozen=True)
class LeaseGrant:
    run_id: str
    token: int
    recovered: bool
    """True when the run was `running` under an earlier lease that expired: its previous
    executor died mid-step."""
    record: RunRecord | None = None
    """The run as read right after the lease was granted, when the store read it with
    the grant (Redis does, in the same pipeline); None otherwise, or when the record
    could not be decoded: the executor then loads it (and meets the error there)."""
