"""The SQLite store's plumbing: the URL, the schema, and running statements.

Statements run on the event loop's thread while the database answers at once, which is
nearly always and avoids a thread hop per step; when another process holds the write
lock, the statement is retried on a worker thread that waits up to `busy_timeout`
milliseconds (default 5000), so the event loop never blocks on a lock.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import anyio
import anyio.to_thread

from holon.errors import CorruptRecord, StoreError
from holon.stores import _codec
from holon.stores.base import (
    ChangeSignals,
    NewEvent,
    RunRecord,
    RunStatus,
)
from holon.stores.retention import RETENTION_OPTIONS, Retention
from holon.stores.timeline_cap import DEFAULT_TIMELINE_CAP, check_timeline_cap, warn_near_cap

__all__ = ["COMMIT_SET", "RUN_COLUMNS", "SQLiteBase", "corrupt"]

T = TypeVar("T")

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS holon_runs (
    ns TEXT NOT NULL,
    run_id TEXT NOT NULL,
    workflow TEXT NOT NULL,
    version TEXT NOT NULL,
    status TEXT NOT NULL,
    input TEXT NOT NULL,
    body TEXT NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0,
    event_seq INTEGER NOT NULL DEFAULT 0,
    control TEXT,
    lease_owner TEXT,
    lease_expires REAL,
    fence INTEGER NOT NULL DEFAULT 0,
    wake_at REAL,
    moved_to TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (ns, run_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS holon_runs_by_status ON holon_runs (ns, status, created_at);
CREATE INDEX IF NOT EXISTS holon_runs_by_workflow ON holon_runs (ns, workflow, created_at);
CREATE INDEX IF NOT EXISTS holon_runs_by_created ON holon_runs (ns, created_at);
CREATE INDEX IF NOT EXISTS holon_runs_leased ON holon_runs (ns, workflow, lease_expires)
    WHERE status = 'running' AND lease_owner IS NOT NULL;
CREATE TABLE IF NOT EXISTS holon_results (
    ns TEXT NOT NULL,
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (ns, run_id, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS holon_timeline (
    ns TEXT NOT NULL,
    run_id TEXT NOT NULL,
    last_seq INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    events TEXT NOT NULL,
    PRIMARY KEY (ns, run_id, last_seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS holon_waiting (
    ns TEXT NOT NULL,
    key TEXT NOT NULL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (ns, key, run_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS holon_waiting_by_run ON holon_waiting (ns, run_id);
CREATE TABLE IF NOT EXISTS holon_workers (
    ns TEXT NOT NULL,
    name TEXT NOT NULL,
    info TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (ns, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS holon_inbox (
    ns TEXT NOT NULL,
    inbox TEXT NOT NULL,
    event_id TEXT NOT NULL,
    document TEXT NOT NULL,
    expires_at REAL NOT NULL,
    UNIQUE (ns, inbox, event_id)
);
CREATE TABLE IF NOT EXISTS holon_schedules (
    ns TEXT NOT NULL,
    name TEXT NOT NULL,
    document TEXT NOT NULL,
    PRIMARY KEY (ns, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS holon_definitions (
    ns TEXT NOT NULL,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    document TEXT NOT NULL,
    PRIMARY KEY (ns, name, version)
) WITHOUT ROWID;
"""

RUN_COLUMNS = (
    "run_id, workflow, version, status, input, body, seq, event_seq, control, "
    "lease_owner, lease_expires, fence, wake_at, created_at, updated_at"
)


COMMIT_SET = (
    "UPDATE holon_runs SET body = ?, seq = seq + 1, event_seq = event_seq + ?, wake_at = ?, "
    "updated_at = ?, lease_owner = CASE WHEN ? THEN NULL ELSE lease_owner END, "
    "lease_expires = CASE WHEN ? THEN NULL ELSE lease_expires END, "
    "control = CASE WHEN ? THEN NULL ELSE control END"
)


def _create_schema(conn: sqlite3.Connection) -> None:
    """Make the tables, and add to an older file's the columns it lacks."""
    conn.executescript(_SCHEMA)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(holon_runs)")}
    if "moved_to" not in columns:  # files made before runs could move to a newer version
        conn.execute("ALTER TABLE holon_runs ADD COLUMN moved_to TEXT")


class SQLiteBase:
    """Connection, schema and statement running for `SQLiteStore`."""

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "",
        max_value_bytes: int | None = None,
        timeline_cap: int | None = None,
        retention: Retention | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "sqlite":
            raise StoreError(f"not a sqlite URL: {url!r}")
        if parts.netloc:
            raise StoreError(
                f"{url!r}: a SQLite URL has three slashes before a relative path "
                f"(sqlite:///data/x.db) and four before an absolute one "
                f"(sqlite:////var/lib/x.db); {parts.netloc!r} reads as a host name"
            )
        # sqlite:///data/x.db is `data/x.db` relative to the working directory;
        # sqlite:////abs/x.db is `/abs/x.db`; sqlite:///~/x.db is in the home folder.
        raw_path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if raw_path.startswith("~"):
            raw_path = os.path.expanduser(raw_path)
        if not raw_path:
            raise StoreError(f"{url!r} names no database file; use sqlite:///path/to/file.db")
        options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(options) - {"synchronous", "busy_timeout", "timeline_cap"} - RETENTION_OPTIONS
        if unknown:
            raise StoreError(f"{url!r}: unknown option(s) {sorted(unknown)}")
        synchronous = options.get("synchronous", "FULL").upper()
        if synchronous not in _SYNCHRONOUS:
            raise StoreError(
                f"{url!r}: synchronous={synchronous!r} is not one of {list(_SYNCHRONOUS)}"
            )
        try:
            self._busy_timeout_ms = int(options.get("busy_timeout", "5000"))
        except ValueError:
            raise StoreError(f"{url!r}: busy_timeout must be milliseconds") from None
        self.timeline_cap = check_timeline_cap(
            timeline_cap
            if timeline_cap is not None
            else options.get("timeline_cap", DEFAULT_TIMELINE_CAP),
            url,
        )
        """The most timeline events kept per run (the oldest are trimmed); 0 keeps all."""
        try:
            self.retention = retention or Retention.from_options(options, url)
        except ValueError as exc:
            raise StoreError(str(exc)) from None
        """How long finished runs are kept, per final status (`purge_expired`)."""
        self._next_purge = float("-inf")
        self.url = url
        self.path = raw_path
        self.synchronous = synchronous
        self.namespace = namespace
        self.max_value_bytes = max_value_bytes or _codec.MAX_VALUE_BYTES
        """A stored value larger than this is read as a corrupt record."""
        self.signals = ChangeSignals()
        # Checkpoints run inline when the file is not locked: no await.
        self.commit_waits = False
        self._conn: sqlite3.Connection | None = None
        self._lock = anyio.Lock()

    # -- plumbing -----------------------------------------------------------------

    async def open(self) -> None:
        if self._conn is not None:
            return
        if self.path != ":memory:":
            folder = Path(self.path).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the folder {str(folder.absolute())!r} of the SQLite store "
                    f"{self.url!r} ({exc.strerror or exc}); run from a folder you may write "
                    "in, or choose the store with HOLON_STORE or "
                    ".Persistence(store='sqlite:////writable/path/holon.db')"
                ) from None
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=0
            )
            conn.execute("PRAGMA busy_timeout=0")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
        except sqlite3.Error as exc:
            raise StoreError(
                f"cannot open SQLite store {str(Path(self.path).absolute())!r}: {exc} (is the "
                "folder writable? HOLON_STORE or .Persistence(store=...) choose another)"
            ) from None
        self._conn = conn
        await self._run(_create_schema)

    async def close(self) -> None:
        if self._conn is not None:
            async with self._lock:
                self._conn.close()
                self._conn = None

    async def _run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Run `operation` inline; if the file is locked, wait for it on a thread."""
        conn = self._conn
        if conn is None:
            raise StoreError(f"SQLite store {self.path!r} is not open (call open() first)")
        if not self._lock.locked():
            # No operation is waiting on a thread with the connection, and an inline one
            # runs to its end without yielding, so the lock is not needed: the fast path.
            try:
                return operation(conn)
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise StoreError(f"SQLite store {self.path!r}: {exc}") from None
        async with self._lock:
            try:
                return operation(conn)
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise StoreError(f"SQLite store {self.path!r}: {exc}") from None
            return await anyio.to_thread.run_sync(self._run_waiting, conn, operation)

    def _run_waiting(
        self, conn: sqlite3.Connection, operation: Callable[[sqlite3.Connection], T]
    ) -> T:
        conn.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
        try:
            return operation(conn)
        except sqlite3.OperationalError as exc:
            raise StoreError(f"SQLite store {self.path!r}: {exc}") from None
        finally:
            conn.execute("PRAGMA busy_timeout=0")

    @staticmethod
    def _write(conn: sqlite3.Connection, body: Callable[[], T]) -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = body()
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    @staticmethod
    def _read(conn: sqlite3.Connection, body: Callable[[], T]) -> T:
        conn.execute("BEGIN")
        try:
            return body()
        finally:
            conn.execute("COMMIT")

    def _insert_events(
        self, conn: sqlite3.Connection, run_id: str, first_seq: int, events: Sequence[NewEvent]
    ) -> None:
        # One row per write, holding all its events: a checkpoint adds one row to the
        # timeline's b-tree, not one per event.
        if events:
            conn.execute(
                "INSERT INTO holon_timeline (ns, run_id, last_seq, first_seq, events) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    self.namespace,
                    run_id,
                    first_seq + len(events) - 1,
                    first_seq,
                    _codec.dump([[e.kind, e.at, e.step, e.data] for e in events]),
                ),
            )
            last_seq = first_seq + len(events) - 1
            cap = self.timeline_cap
            if cap:
                warn_near_cap(run_id, first_seq - 1, last_seq, cap)
                if last_seq > cap:
                    self._trim_timeline(conn, run_id, last_seq - cap, last_seq)

    def _trim_timeline(
        self, conn: sqlite3.Connection, run_id: str, oldest_gone: int, newest: int
    ) -> None:
        """Delete the rows holding any event numbered `oldest_gone` or below (`newest`:
        the run's last event).

        A row holds one write's events, and goes whole: the run keeps at most the cap
        (a few events fewer while the oldest row left straddles the mark). The rows are
        found from the run's oldest, which the previous trim left a row or two from the
        mark, so a trim reads a few rows, not the whole timeline.
        """
        # No row wholly after the mark: one write brought more events than the cap; it
        # is kept whole, as the newest row, and every row before it goes.
        conn.execute(
            "DELETE FROM holon_timeline WHERE ns = ? AND run_id = ? AND last_seq < COALESCE(("
            "SELECT last_seq FROM holon_timeline WHERE ns = ? AND run_id = ? "
            "AND first_seq > ? ORDER BY last_seq LIMIT 1), ?)",
            (self.namespace, run_id, self.namespace, run_id, oldest_gone, newest),
        )

    def _decode(self, row: tuple[Any, ...], results: list[tuple[str, str]]) -> RunRecord:
        (
            run_id,
            workflow,
            version,
            status,
            input_text,
            body_text,
            seq,
            event_seq,
            control,
            lease_owner,
            lease_expires,
            fence,
            wake_at,
            created_at,
            updated_at,
        ) = row
        try:
            run_status = RunStatus(status)
        except ValueError:
            raise corrupt(run_id, f"unknown status {status!r}") from None
        limit = self.max_value_bytes
        return RunRecord(
            run_id=run_id,
            workflow=workflow,
            version=version,
            status=run_status,
            input=_codec.load(input_text, run_id=run_id, what="input", max_bytes=limit),
            body=_codec.load_body(body_text, run_id=run_id, max_bytes=limit),
            results={
                name: _codec.load(text, run_id=run_id, what=f"result of {name!r}", max_bytes=limit)
                for name, text in results
            },
            seq=seq,
            event_seq=event_seq,
            control=_codec.load_control(control, run_id=run_id),
            lease=_codec.load_lease(lease_owner, fence, lease_expires),
            fence=fence,
            wake_at=wake_at,
            created_at=created_at,
            updated_at=updated_at,
        )

    def _select_run(self, conn: sqlite3.Connection, run_id: str) -> RunRecord | None:
        try:
            row = conn.execute(
                f"SELECT {RUN_COLUMNS} FROM holon_runs WHERE ns = ? AND run_id = ?",
                (self.namespace, run_id),
            ).fetchone()
            if row is None:
                return None
            results = conn.execute(
                "SELECT name, value FROM holon_results WHERE ns = ? AND run_id = ?",
                (self.namespace, run_id),
            ).fetchall()
        except sqlite3.OperationalError as exc:
            if not _is_undecodable(exc):
                raise
            # Stored bytes that are not UTF-8 text: this run's record alone is corrupt.
            raise corrupt(run_id, f"a stored value is not UTF-8 text ({exc})") from None
        return self._decode(row, results)

    def _index_waiting(self, conn: sqlite3.Connection, run_id: str, keys: list[str]) -> None:
        conn.execute(
            "DELETE FROM holon_waiting WHERE ns = ? AND run_id = ?", (self.namespace, run_id)
        )
        if keys:
            conn.executemany(
                "INSERT OR IGNORE INTO holon_waiting (ns, key, run_id) VALUES (?, ?, ?)",
                [(self.namespace, key, run_id) for key in keys],
            )

    def _select_exists(self, conn: sqlite3.Connection, run_id: str) -> bool:
        row = conn.execute(
            "SELECT 1 FROM holon_runs WHERE ns = ? AND run_id = ?", (self.namespace, run_id)
        ).fetchone()
        return row is not None


def _is_undecodable(exc: sqlite3.OperationalError) -> bool:
    return "could not decode" in str(exc).lower()


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    message = str(exc).lower()
    return "locked" in message or "busy" in message


def corrupt(run_id: str, detail: str) -> Exception:
    return CorruptRecord(f"run {run_id!r}: {detail}", run_id=run_id)
