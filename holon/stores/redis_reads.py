"""The reads of the Redis store: records, listings, counts, timelines, the catalogue.

Indexes are checked against the run records they point to; entries found wrong are
removed (on a Cluster they are hints that may lag behind the records)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from redis.exceptions import RedisError

from holon.errors import CorruptRecord, RunNotFound, StoreError
from holon.stores import _codec
from holon.stores.base import (
    Page,
    RunRecord,
    RunStatus,
    RunSummary,
    TimelineEvent,
)
from holon.stores.redis_base import RedisBase
from holon.stores.redis_batch import Command
from holon.stores.redis_codec import (
    _decode,
    _float,
    _summary,
)

__all__ = ["RedisReads"]


class RedisReads(RedisBase):
    """Every read of the Redis store."""

    async def load_run(self, run_id: str) -> RunRecord | None:
        """The whole record in one round trip. Raises `CorruptRecord`."""
        key, results_key, _ = self._run_keys(run_id)
        replies = await self._pipeline([("HGETALL", key), ("HGETALL", results_key)])
        for reply, k in zip(replies, (key, results_key), strict=True):
            if isinstance(reply, Exception):
                if "WRONGTYPE" in str(reply):
                    raise CorruptRecord(
                        f"run {run_id!r}: key {k!r} at {self.safe_url} is not a hash",
                        run_id=run_id,
                    )
                raise self._describe(reply, k)
        fields, results = replies
        if not fields:
            return None
        record = _decode(run_id, fields, results)
        if self.cluster:
            self._remember(run_id, record.workflow, record.created_at)
        return record

    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        workflow: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[RunSummary]:
        """Runs, newest first, filtered and paged by a cursor (`created_at|run_id`)."""
        if status is not None:
            status = RunStatus(status)
            index = self._status_key(status.value)
        elif workflow is not None:
            index = self._index("wf", workflow)
        else:
            index = self._created_key
        after: tuple[float, str] | None = None
        if cursor:
            score_text, _, last_id = cursor.partition("|")
            try:
                after = (float(score_text), last_id)
            except ValueError:
                raise StoreError(f"invalid listing cursor {cursor!r}") from None
        items: list[RunSummary] = []
        scores: list[float] = []
        stale: list[str] = []
        offset = 0
        batch = max(limit + 1, 32)
        top = "+inf" if after is None else repr(after[0])
        while len(items) <= limit:
            entries: list[tuple[str, float]] = await self._client.zrevrangebyscore(
                index, top, "-inf", start=offset, num=batch, withscores=True
            )
            if not entries:
                break
            offset += len(entries)
            last_batch = len(entries) < batch
            if after is not None:
                entries = [
                    (m, s) for m, s in entries if s < after[0] or (s == after[0] and m < after[1])
                ]
            rows = await self._pipeline(
                [("HMGET", self.run_key(m), "wf", "ver", "st", "ca", "ua") for m, _ in entries]
            )
            for (member, score), row in zip(entries, rows, strict=True):
                summary = _summary(member, row)
                if summary is None or (status is not None and summary.status != status):
                    stale.append(member)
                elif workflow is None or summary.workflow == workflow:
                    items.append(summary)
                    scores.append(score)
                    if len(items) > limit:
                        break
            if last_batch:
                break
        if stale:
            await self._drop_stale(index, stale, status)
        more = len(items) > limit
        items = items[:limit]
        next_cursor = f"{scores[limit - 1]!r}|{items[-1].run_id}" if more and items else None
        return Page(items=items, next_cursor=next_cursor)

    async def _drop_stale(self, index: str, members: list[str], status: RunStatus | None) -> None:
        """Remove index entries a read found wrong, then put back any that a writer made
        right meanwhile (the records are read again after the removal)."""
        await self._pipeline([("ZREM", index, *members)])
        rows = await self._pipeline([("HMGET", self.run_key(m), "st", "ca") for m in members])
        back = [
            ("ZADD", index, _float(row[1]), member)
            for member, row in zip(members, rows, strict=True)
            if not isinstance(row, Exception)
            and row[0] is not None
            and (status is None or row[0] == status.value)
        ]
        if back:
            await self._pipeline(back)

    async def find_waiting(
        self, key: str, *, limit: int = 100, cursor: str | None = None
    ) -> Page[str]:
        """Ids of runs indexed under `key` by a checkpoint's `wait_keys`, in id order."""
        index = self._index("waiting", key)
        low = f"({cursor}" if cursor else "-"
        try:
            ids: list[str] = await self._client.zrangebylex(index, low, "+", start=0, num=limit + 1)
        except RedisError as exc:
            raise self._describe(exc, index) from None
        if self.cluster and ids:
            rows = await self._pipeline([("HGET", self.run_key(i), "wx") for i in ids])
            kept = [
                i
                for i, row in zip(ids, rows, strict=True)
                if isinstance(row, str) and key in row.split("\x1f")
            ]
            if len(kept) < len(ids):
                await self._drop_stale_waiting(index, key, [i for i in ids if i not in kept])
            ids = kept
        page = ids[:limit]
        return Page(items=page, next_cursor=page[-1] if len(ids) > limit else None)

    async def _drop_stale_waiting(self, index: str, key: str, members: list[str]) -> None:
        await self._pipeline([("ZREM", index, *members)])
        rows = await self._pipeline([("HGET", self.run_key(m), "wx") for m in members])
        back = [
            ("ZADD", index, 0, m)
            for m, row in zip(members, rows, strict=True)
            if isinstance(row, str) and key in row.split("\x1f")
        ]
        if back:
            await self._pipeline(back)

    async def timeline(
        self, run_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[TimelineEvent]:
        """Timeline events with `seq > after_seq`, oldest first."""
        key, _, stream = self._run_keys(run_id)
        command: Command = ("XRANGE", stream, f"{after_seq + 1}-0", "+")
        if limit is not None:
            command = (*command, "COUNT", limit)
        exists, entries = await self._pipeline([("EXISTS", key), command])
        if isinstance(entries, Exception):
            if "WRONGTYPE" in str(entries):
                raise CorruptRecord(
                    f"run {run_id!r}: key {stream!r} at {self.safe_url} is not a stream",
                    run_id=run_id,
                )
            raise self._describe(entries, stream)
        if not exists:
            raise RunNotFound(f"no run {run_id!r} in {self.safe_url}", run_id=run_id)
        events: list[TimelineEvent] = []
        for entry_id, fields in entries:
            step = fields.get("s")
            events.append(
                TimelineEvent(
                    run_id=run_id,
                    seq=int(entry_id.split("-", 1)[0]),
                    kind=fields.get("k", ""),
                    at=_float(fields.get("a")),
                    step=step,
                    data=_codec.load(fields.get("d", "{}"), run_id=run_id, what="event"),
                )
            )
        return events

    async def count_runs(self, *, workflow: str | None = None) -> dict[RunStatus, int]:
        """How many runs there are in each status (statuses with none are left out).

        Exact counters on a single server; on a Cluster the status indexes are read and
        checked against the records, so the cost grows with the number of runs."""
        if self.cluster:
            return await self._count_by_reading(workflow)
        key = self._index("counts", workflow) if workflow is not None else f"{self._ip}counts"
        try:
            stored: dict[str, str] = await self._client.hgetall(key)
        except RedisError as exc:
            raise self._describe(exc, key) from None
        counts: dict[RunStatus, int] = {}
        for status in RunStatus:
            n = int(stored.get(status.value, 0))
            if n > 0:
                counts[status] = n
        return counts

    async def _count_by_reading(self, workflow: str | None) -> dict[RunStatus, int]:
        counts: dict[RunStatus, int] = {}
        for status in RunStatus:
            cursor: str | None = None
            n = 0
            while True:
                page = await self.list_runs(
                    status=status, workflow=workflow, limit=1000, cursor=cursor
                )
                n += len(page.items)
                cursor = page.next_cursor
                if cursor is None:
                    break
            if n:
                counts[status] = n
        return counts

    # -- catalogue --------------------------------------------------------------------

    async def put_definition(self, name: str, version: str, document: dict[str, Any]) -> None:
        """Record a workflow definition in the catalogue (name + version is the key)."""
        field = f"{quote(name, safe='')}@{quote(version, safe='')}"
        try:
            await self._client.hset(self._definitions_key, field, _codec.dump(document))
        except RedisError as exc:
            raise self._describe(exc, self._definitions_key) from None

    async def definitions(self) -> list[dict[str, Any]]:
        """Every stored definition document, by name then version."""
        try:
            stored: dict[str, str] = await self._client.hgetall(self._definitions_key)
        except RedisError as exc:
            raise self._describe(exc, self._definitions_key) from None
        return [_codec.load(stored[f], run_id="-", what=f"definition {f}") for f in sorted(stored)]
