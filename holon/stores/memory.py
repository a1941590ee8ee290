"""`memory://`: a store in this process's memory.

For tests — including your own: it keeps the same contract as the durable stores
(JSON only, fencing, sequence checks), so a workflow tested against it behaves the same
on SQLite or Redis. Nothing survives the process.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from holon.errors import RunNotFound, StaleLease, seq_conflict
from holon.stores import _codec
from holon.stores.base import (
    TERMINAL_STATUSES,
    ChangeSignals,
    Checkpoint,
    Committed,
    Control,
    Lease,
    LeaseGrant,
    NewEvent,
    Page,
    RunProgress,
    RunRecord,
    RunStatus,
    RunSummary,
    TimelineEvent,
    quarantined_body,
)
from holon.stores.retention import PURGE_INTERVAL, Retention
from holon.stores.timeline_cap import DEFAULT_TIMELINE_CAP, check_timeline_cap, warn_near_cap

__all__ = ["MemoryStore"]


_Event = tuple[int, str, float, str | None, str]
_event_seq = itemgetter(0)


@dataclass
class _Row:
    """A run as the memory store keeps it: JSON text for everything the engine wrote, so
    that readers never share objects with writers."""

    run_id: str
    workflow: str
    version: str
    status: RunStatus
    input_json: str
    body_json: str
    created_at: float
    updated_at: float
    results: dict[str, str] = field(default_factory=dict)
    seq: int = 0
    event_seq: int = 0
    control: Control | None = None
    lease: Lease | None = None
    fence: int = 0
    wake_at: float | None = None
    moved_to: str | None = None
    """The version the run moved to (`Checkpoint.version`), if any."""
    wait_keys: list[str] = field(default_factory=list)
    events: list[_Event] = field(default_factory=list)
    """Timeline events as `(seq, kind, at, step, data as JSON)`, oldest first; made into
    `TimelineEvent`s only when read, since most are written and never read."""

    def summary(self) -> RunSummary:
        return RunSummary(
            run_id=self.run_id,
            workflow=self.workflow,
            version=self.version,
            status=self.status,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )


class MemoryStore:
    """A store in memory. `MemoryStore()` or `open_store("memory://")`."""

    def __init__(
        self,
        url: str = "memory://",
        *,
        max_value_bytes: int | None = None,
        timeline_cap: int = DEFAULT_TIMELINE_CAP,
        retention: Retention | None = None,
    ) -> None:
        self.url = url
        self.timeline_cap = check_timeline_cap(timeline_cap, url)
        """The most timeline events kept per run (the oldest are trimmed); 0 keeps all."""
        self.retention = retention or Retention()
        """How long finished runs are kept, per final status (`purge_expired`)."""
        self._next_purge = float("-inf")
        self.max_value_bytes = max_value_bytes or _codec.MAX_VALUE_BYTES
        """A stored value larger than this is read as a corrupt record."""
        self.signals = ChangeSignals()
        self.commit_waits = False
        self._rows: dict[str, _Row] = {}
        self._order: list[str] = []
        self._definitions: dict[tuple[str, str], dict[str, Any]] = {}
        self._waiting: dict[str, set[str]] = {}
        self._workers: dict[str, dict[str, Any]] = {}
        self._schedules: dict[str, str] = {}
        self._inboxes: dict[str, dict[str, tuple[float, str]]] = {}

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def _row(self, run_id: str) -> _Row:
        row = self._rows.get(run_id)
        if row is None:
            raise RunNotFound(f"no run {run_id!r} in {self.url}", run_id=run_id)
        return row

    def _append(self, row: _Row, events: Sequence[NewEvent]) -> None:
        before = row.event_seq
        for event in events:
            row.event_seq += 1
            row.events.append(
                (row.event_seq, event.kind, event.at, event.step, _codec.dump(event.data))
            )
        cap = self.timeline_cap
        if cap:
            warn_near_cap(row.run_id, before, row.event_seq, cap)
            if len(row.events) > cap:
                # Events keep their sequence numbers, so reads after trimming need no offset.
                del row.events[: len(row.events) - cap]

    async def create_run(
        self, record: RunRecord, events: Sequence[NewEvent]
    ) -> tuple[RunRecord, bool]:
        if record.run_id in self._rows:
            existing = await self.load_run(record.run_id)
            assert existing is not None
            return existing, False
        row = _Row(
            run_id=record.run_id,
            workflow=record.workflow,
            version=record.version,
            status=record.status,
            input_json=_codec.dump(record.input),
            body_json=record.body.model_dump_json(),
            created_at=record.created_at,
            updated_at=record.updated_at,
            wake_at=record.wake_at,
        )
        self._rows[record.run_id] = row
        self._order.append(record.run_id)
        self._append(row, events)
        self.signals.notify(record.run_id)
        created = await self.load_run(record.run_id)
        assert created is not None
        return created, True

    async def load_run(self, run_id: str) -> RunRecord | None:
        row = self._rows.get(run_id)
        if row is None:
            return None
        limit = self.max_value_bytes
        return RunRecord(
            run_id=row.run_id,
            workflow=row.workflow,
            version=row.version,
            status=row.status,
            input=_codec.load(row.input_json, run_id=run_id, what="input", max_bytes=limit),
            body=_codec.load_body(row.body_json, run_id=run_id, max_bytes=limit),
            results={
                name: _codec.load(text, run_id=run_id, what=f"result of {name!r}", max_bytes=limit)
                for name, text in row.results.items()
            },
            seq=row.seq,
            event_seq=row.event_seq,
            control=row.control,
            lease=row.lease,
            fence=row.fence,
            wake_at=row.wake_at,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    async def run_progress(self, run_id: str) -> RunProgress | None:
        row = self._rows.get(run_id)
        if row is None:
            return None
        return RunProgress(status=row.status, seq=row.seq, event_seq=row.event_seq)

    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        workflow: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[RunSummary]:
        start = int(cursor) if cursor else 0
        newest_first = self._order[::-1]
        items: list[RunSummary] = []
        position = start
        while position < len(newest_first) and len(items) < limit:
            row = self._rows[newest_first[position]]
            position += 1
            if status is not None and row.status != status:
                continue
            if workflow is not None and row.workflow != workflow:
                continue
            items.append(row.summary())
        more = position < len(newest_first)
        return Page(items=items, next_cursor=str(position) if more else None)

    def _grant(self, row: _Row, owner: str, ttl: float, now: float) -> LeaseGrant:
        recovered = row.status == RunStatus.RUNNING
        row.fence += 1
        row.lease = Lease(owner=owner, token=row.fence, expires_at=now + ttl)
        if row.status == RunStatus.QUEUED:
            row.status = RunStatus.RUNNING
        self.signals.notify(row.run_id)
        return LeaseGrant(run_id=row.run_id, token=row.fence, recovered=recovered)

    @staticmethod
    def _claimable(row: _Row, now: float, *, timers: bool) -> bool:
        if row.lease is not None and row.lease.expires_at > now:
            return False
        if row.status in (RunStatus.QUEUED, RunStatus.RUNNING):
            return True
        return (
            timers
            and row.status == RunStatus.WAITING
            and (row.wake_at is not None and row.wake_at <= now)
        )

    def _leased(self, workflow: str, now: float) -> int:
        """Runs of `workflow` holding a live lease while running (what a limit counts)."""
        return sum(
            1
            for row in self._rows.values()
            if row.workflow == workflow
            and row.status == RunStatus.RUNNING
            and row.lease is not None
            and row.lease.expires_at > now
        )

    async def acquire_lease(
        self, run_id: str, owner: str, ttl: float, now: float, *, limit: int | None = None
    ) -> LeaseGrant | None:
        row = self._row(run_id)
        if not self._claimable(row, now, timers=False):
            return None
        if limit is not None and self._leased(row.workflow, now) >= limit:
            return None
        return self._grant(row, owner, ttl, now)

    async def renew_lease(self, run_id: str, token: int, ttl: float, now: float) -> Control | None:
        row = self._row(run_id)
        if row.lease is None or row.lease.token != token:
            raise StaleLease(
                f"run {run_id!r}: lease token {token} is no longer current", run_id=run_id
            )
        row.lease = Lease(owner=row.lease.owner, token=token, expires_at=now + ttl)
        return row.control

    async def release_lease(self, run_id: str, token: int) -> None:
        row = self._rows.get(run_id)
        if row is not None and row.lease is not None and row.lease.token == token:
            row.lease = None
            self.signals.notify(run_id)

    async def commit(
        self, run_id: str, *, expected_seq: int, token: int | None, checkpoint: Checkpoint
    ) -> Committed:
        row = self._row(run_id)
        if token is not None and (row.lease is None or row.lease.token != token):
            raise StaleLease(
                f"run {run_id!r}: commit with lease token {token} refused; the current "
                f"token is {row.lease.token if row.lease else 'none (released)'}",
                run_id=run_id,
            )
        if row.seq != expected_seq:
            raise seq_conflict(run_id, expected_seq, row.seq)
        row.status = checkpoint.status
        row.body_json = checkpoint.body.model_dump_json()
        for name, value in checkpoint.results.items():
            row.results[name] = _codec.dump(value)
        row.seq += 1
        row.wake_at = checkpoint.wake_at
        if checkpoint.version is not None:
            row.moved_to = checkpoint.version
        row.updated_at = checkpoint.at
        if checkpoint.release_lease:
            row.lease = None
        if checkpoint.clear_control:
            row.control = None
        if checkpoint.wait_keys is not None:
            self._index_waiting(row, checkpoint.wait_keys)
        self._append(row, checkpoint.events)
        self.signals.notify(run_id)
        return Committed(seq=row.seq, event_seq=row.event_seq, control=row.control)

    async def request(self, run_id: str, control: Control) -> RunRecord:
        row = self._row(run_id)
        row.control = control
        self.signals.notify(run_id)
        record = await self.load_run(run_id)
        assert record is not None
        return record

    async def append_timeline(self, run_id: str, events: Sequence[NewEvent]) -> int:
        row = self._row(run_id)
        self._append(row, events)
        self.signals.notify(run_id)
        return row.event_seq

    def _index_waiting(self, row: _Row, keys: list[str]) -> None:
        for key in row.wait_keys:
            self._waiting.get(key, set()).discard(row.run_id)
        for key in keys:
            self._waiting.setdefault(key, set()).add(row.run_id)
        row.wait_keys = list(keys)

    async def find_waiting(
        self, key: str, *, limit: int = 100, cursor: str | None = None
    ) -> Page[str]:
        ids = sorted(i for i in self._waiting.get(key, ()) if cursor is None or i > cursor)
        page = ids[:limit]
        return Page(items=page, next_cursor=page[-1] if len(ids) > limit else None)

    async def quarantine(self, run_id: str, reason: str, at: float) -> None:
        row = self._row(run_id)
        # What the record keeps must read back, so that the failed run can be read.
        if not _codec.readable(row.input_json, self.max_value_bytes):
            row.input_json = "null"
        row.results = {
            name: text
            for name, text in row.results.items()
            if _codec.readable(text, self.max_value_bytes)
        }
        row.status = RunStatus.FAILED
        row.body_json = quarantined_body(reason).model_dump_json()
        row.seq += 1
        row.lease = None
        row.control = None
        row.updated_at = at
        self._index_waiting(row, [])
        self._append(
            row,
            [NewEvent(kind="failed", at=at, data={"error": "CorruptRecord", "message": reason})],
        )
        self.signals.notify(run_id)

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
        if now >= self._next_purge and not self.retention.keeps_everything:
            self._next_purge = now + PURGE_INTERVAL
            await self.purge_expired(now)
        wanted = set(workflows)
        only = {name: set(listed) for name, listed in (versions or {}).items()}
        free = {
            name: cap - self._leased(name, now)
            for name, cap in (limits or {}).items()
            if name in wanted
        }
        grants: list[LeaseGrant] = []
        for run_id in self._order:
            if len(grants) >= limit:
                break
            row = self._rows[run_id]
            if row.workflow not in wanted:
                continue
            allowed = only.get(row.workflow)
            if allowed is not None and (row.moved_to or row.version) not in allowed:
                continue
            if not self._claimable(row, now, timers=True):
                continue
            if row.workflow in free:
                if free[row.workflow] <= 0:
                    continue
                free[row.workflow] -= 1
            grants.append(self._grant(row, owner, ttl, now))
        return grants

    async def timeline(
        self, run_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[TimelineEvent]:
        row = self._row(run_id)
        start = bisect.bisect_right(row.events, after_seq, key=_event_seq)
        stop = None if limit is None else start + max(limit, 0)
        return [
            TimelineEvent(
                run_id=run_id,
                seq=seq,
                kind=kind,
                at=at,
                step=step,
                data=_codec.load(data, run_id=run_id, what="event"),
            )
            for seq, kind, at, step, data in row.events[start:stop]
        ]

    async def put_definition(self, name: str, version: str, document: dict[str, Any]) -> None:
        self._definitions[(name, version)] = _codec.load(
            _codec.dump(document), run_id="-", what="definition"
        )

    async def definitions(self) -> list[dict[str, Any]]:
        return list(self._definitions.values())

    async def put_worker(self, name: str, info: dict[str, Any], expires_at: float) -> None:
        entry = _codec.load(_codec.dump(info), run_id="-", what="worker")
        self._workers[name] = {**entry, "name": name, "expires_at": expires_at}

    async def workers(self, now: float) -> list[dict[str, Any]]:
        for name in [n for n, w in self._workers.items() if w["expires_at"] <= now]:
            del self._workers[name]
        return [dict(self._workers[name]) for name in sorted(self._workers)]

    async def remove_worker(self, name: str) -> None:
        self._workers.pop(name, None)

    def _live_inbox(self, inbox: str, now: float) -> dict[str, tuple[float, str]]:
        kept = self._inboxes.setdefault(inbox, {})
        for event_id in [i for i, (expires, _) in kept.items() if expires <= now]:
            del kept[event_id]
        return kept

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
        kept = self._live_inbox(inbox, now)
        if event_id in kept:
            return True
        if len(kept) >= most:
            return False
        kept[event_id] = (expires_at, _codec.dump(document))
        return True

    async def kept_events(self, inbox: str, now: float) -> list[dict[str, Any]]:
        return [
            _codec.load(text, run_id="-", what=f"kept event {event_id}")
            for event_id, (_, text) in self._live_inbox(inbox, now).items()
        ]

    async def drop_kept_event(self, inbox: str, event_id: str) -> None:
        self._inboxes.get(inbox, {}).pop(event_id, None)

    async def put_schedule(self, name: str, document: dict[str, Any]) -> None:
        self._schedules[name] = _codec.dump(document)

    async def schedules(self) -> list[dict[str, Any]]:
        return [
            _codec.load(self._schedules[name], run_id="-", what=f"schedule {name}")
            for name in sorted(self._schedules)
        ]

    async def delete_schedule(self, name: str) -> bool:
        return self._schedules.pop(name, None) is not None

    async def patch_schedule(self, name: str, changes: dict[str, Any]) -> bool:
        stored = self._schedules.get(name)
        if stored is None:
            return False
        document = _codec.load(stored, run_id="-", what=f"schedule {name}")
        merged = {**document, **changes}
        self._schedules[name] = _codec.dump({k: v for k, v in merged.items() if v is not None})
        return True

    async def count_runs(self, *, workflow: str | None = None) -> dict[RunStatus, int]:
        counts: dict[RunStatus, int] = {}
        for row in self._rows.values():
            if workflow is None or row.workflow == workflow:
                counts[row.status] = counts.get(row.status, 0) + 1
        return counts

    async def delete_runs(self, run_ids: Sequence[str]) -> list[str]:
        deleted: list[str] = []
        for run_id in dict.fromkeys(run_ids):
            row = self._rows.get(run_id)
            if row is None or row.status not in TERMINAL_STATUSES:
                continue
            self._index_waiting(row, [])
            del self._rows[run_id]
            deleted.append(run_id)
        if deleted:
            gone = set(deleted)
            self._order = [i for i in self._order if i not in gone]
            for run_id in deleted:
                self.signals.notify(run_id)
        return deleted

    async def purge_expired(self, now: float, limit: int = 1000) -> list[str]:
        """Delete up to `limit` finished runs whose retention (`self.retention`, per
        final status) ran out by `now`; `claim` calls it once a minute at most."""
        kept = self.retention.kept
        due = [
            row.run_id
            for row in self._rows.values()
            if row.status in kept and row.updated_at <= now - kept[row.status]
        ]
        return await self.delete_runs(due[:limit])
