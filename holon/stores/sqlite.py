"""`sqlite:///path/to/file.db`: the embedded default store.

One file, safe to share between several processes on one machine: WAL journal, every
write in a `BEGIN IMMEDIATE` transaction, one transaction per checkpoint, and
`synchronous=FULL` unless the URL says otherwise (`?synchronous=NORMAL` trades the last
few commits on power loss for speed; a process crash loses nothing either way). The
plumbing (URL, schema, running statements without blocking the event loop) is in
`sqlite_base.py`; what is kept beside the runs (definitions, schedules, the list of
live executors) in `sqlite_catalogue.py`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from holon.errors import RunNotFound, StaleLease, StoreError, seq_conflict
from holon.stores import _codec
from holon.stores.base import (
    TERMINAL_STATUSES,
    Checkpoint,
    Committed,
    Control,
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
from holon.stores.retention import PURGE_INTERVAL
from holon.stores.sqlite_base import COMMIT_SET, corrupt
from holon.stores.sqlite_catalogue import SQLiteCatalogue

__all__ = ["SQLiteStore"]


class SQLiteStore(SQLiteCatalogue):
    """A store in one SQLite file.

    Args:
        url: `sqlite:///relative/path.db`, `sqlite:////absolute/path.db`, or
            `sqlite:///:memory:`; query options `synchronous` (OFF, NORMAL, FULL, EXTRA)
            `busy_timeout` (milliseconds), `timeline_cap` (as the argument) and the
            retention's `<status>_ttl` (seconds, `Retention.from_options`).
        namespace: keeps deployments that share one file apart (the `key_prefix`).
        max_value_bytes: a stored value (body, input, result) larger than this is read
            as a corrupt record; default 64 MiB.
        timeline_cap: the most timeline events kept per run, the oldest trimmed (default
            `DEFAULT_TIMELINE_CAP`, 10,000; 0 keeps all); a warning is logged when a run
            reaches 90 % of it.
        retention: how long finished runs are kept per final status (default: for
            ever); `claim` deletes those due once a minute at most, `purge_expired`
            at once.
    """

    # -- runs ---------------------------------------------------------------------

    async def create_run(
        self, record: RunRecord, events: Sequence[NewEvent]
    ) -> tuple[RunRecord, bool]:
        def insert(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO holon_runs (ns, run_id, workflow, version, status, "
                "input, body, event_seq, wake_at, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    self.namespace,
                    record.run_id,
                    record.workflow,
                    record.version,
                    record.status.value,
                    _codec.dump(record.input),
                    record.body.model_dump_json(),
                    len(events),
                    record.wake_at,
                    record.created_at,
                    record.updated_at,
                ),
            )
            if cursor.rowcount == 0:
                return False
            self._insert_events(conn, record.run_id, 1, events)
            return True

        created = await self._run(lambda c: self._write(c, lambda: insert(c)))
        stored = await self.load_run(record.run_id)
        assert stored is not None
        if created:
            self.signals.notify(record.run_id)
        return stored, created

    async def load_run(self, run_id: str) -> RunRecord | None:
        return await self._run(lambda c: self._read(c, lambda: self._select_run(c, run_id)))

    async def run_progress(self, run_id: str) -> RunProgress | None:
        row = await self._run(
            lambda c: c.execute(
                "SELECT status, seq, event_seq FROM holon_runs WHERE ns = ? AND run_id = ?",
                (self.namespace, run_id),
            ).fetchone()
        )
        if row is None:
            return None
        try:
            status = RunStatus(row[0])
        except ValueError:
            raise corrupt(run_id, f"unknown status {row[0]!r}") from None
        return RunProgress(status=status, seq=row[1], event_seq=row[2])

    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        workflow: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[RunSummary]:
        where = ["ns = ?"]
        params: list[Any] = [self.namespace]
        if status is not None:
            where.append("status = ?")
            params.append(RunStatus(status).value)
        if workflow is not None:
            where.append("workflow = ?")
            params.append(workflow)
        if cursor:
            created_text, _, last_id = cursor.partition("|")
            try:
                created = float(created_text)
            except ValueError:
                raise StoreError(f"invalid listing cursor {cursor!r}") from None
            where.append("(created_at, run_id) < (?, ?)")
            params += [created, last_id]
        sql = (
            "SELECT run_id, workflow, version, status, created_at, updated_at FROM holon_runs "
            f"WHERE {' AND '.join(where)} ORDER BY created_at DESC, run_id DESC LIMIT ?"
        )
        params.append(limit + 1)
        rows = await self._run(lambda c: c.execute(sql, params).fetchall())
        items = [
            RunSummary(
                run_id=r[0],
                workflow=r[1],
                version=r[2],
                status=RunStatus(r[3]),
                created_at=r[4],
                updated_at=r[5],
            )
            for r in rows[:limit]
        ]
        next_cursor = None
        if len(rows) > limit:
            last = items[-1]
            next_cursor = f"{last.created_at!r}|{last.run_id}"
        return Page(items=items, next_cursor=next_cursor)

    # -- leases -------------------------------------------------------------------

    def _grant(
        self, conn: sqlite3.Connection, run_id: str, status: str, owner: str, expires: float
    ) -> LeaseGrant:
        (fence,) = conn.execute(
            "UPDATE holon_runs SET fence = fence + 1, lease_owner = ?, lease_expires = ?, "
            "status = CASE WHEN status = 'queued' THEN 'running' ELSE status END "
            "WHERE ns = ? AND run_id = ? RETURNING fence",
            (owner, expires, self.namespace, run_id),
        ).fetchone()
        return LeaseGrant(run_id=run_id, token=fence, recovered=status == "running")

    def _leased(self, conn: sqlite3.Connection, workflow: str, now: float) -> int:
        """Runs of `workflow` holding a live lease while running (what a limit counts)."""
        (count,) = conn.execute(
            "SELECT COUNT(*) FROM holon_runs WHERE ns = ? AND workflow = ? "
            "AND status = 'running' AND lease_owner IS NOT NULL AND lease_expires > ?",
            (self.namespace, workflow, now),
        ).fetchone()
        return int(count)

    async def acquire_lease(
        self, run_id: str, owner: str, ttl: float, now: float, *, limit: int | None = None
    ) -> LeaseGrant | None:
        def acquire(conn: sqlite3.Connection) -> LeaseGrant | None:
            row = conn.execute(
                "SELECT status, lease_owner, lease_expires, workflow FROM holon_runs "
                "WHERE ns = ? AND run_id = ?",
                (self.namespace, run_id),
            ).fetchone()
            if row is None:
                raise RunNotFound(f"no run {run_id!r} in {self.url}", run_id=run_id)
            status, lease_owner, lease_expires, workflow = row
            if status not in ("queued", "running"):
                return None
            if lease_owner is not None and lease_expires > now:
                return None
            if limit is not None and self._leased(conn, workflow, now) >= limit:
                return None
            return self._grant(conn, run_id, status, owner, now + ttl)

        grant = await self._run(lambda c: self._write(c, lambda: acquire(c)))
        if grant is not None:
            self.signals.notify(run_id)
        return grant

    async def renew_lease(self, run_id: str, token: int, ttl: float, now: float) -> Control | None:
        def renew(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "UPDATE holon_runs SET lease_expires = ? WHERE ns = ? AND run_id = ? "
                "AND lease_owner IS NOT NULL AND fence = ? RETURNING control",
                (now + ttl, self.namespace, run_id, token),
            ).fetchone()
            if row is None:
                raise StaleLease(
                    f"run {run_id!r}: lease token {token} is no longer current", run_id=run_id
                )
            control: str | None = row[0]
            return control

        control_text = await self._run(lambda c: self._write(c, lambda: renew(c)))
        return _codec.load_control(control_text, run_id=run_id)

    async def release_lease(self, run_id: str, token: int) -> None:
        await self._run(
            lambda c: c.execute(
                "UPDATE holon_runs SET lease_owner = NULL, lease_expires = NULL "
                "WHERE ns = ? AND run_id = ? AND fence = ?",
                (self.namespace, run_id, token),
            )
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
        if not workflows or limit <= 0:
            return []
        if now >= self._next_purge and not self.retention.keeps_everything:
            self._next_purge = now + PURGE_INTERVAL
            await self.purge_expired(now)
        capped = {name: cap for name, cap in (limits or {}).items() if name in workflows}

        def claim(conn: sqlite3.Connection) -> list[LeaseGrant]:
            # A workflow already at its limit is left out of the query, so that its runs
            # do not take the places of the runs of others in this batch.
            free = {name: cap - self._leased(conn, name, now) for name, cap in capped.items()}
            open_workflows = [w for w in workflows if free.get(w, 1) > 0]
            if not open_workflows:
                return []
            which, which_params = _workflow_filter(open_workflows, versions or {})
            rows = conn.execute(
                f"SELECT run_id, status, workflow FROM holon_runs WHERE ns = ? AND ({which}) "
                "AND (lease_owner IS NULL OR lease_expires <= ?) "
                "AND (status IN ('queued', 'running') "
                "     OR (status = 'waiting' AND wake_at IS NOT NULL AND wake_at <= ?)) "
                "ORDER BY created_at LIMIT ?",
                (self.namespace, *which_params, now, now, limit),
            ).fetchall()
            grants: list[LeaseGrant] = []
            for run_id, status, workflow in rows:
                if workflow in free:
                    if free[workflow] <= 0:
                        continue
                    free[workflow] -= 1
                grants.append(self._grant(conn, run_id, status, owner, now + ttl))
            return grants

        grants = await self._run(lambda c: self._write(c, lambda: claim(c)))
        for grant in grants:
            self.signals.notify(grant.run_id)
        return grants

    # -- checkpoints ----------------------------------------------------------------

    async def commit(
        self, run_id: str, *, expected_seq: int, token: int | None, checkpoint: Checkpoint
    ) -> Committed:
        body_json = checkpoint.body.model_dump_json()
        events = checkpoint.events

        def write(conn: sqlite3.Connection) -> Committed:
            fence_clause = "" if token is None else " AND lease_owner IS NOT NULL AND fence = ?"
            status = checkpoint.status.value
            params: list[Any] = [
                body_json,
                len(events),
                checkpoint.wake_at,
                checkpoint.at,
                int(checkpoint.release_lease),
                int(checkpoint.release_lease),
                int(checkpoint.clear_control),
                self.namespace,
                run_id,
                expected_seq,
            ]
            if token is not None:
                params.append(token)
            # Most checkpoints keep the status. Leaving `status` out of SET then spares
            # the write to the by-status index: a quarter of the pages a step commits.
            row = conn.execute(
                f"{COMMIT_SET} WHERE ns = ? AND run_id = ? AND seq = ?{fence_clause} "
                "AND status = ? RETURNING seq, event_seq, control",
                [*params, status],
            ).fetchone()
            if row is None:
                row = conn.execute(
                    f"{COMMIT_SET}, status = ? WHERE ns = ? AND run_id = ? AND seq = ?"
                    f"{fence_clause} RETURNING seq, event_seq, control",
                    [*params[:7], status, *params[7:]],
                ).fetchone()
            if row is None:
                self._explain_refusal(conn, run_id, expected_seq, token)
            seq, event_seq, control = row
            if checkpoint.version is not None:
                conn.execute(
                    "UPDATE holon_runs SET moved_to = ? WHERE ns = ? AND run_id = ?",
                    (checkpoint.version, self.namespace, run_id),
                )
            if checkpoint.results:
                conn.executemany(
                    "INSERT OR REPLACE INTO holon_results (ns, run_id, name, value) "
                    "VALUES (?, ?, ?, ?)",
                    [
                        (self.namespace, run_id, name, _codec.dump(value))
                        for name, value in checkpoint.results.items()
                    ],
                )
            self._insert_events(conn, run_id, event_seq - len(events) + 1, events)
            if checkpoint.wait_keys is not None:
                self._index_waiting(conn, run_id, checkpoint.wait_keys)
            return Committed(
                seq=seq,
                event_seq=event_seq,
                control=_codec.load_control(control, run_id=run_id),
            )

        committed = await self._run(lambda c: self._write(c, lambda: write(c)))
        self.signals.notify(run_id)
        return committed

    def _explain_refusal(
        self, conn: sqlite3.Connection, run_id: str, expected_seq: int, token: int | None
    ) -> None:
        row = conn.execute(
            "SELECT seq, fence, lease_owner FROM holon_runs WHERE ns = ? AND run_id = ?",
            (self.namespace, run_id),
        ).fetchone()
        if row is None:
            raise RunNotFound(f"no run {run_id!r} in {self.url}", run_id=run_id)
        seq, fence, lease_owner = row
        if token is not None and (lease_owner is None or fence != token):
            current = fence if lease_owner is not None else "none (released)"
            raise StaleLease(
                f"run {run_id!r}: commit with lease token {token} refused; the current "
                f"token is {current}",
                run_id=run_id,
            )
        raise seq_conflict(run_id, expected_seq, seq)

    async def request(self, run_id: str, control: Control) -> RunRecord:
        def write(conn: sqlite3.Connection) -> RunRecord:
            cursor = conn.execute(
                "UPDATE holon_runs SET control = ? WHERE ns = ? AND run_id = ?",
                (control.model_dump_json(), self.namespace, run_id),
            )
            if cursor.rowcount == 0:
                raise RunNotFound(f"no run {run_id!r} in {self.url}", run_id=run_id)
            record = self._select_run(conn, run_id)
            assert record is not None
            return record

        record = await self._run(lambda c: self._write(c, lambda: write(c)))
        self.signals.notify(run_id)
        return record

    async def append_timeline(self, run_id: str, events: Sequence[NewEvent]) -> int:
        def write(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "UPDATE holon_runs SET event_seq = event_seq + ? WHERE ns = ? AND run_id = ? "
                "RETURNING event_seq",
                (len(events), self.namespace, run_id),
            ).fetchone()
            if row is None:
                raise RunNotFound(f"no run {run_id!r} in {self.url}", run_id=run_id)
            event_seq: int = row[0]
            self._insert_events(conn, run_id, event_seq - len(events) + 1, events)
            return event_seq

        event_seq = await self._run(lambda c: self._write(c, lambda: write(c)))
        self.signals.notify(run_id)
        return event_seq

    async def quarantine(self, run_id: str, reason: str, at: float) -> None:
        body = quarantined_body(reason).model_dump_json()
        data = {"error": "CorruptRecord", "message": reason}

        def write(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                "UPDATE holon_runs SET status = 'failed', body = ?, seq = seq + 1, "
                "event_seq = event_seq + 1, control = NULL, lease_owner = NULL, "
                "lease_expires = NULL, wake_at = NULL, updated_at = ? "
                "WHERE ns = ? AND run_id = ? RETURNING event_seq",
                (body, at, self.namespace, run_id),
            ).fetchone()
            if row is None:
                raise RunNotFound(f"no run {run_id!r} in {self.url}", run_id=run_id)
            self._insert_events(conn, run_id, row[0], [NewEvent(kind="failed", at=at, data=data)])
            self._index_waiting(conn, run_id, [])
            self._mend(conn, run_id)

        await self._run(lambda c: self._write(c, lambda: write(c)))
        self.signals.notify(run_id)

    def _mend(self, conn: sqlite3.Connection, run_id: str) -> None:
        """Make what a quarantined record keeps read back: text columns that are not
        UTF-8 emptied, an input or results that do not read replaced or dropped."""
        key = (self.namespace, run_id)
        workflow, version, input_data = conn.execute(
            "SELECT CAST(workflow AS BLOB), CAST(version AS BLOB), CAST(input AS BLOB) "
            "FROM holon_runs WHERE ns = ? AND run_id = ?",
            key,
        ).fetchone()
        for column, data in (("workflow", workflow), ("version", version)):
            if not _is_text(data):
                conn.execute(
                    f"UPDATE holon_runs SET {column} = '' WHERE ns = ? AND run_id = ?", key
                )
        if not _codec.readable(input_data, self.max_value_bytes):
            conn.execute("UPDATE holon_runs SET input = 'null' WHERE ns = ? AND run_id = ?", key)
        for name, value in conn.execute(
            "SELECT CAST(name AS BLOB), CAST(value AS BLOB) FROM holon_results "
            "WHERE ns = ? AND run_id = ?",
            key,
        ).fetchall():
            if not _is_text(name) or not _codec.readable(value, self.max_value_bytes):
                conn.execute(
                    "DELETE FROM holon_results WHERE ns = ? AND run_id = ? "
                    "AND CAST(name AS BLOB) = ?",
                    (*key, name),
                )

    async def find_waiting(
        self, key: str, *, limit: int = 100, cursor: str | None = None
    ) -> Page[str]:
        rows = await self._run(
            lambda c: c.execute(
                "SELECT run_id FROM holon_waiting WHERE ns = ? AND key = ? AND run_id > ? "
                "ORDER BY run_id LIMIT ?",
                (self.namespace, key, cursor or "", limit + 1),
            ).fetchall()
        )
        ids = [r[0] for r in rows[:limit]]
        return Page(items=ids, next_cursor=ids[-1] if len(rows) > limit else None)

    async def timeline(
        self, run_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[TimelineEvent]:
        def read(conn: sqlite3.Connection) -> list[TimelineEvent]:
            # Each row holds one or more events, so `limit` rows hold at least `limit`.
            rows = conn.execute(
                "SELECT first_seq, events FROM holon_timeline "
                "WHERE ns = ? AND run_id = ? AND last_seq > ? ORDER BY last_seq LIMIT ?",
                (self.namespace, run_id, after_seq, -1 if limit is None else limit),
            ).fetchall()
            if not rows and self._select_exists(conn, run_id) is False:
                raise RunNotFound(f"no run {run_id!r} in {self.url}", run_id=run_id)
            found = [
                TimelineEvent(run_id=run_id, seq=first + i, kind=kind, at=at, step=step, data=data)
                for first, text in rows
                for i, (kind, at, step, data) in enumerate(
                    _codec.load(text, run_id=run_id, what="timeline")
                )
                if first + i > after_seq
            ]
            return found if limit is None else found[:limit]

        return await self._run(lambda c: self._read(c, lambda: read(c)))

    # -- retention ----------------------------------------------------------------

    async def count_runs(self, *, workflow: str | None = None) -> dict[RunStatus, int]:
        sql = "SELECT status, COUNT(*) FROM holon_runs WHERE ns = ?"
        params: list[Any] = [self.namespace]
        if workflow is not None:
            sql += " AND workflow = ?"
            params.append(workflow)
        rows = await self._run(lambda c: c.execute(sql + " GROUP BY status", params).fetchall())
        return {RunStatus(status): count for status, count in rows}

    async def delete_runs(self, run_ids: Sequence[str]) -> list[str]:
        ids = list(dict.fromkeys(run_ids))
        finished = sorted(s.value for s in TERMINAL_STATUSES)

        def delete(conn: sqlite3.Connection) -> list[str]:
            deleted: list[str] = []
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                rows = conn.execute(
                    f"DELETE FROM holon_runs WHERE ns = ? AND run_id IN ({marks}) "
                    f"AND status IN ({', '.join('?' * len(finished))}) RETURNING run_id",
                    (self.namespace, *chunk, *finished),
                ).fetchall()
                gone = [r[0] for r in rows]
                if not gone:
                    continue
                gone_marks = ", ".join("?" * len(gone))
                for table in ("holon_results", "holon_timeline", "holon_waiting"):
                    conn.execute(
                        f"DELETE FROM {table} WHERE ns = ? AND run_id IN ({gone_marks})",
                        (self.namespace, *gone),
                    )
                deleted += gone
            return deleted

        deleted = await self._run(lambda c: self._write(c, lambda: delete(c)))
        for run_id in deleted:
            self.signals.notify(run_id)
        order = {run_id: i for i, run_id in enumerate(ids)}
        return sorted(deleted, key=order.__getitem__)

    async def purge_expired(self, now: float, limit: int = 1000) -> list[str]:
        """Delete up to `limit` finished runs whose retention (`self.retention`, per
        final status) ran out by `now`; `claim` calls it once a minute at most."""
        kept = self.retention.kept

        def due(conn: sqlite3.Connection) -> list[str]:
            found: list[str] = []
            for status, seconds in kept.items():
                found += [
                    r[0]
                    for r in conn.execute(
                        "SELECT run_id FROM holon_runs WHERE ns = ? AND status = ? "
                        "AND updated_at <= ? ORDER BY updated_at LIMIT ?",
                        (self.namespace, status.value, now - seconds, limit - len(found)),
                    )
                ]
            return found

        return await self.delete_runs(await self._run(due)) if kept else []


def _is_text(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def _workflow_filter(
    workflows: Sequence[str], versions: Mapping[str, Sequence[str]]
) -> tuple[str, list[str]]:
    """The SQL condition (and its parameters) for runs of `workflows`, those named in
    `versions` only on one of the versions listed there."""
    any_version = [w for w in workflows if w not in versions]
    conditions: list[str] = []
    params: list[str] = []
    if any_version:
        conditions.append(f"workflow IN ({', '.join('?' * len(any_version))})")
        params += any_version
    for name in dict.fromkeys(w for w in workflows if w in versions):
        listed = list(versions[name])
        if listed:
            marks = ", ".join("?" * len(listed))
            conditions.append(f"(workflow = ? AND COALESCE(moved_to, version) IN ({marks}))")
            params += [name, *listed]
    return " OR ".join(conditions) or "0", params
