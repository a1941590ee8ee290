"""The store contract: the records holon persists and the operations every store offers.

A run record has three parts that change at different times:

* the **checkpoint** (`status`, `body`, `results`, `seq`), rewritten by `commit` at each
  step boundary, guarded by the expected `seq` and, for the run's executor, by its
  fencing token;
* the **lease** (`lease`, `fence`), taken by `acquire_lease`/`claim` and kept alive by
  `renew_lease`; every acquisition increments the fencing token;
* the **control request** (`control`), set by `request` (pause or stop) without touching
  the checkpoint, so an operator never races the executor's commit; likewise
  `append_timeline` adds to the timeline alone (a refused decision, recorded while an
  executor holds the run).

Every operation is atomic. Stores hold JSON only: nothing is pickled.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from holon.stores.signals import ChangeSignals, Emitted

__all__ = [
    "BODY_SCHEMA_VERSION",
    "TERMINAL_STATUSES",
    "ChangeSignals",
    "Checkpoint",
    "Committed",
    "Compensation",
    "Control",
    "Cursor",
    "Decision",
    "Emitted",
    "ErrorInfo",
    "Lease",
    "LeaseGrant",
    "NewEvent",
    "Origin",
    "Page",
    "RunBody",
    "RunLink",
    "RunProgress",
    "RunRecord",
    "RunStatus",
    "RunSummary",
    "Store",
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


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """A page of a listing; pass `next_cursor` back to get the next page."""

    items: list[T]
    next_cursor: str | None = None

    def __iter__(self) -> Iterator[T]:
        """The page's items (`for run in page:`)."""
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


@runtime_checkable
class Store(Protocol):
    """The operations every store implements, each atomic.

    The contract test suite (`tests/test_store_contract.py`) is the executable form of
    this description; every store passes it.
    """

    url: str
    signals: ChangeSignals
    commit_waits: bool
    """True when every `commit` waits on I/O (a network round trip), so the event loop
    gets a turn at every checkpoint; False when commits can answer without awaiting,
    and the engine then makes room for other tasks between steps itself."""

    async def open(self) -> None:
        """Connect and create what is missing (tables, scripts). Idempotent."""

    async def close(self) -> None: ...

    async def create_run(
        self, record: RunRecord, events: Sequence[NewEvent]
    ) -> tuple[RunRecord, bool]:
        """Store a new run, or return the existing one with that id and `False`."""

    async def load_run(self, run_id: str) -> RunRecord | None:
        """The whole record, results included, in one read. Raises `CorruptRecord`."""

    async def run_progress(self, run_id: str) -> RunProgress | None:
        """The run's status and sequence numbers, cheaply (none of its body, results
        or input is read): waiting on a long run must not reload it at every step."""

    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        workflow: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[RunSummary]:
        """Runs, newest first, filtered and paged."""

    async def acquire_lease(
        self, run_id: str, owner: str, ttl: float, now: float, *, limit: int | None = None
    ) -> LeaseGrant | None:
        """Lease a `queued` run, or a `running` one whose lease expired, to `owner`.

        Sets the status to `running` and issues the next fencing token. Returns None
        when the run is not runnable or another owner's lease is live, and, with
        `limit`, when `limit` runs of its workflow already hold a live lease while
        running (a global concurrency limit: the count and the grant are one atomic
        step, so executors together never exceed it).
        """

    async def renew_lease(self, run_id: str, token: int, ttl: float, now: float) -> Control | None:
        """Extend the lease; returns the pending control request. Raises `StaleLease`."""

    async def release_lease(self, run_id: str, token: int) -> None:
        """Drop the lease if `token` still holds it (a no-op otherwise)."""

    def commit(
        self, run_id: str, *, expected_seq: int, token: int | None, checkpoint: Checkpoint
    ) -> Awaitable[Committed]:
        """Write a checkpoint atomically (usually an `async def`).

        Refused with `SeqConflict` when the stored `seq` is not `expected_seq`, and with
        `StaleLease` when `token` is given and is not the current fencing token.
        Control-plane writes (decisions, resume, stop of an idle run) pass `token=None`.
        A store may check and encode the checkpoint when called and return an awaitable
        that only sends it: callers await the result at once, and keep no reference to
        the checkpoint (it is not changed after the call).
        """

    async def request(self, run_id: str, control: Control) -> RunRecord:
        """Record an operator's pause or stop request; the checkpoint is not touched."""

    async def append_timeline(self, run_id: str, events: Sequence[NewEvent]) -> int:
        """Add `events` to the run's timeline without touching its checkpoint (its
        status, body, `seq` and lease), the way `request` sets a control flag: for what
        must be recorded while an executor holds the run (a refused decision). Returns
        the run's new `event_seq`. Raises `RunNotFound`."""

    async def quarantine(self, run_id: str, reason: str, at: float) -> None:
        """Mark a run whose record cannot be decoded `failed` with `reason`, replacing its
        body without reading it and dropping its lease, and mend what the record keeps
        (an input or results that do not read back, names that are not text) so that
        the failed run can be read. Other runs are untouched."""

    async def claim(
        self,
        owner: str,
        workflows: Sequence[str],
        limit: int,
        ttl: float,
        now: float,
        *,
        versions: Mapping[str, Sequence[str]] | None = None,
        limits: Mapping[str, int] | None = None,
    ) -> list[LeaseGrant]:
        """Lease up to `limit` runs of `workflows` that need an executor: queued runs,
        running runs whose lease expired, and waiting runs whose `wake_at` has passed
        (those keep their status; the executor decides what the deadline means).

        `versions` restricts a workflow named in it to runs whose current version
        (`RunRecord.current_version`) is listed (an empty list: none of its runs); a
        workflow not named there is claimed at any version. `limits` caps, per workflow
        named in it, the runs holding a live lease while running, as `acquire_lease`'s
        `limit` does: a claim leaves a workflow's runs in the store once it is full."""

    async def timeline(
        self, run_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[TimelineEvent]:
        """Timeline events with `seq > after_seq`, oldest first."""

    async def find_waiting(
        self, key: str, *, limit: int = 100, cursor: str | None = None
    ) -> Page[str]:
        """Ids of runs indexed under `key` by a checkpoint's `wait_keys`, paged, in
        run-id order. An index entry is a hint: callers check the run record."""

    async def put_definition(self, name: str, version: str, document: dict[str, Any]) -> None:
        """Record a workflow definition in the catalogue (name + version is the key)."""

    async def definitions(self) -> list[dict[str, Any]]:
        """Every stored definition document."""

    async def put_worker(self, name: str, info: dict[str, Any], expires_at: float) -> None:
        """Say that executor `name` is alive until `expires_at`, described by `info` (JSON:
        what it serves, where it runs); said again before then to stay alive."""

    async def workers(self, now: float) -> list[dict[str, Any]]:
        """The `info` of every executor alive at `now` (with `name` and `expires_at`
        added), by name; the others are forgotten."""

    async def remove_worker(self, name: str) -> None:
        """Forget executor `name` (it stopped)."""

    async def put_schedule(self, name: str, document: dict[str, Any]) -> None:
        """Keep schedule `name` (what starts runs of a workflow on a timetable); the
        same name again replaces it."""

    async def schedules(self) -> list[dict[str, Any]]:
        """Every schedule kept, by name."""

    async def delete_schedule(self, name: str) -> bool:
        """Forget schedule `name`; False when there was none."""

    async def patch_schedule(self, name: str, changes: dict[str, Any]) -> bool:
        """Set some fields of schedule `name`'s document, atomically (an operator's pause
        and a worker's note of the tick it handled never undo each other); a field set to
        None is removed (a JSON merge patch). False when there is no such schedule."""

    async def keep_event(
        self,
        inbox: str,
        event_id: str,
        document: dict[str, Any],
        *,
        expires_at: float,
        most: int,
        now: float,
    ) -> bool:
        """Keep an event in `inbox` (an event sent before anyone waits for it) until
        `expires_at`, atomically: the same `event_id` again keeps nothing more, and an
        inbox already holding `most` live events keeps no other. True when the event
        is in the inbox now (kept, or kept before); False when the inbox is full."""

    async def kept_events(self, inbox: str, now: float) -> list[dict[str, Any]]:
        """The documents of the events kept in `inbox` and not expired at `now`, in
        the order they were kept."""

    async def drop_kept_event(self, inbox: str, event_id: str) -> None:
        """Forget a kept event (delivered); a no-op when there is none."""

    async def count_runs(self, *, workflow: str | None = None) -> dict[RunStatus, int]:
        """How many runs there are in each status (statuses with none are left out),
        of one workflow or of all."""

    async def delete_runs(self, run_ids: Sequence[str]) -> list[str]:
        """Delete finished runs (terminal status) with their results, timeline and wait
        index entries, in one atomic write; returns the ids deleted. Ids of runs that
        are missing or not finished are skipped."""
