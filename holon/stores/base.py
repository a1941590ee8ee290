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

Every operation is atomic. Stores hold JSON only: nothing is pickled. The records
themselves are in `records.py`, re-exported here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from holon.stores.records import (
    BODY_SCHEMA_VERSION,
    TERMINAL_STATUSES,
    Checkpoint,
    Committed,
    Compensation,
    Control,
    Cursor,
    Decision,
    ErrorInfo,
    Lease,
    LeaseGrant,
    NewEvent,
    Origin,
    RunBody,
    RunLink,
    RunProgress,
    RunRecord,
    RunStatus,
    RunSummary,
    TimelineEvent,
    WaitRecord,
    evolve,
    quarantined_body,
)
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
