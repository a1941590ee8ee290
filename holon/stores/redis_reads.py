"""The reads of the Redis store: records, listings, counts, timelines, the catalogue.

Indexes are checked against the run records they point to; entries found wrong are
removed (on a Cluster they are hints that may lag behind the records)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from redis.exceptions import RedisError

from holon.errors import CorruptRecord, RunNotFound, StoreError
from holon.stores import _codec
from holon.stores.base import (
    Page,
    RunProgress,
    RunRecord,
    RunStatus,
    RunSummary,
    TimelineEvent,
)
from holon.stores.redis_base import RedisBase
from holon.stores.redis_batch import Command
from holon.stores.redis_codec import (
    _decode,
    _event,
    _float,
    _summary,
)
from holon.stores.redis_resp import UndecodableReply

__all__ = ["RedisReads"]


class RedisReads(RedisBase):
    """Every read of the Redis store."""

    async def load_run(self, run_id: str) -> RunRecord | None:
        """The whole record in one round trip. Raises `CorruptRecord`."""
        return self._loaded(run_id, await self._pipeline(self._load_commands(run_id)))

    def _load_commands(self, run_id: str) -> list[Command]:
        """The reads that make up a run's record (`_loaded` decodes their replies)."""
        key, body_key, input_key, results_key, _ = self._run_keys(run_id)
        return [("HGETALL", key), ("GET", body_key), ("GET", input_key), ("HGETALL", results_key)]

    def _loaded(self, run_id: str, replies: Sequence[Any]) -> RunRecord | None:
        """The record from the replies to `_load_commands`. Raises `CorruptRecord`."""
        keys = self._run_keys(run_id)[:4]
        for reply, k in zip(replies, keys, strict=True):
            if isinstance(reply, Exception):
                if isinstance(reply, UndecodableReply):
                    raise CorruptRecord(
                        f"run {run_id!r}: key {k!r} at {self.safe_url} holds bytes that are "
                        f"not UTF-8 text ({reply})",
                        run_id=run_id,
                    )
                if "WRONGTYPE" in str(reply):
                    raise CorruptRecord(
                        f"run {run_id!r}: key {k!r} at {self.safe_url} holds the wrong type",
                        run_id=run_id,
                    )
                raise self._describe(reply, k)
        fields, body, input_text, results = (
            _as_dict(replies[0]),
            replies[1],
            replies[2],
            _as_dict(replies[3]),
        )
        if not fields:
            return None
        record = _decode(run_id, fields, body, input_text, results, self.max_value_bytes)
        if self.cluster:
            self._remember(run_id, record.workflow, record.current_version, record.created_at)
        return record

    async def run_progress(self, run_id: str) -> RunProgress | None:
        """Status and sequence numbers from the run's hash, in one round trip."""
        key = self.run_key(run_id)
        (reply,) = await self._pipeline([("HMGET", key, "st", "seq", "es")])
        if isinstance(reply, UndecodableReply):
            raise CorruptRecord(
                f"run {run_id!r}: key {key!r} at {self.safe_url} holds bytes that are not "
                f"UTF-8 text ({reply})",
                run_id=run_id,
            )
        if isinstance(reply, Exception):
            raise self._describe(reply, key)
        status, seq, event_seq = (v.decode() if isinstance(v, bytes) else v for v in reply)
        if status is None:
            return None
        try:
            return RunProgress(status=RunStatus(status), seq=int(seq), event_seq=int(event_seq))
        except (TypeError, ValueError):
            raise CorruptRecord(
                f"run {run_id!r}: key {key!r} at {self.safe_url} holds an invalid status or "
                "sequence number",
                run_id=run_id,
            ) from None

    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        workflow: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[RunSummary]:
        """Runs, newest first, filtered and paged by a cursor (`created_at|run_id`).

        Reads the status index (or the workflow's index; with no filter, the status
        indexes merged), and checks every entry against its run record."""
        statuses = list(RunStatus) if status is None else [RunStatus(status)]
        if workflow is not None:
            workflows = [workflow]
        else:
            (members,) = await self._pipeline([("SMEMBERS", self._workflows_key)])
            if isinstance(members, Exception):
                raise self._describe(members, self._workflows_key)
            workflows = sorted(members)
        indexes = [self._status_key(w, s.value) for w in workflows for s in statuses]
        after: tuple[float, str] | None = None
        if cursor:
            score_text, _, last_id = cursor.partition("|")
            try:
                after = (float(score_text), last_id)
            except ValueError:
                raise StoreError(f"invalid listing cursor {cursor!r}") from None
        items: list[tuple[float, RunSummary]] = []
        stale: dict[str, list[str]] = {}
        batch = max(limit + 1, 32)
        merged = _Merge(self, indexes, after, max(8, batch // max(1, len(indexes)) + 1))
        while len(items) <= limit:
            entries = await merged.take(batch)
            if not entries:
                break
            rows = await self._pipeline(
                [("HMGET", self.run_key(m), "wf", "ver", "st", "ca", "ua") for _, m, _ in entries]
            )
            for (index, member, score), row in zip(entries, rows, strict=True):
                summary = _summary(member, row)
                wanted = _status_of(index)
                if summary is None or summary.status != wanted:
                    stale.setdefault(index, []).append(member)
                else:
                    items.append((score, summary))
                    if len(items) > limit:
                        break
        for index, members in stale.items():
            await self._drop_stale(index, members, _status_of(index))
        more = len(items) > limit
        page = items[:limit]
        next_cursor = f"{page[-1][0]!r}|{page[-1][1].run_id}" if more and page else None
        return Page(items=[summary for _, summary in page], next_cursor=next_cursor)

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
        key, _, _, _, timeline_key = self._run_keys(run_id)
        command = self._script(
            "timeline", (key, timeline_key), after_seq, -1 if limit is None else limit
        )
        (reply,) = await self._pipeline([command])
        if isinstance(reply, Exception):
            if isinstance(reply, UndecodableReply):
                raise CorruptRecord(
                    f"run {run_id!r} at {self.safe_url}: its timeline holds bytes that are "
                    f"not UTF-8 text ({reply})",
                    run_id=run_id,
                )
            if str(reply).startswith("HOLON WRONGTYPE"):
                detail = str(reply).removeprefix("HOLON WRONGTYPE ")
                raise CorruptRecord(f"run {run_id!r} at {self.safe_url}: {detail}", run_id=run_id)
            raise self._describe(reply, timeline_key)
        if reply is None:
            raise RunNotFound(f"no run {run_id!r} in {self.safe_url}", run_id=run_id)
        first, texts = reply
        return [_event(run_id, int(first) + i, text) for i, text in enumerate(texts)]

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

    async def put_schedule(self, name: str, document: dict[str, Any]) -> None:
        """Keep a schedule: a hash of its fields (JSON each), named in a set of names (in
        one transaction on a single server; on a Cluster, whose keys of other slots no
        transaction spans, the name is added last and removed first)."""
        key = self._schedule_key(name)
        fields = {field: _codec.dump(value) for field, value in document.items()}
        try:
            async with self._client.pipeline(transaction=not self.cluster) as pipe:
                pipe.delete(key)
                if fields:
                    pipe.hset(key, mapping=fields)
                pipe.sadd(self._schedules_key, name)
                await pipe.execute()
        except RedisError as exc:
            raise self._describe(exc, key) from None

    async def schedules(self) -> list[dict[str, Any]]:
        """Every schedule kept, by name."""
        try:
            names = sorted(await self._client.smembers(self._schedules_key))
            async with self._client.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.hgetall(self._schedule_key(name))
                stored: list[dict[str, str]] = await pipe.execute()
        except RedisError as exc:
            raise self._describe(exc, self._schedules_key) from None
        return [
            {f: _codec.load(v, run_id="-", what=f"schedule {name}") for f, v in fields.items()}
            for name, fields in zip(names, stored, strict=True)
            if fields
        ]

    async def delete_schedule(self, name: str) -> bool:
        """Forget a schedule."""
        try:
            async with self._client.pipeline(transaction=not self.cluster) as pipe:
                pipe.srem(self._schedules_key, name)
                pipe.delete(self._schedule_key(name))
                _, deleted = await pipe.execute()
        except RedisError as exc:
            raise self._describe(exc, self._schedules_key) from None
        return bool(deleted)

    async def patch_schedule(self, name: str, changes: dict[str, Any]) -> bool:
        """Set fields of a schedule in one script (a field set to None is removed)."""
        flat = [item for field, value in changes.items() for item in (field, _codec.dump(value))]
        key = self._schedule_key(name)
        try:
            patched = await self._client.eval(_PATCH_FIELDS, 1, key, *flat)
        except RedisError as exc:
            raise self._describe(exc, key) from None
        return bool(patched)

    async def put_worker(self, name: str, info: dict[str, Any], expires_at: float) -> None:
        """Say that executor `name` is alive until `expires_at` (one hash of workers)."""
        entry = _codec.dump({"info": info, "expires_at": expires_at})
        try:
            await self._client.hset(self._workers_key, name, entry)
        except RedisError as exc:
            raise self._describe(exc, self._workers_key) from None

    async def workers(self, now: float) -> list[dict[str, Any]]:
        """The executors alive at `now`; the others are forgotten."""
        try:
            stored: dict[str, str] = await self._client.hgetall(self._workers_key)
        except RedisError as exc:
            raise self._describe(exc, self._workers_key) from None
        alive: list[dict[str, Any]] = []
        gone: list[str] = []
        for name in sorted(stored):
            entry = _codec.load(stored[name], run_id="-", what=f"worker {name}")
            if not isinstance(entry, dict) or float(entry.get("expires_at", 0)) <= now:
                gone.append(name)
                continue
            alive.append({**entry["info"], "name": name, "expires_at": entry["expires_at"]})
        if gone:
            await self._client.hdel(self._workers_key, *gone)
        return alive

    async def remove_worker(self, name: str) -> None:
        """Forget executor `name`."""
        try:
            await self._client.hdel(self._workers_key, name)
        except RedisError as exc:
            raise self._describe(exc, self._workers_key) from None

    async def definitions(self) -> list[dict[str, Any]]:
        """Every stored definition document, by name then version."""
        try:
            stored: dict[str, str] = await self._client.hgetall(self._definitions_key)
        except RedisError as exc:
            raise self._describe(exc, self._definitions_key) from None
        return [_codec.load(stored[f], run_id="-", what=f"definition {f}") for f in sorted(stored)]


_PATCH_FIELDS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 1, #ARGV, 2 do
  if ARGV[i + 1] == 'null' then
    redis.call('HDEL', KEYS[1], ARGV[i])
  else
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return 1
"""
"""Set the given fields (JSON each) of an existing hash; `null` removes a field."""


def _status_of(index: str) -> RunStatus:
    """The status a status index (`...status:{<workflow>}:<status>`) holds."""
    return RunStatus(index.rsplit(":", 1)[1])


class _Merge:
    """Entries of several sorted-set indexes, newest first, merged and read in batches."""

    def __init__(
        self, reads: RedisReads, indexes: list[str], after: tuple[float, str] | None, batch: int
    ) -> None:
        self._reads = reads
        self._after = after
        self._batch = batch
        self._buffers: dict[str, list[tuple[str, float]]] = {i: [] for i in indexes}
        self._offsets: dict[str, int] = dict.fromkeys(indexes, 0)
        self._done: set[str] = set()

    async def _fill(self) -> None:
        """Refill every empty buffer whose index may hold more entries."""
        while want := [i for i, b in self._buffers.items() if not b and i not in self._done]:
            top = "+inf" if self._after is None else repr(self._after[0])
            commands: list[Command] = [
                (
                    "ZREVRANGEBYSCORE",
                    i,
                    top,
                    "-inf",
                    "WITHSCORES",
                    "LIMIT",
                    self._offsets[i],
                    self._batch,
                )
                for i in want
            ]
            replies = await self._reads._pipeline(commands)
            for index, reply in zip(want, replies, strict=True):
                if isinstance(reply, Exception):
                    raise self._reads._describe(reply, index)
                entries = _pairs(reply)
                self._offsets[index] += len(entries)
                if len(entries) < self._batch:
                    self._done.add(index)
                if self._after is not None:
                    score, last = self._after
                    entries = [
                        (m, sc) for m, sc in entries if sc < score or (sc == score and m < last)
                    ]
                self._buffers[index] = entries

    async def take(self, n: int) -> list[tuple[str, str, float]]:
        """Up to `n` entries (index, member, score), newest first."""
        out: list[tuple[str, str, float]] = []
        while len(out) < n:
            await self._fill()
            live = [(b[0][1], b[0][0], i) for i, b in self._buffers.items() if b]
            if not live:
                break
            _, _, index = max(live)
            member, score = self._buffers[index].pop(0)
            out.append((index, member, score))
        return out


def _pairs(reply: list[Any]) -> list[tuple[str, float]]:
    """(member, score) pairs from a WITHSCORES reply, flat or already paired."""
    if reply and isinstance(reply[0], list | tuple):
        return [(str(m), float(sc)) for m, sc in reply]
    return [(str(reply[k]), float(reply[k + 1])) for k in range(0, len(reply), 2)]


def _as_dict(reply: Any) -> dict[str, str]:
    """A HGETALL reply as a dict (a raw pipeline gives a flat list)."""
    if isinstance(reply, dict):
        return reply
    return {reply[k]: reply[k + 1] for k in range(0, len(reply), 2)}
