"""What an SQLite store keeps beside the runs: the catalogue of workflow definitions,
the schedules, the list of live executors, and the inboxes of events sent before anyone
waited for them. Small documents, each one JSON value."""

from __future__ import annotations

import sqlite3
from typing import Any

from holon.stores import _codec
from holon.stores.sqlite_base import SQLiteBase

__all__ = ["SQLiteCatalogue"]


class SQLiteCatalogue(SQLiteBase):
    """The documents an SQLite store keeps beside its runs (see `Store`)."""

    async def put_definition(self, name: str, version: str, document: dict[str, Any]) -> None:
        text = _codec.dump(document)
        await self._run(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO holon_definitions (ns, name, version, document) "
                "VALUES (?, ?, ?, ?)",
                (self.namespace, name, version, text),
            )
        )

    async def put_schedule(self, name: str, document: dict[str, Any]) -> None:
        text = _codec.dump(document)
        await self._run(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO holon_schedules (ns, name, document) VALUES (?, ?, ?)",
                (self.namespace, name, text),
            )
        )

    async def schedules(self) -> list[dict[str, Any]]:
        rows = await self._run(
            lambda c: c.execute(
                "SELECT name, document FROM holon_schedules WHERE ns = ? ORDER BY name",
                (self.namespace,),
            ).fetchall()
        )
        return [_codec.load(doc, run_id="-", what=f"schedule {name}") for name, doc in rows]

    async def delete_schedule(self, name: str) -> bool:
        deleted = await self._run(
            lambda c: (
                c.execute(
                    "DELETE FROM holon_schedules WHERE ns = ? AND name = ?", (self.namespace, name)
                ).rowcount
            )
        )
        return bool(deleted)

    async def patch_schedule(self, name: str, changes: dict[str, Any]) -> bool:
        text = _codec.dump(changes)
        updated = await self._run(
            lambda c: (
                c.execute(
                    "UPDATE holon_schedules SET document = json_patch(document, ?) "
                    "WHERE ns = ? AND name = ?",
                    (text, self.namespace, name),
                ).rowcount
            )
        )
        return bool(updated)

    async def put_worker(self, name: str, info: dict[str, Any], expires_at: float) -> None:
        text = _codec.dump(info)
        await self._run(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO holon_workers (ns, name, info, expires_at) "
                "VALUES (?, ?, ?, ?)",
                (self.namespace, name, text, expires_at),
            )
        )

    async def workers(self, now: float) -> list[dict[str, Any]]:
        def live(conn: sqlite3.Connection) -> list[tuple[str, str, float]]:
            conn.execute(
                "DELETE FROM holon_workers WHERE ns = ? AND expires_at <= ?",
                (self.namespace, now),
            )
            rows: list[tuple[str, str, float]] = conn.execute(
                "SELECT name, info, expires_at FROM holon_workers WHERE ns = ? ORDER BY name",
                (self.namespace,),
            ).fetchall()
            return rows

        rows = await self._run(lambda c: self._write(c, lambda: live(c)))
        return [
            {**_codec.load(info, run_id="-", what=f"worker {name}"), "name": name, "expires_at": at}
            for name, info, at in rows
        ]

    async def remove_worker(self, name: str) -> None:
        await self._run(
            lambda c: c.execute(
                "DELETE FROM holon_workers WHERE ns = ? AND name = ?", (self.namespace, name)
            )
        )

    async def definitions(self) -> list[dict[str, Any]]:
        rows = await self._run(
            lambda c: c.execute(
                "SELECT name, version, document FROM holon_definitions WHERE ns = ? "
                "ORDER BY name, version",
                (self.namespace,),
            ).fetchall()
        )
        return [
            _codec.load(doc, run_id="-", what=f"definition {name}@{version}")
            for name, version, doc in rows
        ]

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
        text = _codec.dump(document)

        def keep(conn: sqlite3.Connection) -> bool:
            conn.execute(
                "DELETE FROM holon_inbox WHERE ns = ? AND inbox = ? AND expires_at <= ?",
                (self.namespace, inbox, now),
            )
            if conn.execute(
                "SELECT 1 FROM holon_inbox WHERE ns = ? AND inbox = ? AND event_id = ?",
                (self.namespace, inbox, event_id),
            ).fetchone():
                return True
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM holon_inbox WHERE ns = ? AND inbox = ?",
                (self.namespace, inbox),
            ).fetchone()
            if count >= most:
                return False
            conn.execute(
                "INSERT INTO holon_inbox (ns, inbox, event_id, document, expires_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (self.namespace, inbox, event_id, text, expires_at),
            )
            return True

        return await self._run(lambda c: self._write(c, lambda: keep(c)))

    async def kept_events(self, inbox: str, now: float) -> list[dict[str, Any]]:
        rows = await self._run(
            lambda c: c.execute(
                "SELECT event_id, document FROM holon_inbox WHERE ns = ? AND inbox = ? "
                "AND expires_at > ? ORDER BY rowid",
                (self.namespace, inbox, now),
            ).fetchall()
        )
        return [_codec.load(doc, run_id="-", what=f"kept event {eid}") for eid, doc in rows]

    async def drop_kept_event(self, inbox: str, event_id: str) -> None:
        await self._run(
            lambda c: c.execute(
                "DELETE FROM holon_inbox WHERE ns = ? AND inbox = ? AND event_id = ?",
                (self.namespace, inbox, event_id),
            )
        )
