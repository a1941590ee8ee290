"""`redis://host:port/db` and `redis+cluster://host:port`: the store for many workers.

Each run lives under one hash tag, `{prefix}run:{<id>}` (a small hash) with `:b` (its
body), `:i` (a long input), `:r` (step results) and `:t` (its timeline, a list), so every
write to a run is one Lua script in one slot (see `redis_scripts`). Global indexes are
sorted sets per workflow: runs by status (`status:{<workflow>}:<status>`, scored by
creation time), and the runs a worker may claim: queued (`ready:{<workflow>}`), running
by lease expiry (`lease:{<workflow>}`) and waiting by wake-up time (`timer:{<workflow>}`);
`waiting:{<key>}` holds runs by wait key. `claim` reads the claim indexes, never the
whole keyspace; no operation uses `KEYS` or `SCAN`.

On a single server the scripts keep the indexes exact. On a Cluster the indexes live in
other slots than the runs, so they are hints: added in the same pipeline as the write,
removed only by readers that found the run record disagreeing. The run record is the
truth; every listing and claim checks it.

Writes go through a group committer (`redis_batch`): concurrent writes of different runs
share one pipeline. See `docs/redis.md` for durability settings, retention and the
Cluster.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping, Sequence
from functools import partial
from typing import Any

from redis.exceptions import RedisError

from holon.errors import CorruptRecord, RunNotFound, StoreError
from holon.stores import _codec
from holon.stores.base import (
    Checkpoint,
    Committed,
    Control,
    LeaseGrant,
    NewEvent,
    RunRecord,
    RunStatus,
    quarantined_body,
)
from holon.stores.redis_batch import Command
from holon.stores.redis_codec import (
    CLAIM_INDEXES,
    _event_args,
    _events,
    _header,
    _name,
    _result_args,
    _wait_key_args,
    dump_body,
    safe_url,
    time_text,
)
from holon.stores.redis_inbox import RedisInbox
from holon.stores.redis_resp import UndecodableReply
from holon.stores.timeline_cap import warn_near_cap

__all__ = ["RedisStore", "safe_url"]

_CLAIM_ROUNDS = 4
"""Reads of the claim indexes one claim makes at most on a Cluster (stale hints)."""

logger = logging.getLogger("holon.stores.redis")


class RedisStore(RedisInbox):
    """A store on a Redis server or Redis Cluster.

    Args:
        url: `redis://[user:password@]host:port/db`, `rediss://...` for TLS, or
            `redis+cluster://host:port` for a Cluster (any node). Query options:
            `lease_clock`, `timeline_cap`, `durable_ack` and the retention's
            `<status>_ttl` (`completed_ttl`, `failed_ttl`, ...; the keyword arguments win
            over them).
        key_prefix: put before every key; deployments with different prefixes share a
            database without seeing each other's runs. Default `holon:`.
        lease_clock: `"server"` (default): leases expire by the Redis server's clock, so
            workers' clocks do not matter. `"caller"`: by the `now` the caller passes,
            for tests that drive time with a manual clock.
        timeline_cap: the most events kept per run, the oldest trimmed (default
            `DEFAULT_TIMELINE_CAP`, 10,000; 0 keeps all); a warning is logged when a run
            reaches 90 % of it.
        completed_ttl: seconds a `completed` run is kept; None keeps it for ever (sets
            `retention.completed`).
        retention: how long finished runs are kept, per final status (default: for
            ever); `claim` deletes those due, `purge_expired` too.
        durable_ack: `"aof"` makes every write wait until the server has written it to
            its append-only file (`WAITAOF`, Redis 7.2 and newer).
        client: an already made `redis.asyncio` client (e.g. fakeredis); the URL then
            only names the store in messages.
        max_value_bytes: a stored value (body, input, result) larger than this is read
            as a corrupt record; default 64 MiB.

    Example:
        ```python
        store = RedisStore("redis://localhost:6379/0", key_prefix="deploy:")
        await store.open()
        ```
    """

    async def create_run(
        self, record: RunRecord, events: Sequence[NewEvent]
    ) -> tuple[RunRecord, bool]:
        """Store a new run, or return the existing one with that id and `False`."""
        header = _header(
            self._ip,
            record.run_id,
            _name(record.workflow, "workflow name"),
            _name(record.version, "workflow version"),
            record.status.value,
            "" if record.wake_at is None else repr(record.wake_at),
            repr(record.created_at),
            repr(record.updated_at),
            self.timeline_cap,
        )
        command = self._script(
            "create",
            self._run_keys(record.run_id),
            header,
            _codec.dump(record.input),
            dump_body(record.body),
            _events(events),
        )
        commands = [command]
        if self.cluster:
            self._remember(
                record.run_id, record.workflow, record.current_version, record.created_at
            )
            commands += [
                ("SADD", self._workflows_key, record.workflow),
                ("SADD", self._versions_key(record.workflow), record.current_version),
                *self._hints(record.run_id, record.status),
            ]
        replies = await self._write(record.run_id, commands)
        created = replies[0] == 1
        stored = await self.load_run(record.run_id)
        assert stored is not None
        if created:
            self.signals.notify(record.run_id)
        return stored, created

    # -- leases -----------------------------------------------------------------------

    async def acquire_lease(
        self, run_id: str, owner: str, ttl: float, now: float, *, limit: int | None = None
    ) -> LeaseGrant | None:
        """Lease a queued run, or a running one whose lease expired, to `owner` (with
        `limit`, only while fewer runs of its workflow hold a live lease)."""
        self._check_limits_supported(limit is not None)
        grants = await self._acquire_many(
            [run_id], owner, ttl, now, timers=False, strict=True, load=True, limits=[limit]
        )
        return grants[0] if grants else None

    def _check_limits_supported(self, asked: bool) -> None:
        # The limit is counted in the claim indexes inside the acquire script, which a
        # Cluster cannot do atomically (the indexes live on other nodes).
        if asked and self.cluster:
            raise StoreError(
                "a global concurrency limit (Workflow.Concurrency) needs a single Redis "
                "server or a primary with replicas; it is not supported on a Redis Cluster"
            )

    async def _acquire_many(
        self,
        run_ids: Sequence[str],
        owner: str,
        ttl: float,
        now: float,
        *,
        timers: bool,
        strict: bool,
        load: bool = False,
        limits: Sequence[int | None] | None = None,
    ) -> list[LeaseGrant]:
        """Lease `run_ids` in one pipeline. With `load`, each acquisition is followed in
        the pipeline by the reads of the run's record, which the grant then carries:
        the executor that takes it need not ask for it again. `limits` gives each run's
        workflow limit (None: none); the server runs the scripts one after another, so
        each counts the leases the ones before it granted."""
        commands: list[Command] = []
        reads = 4 if load else 0
        for i, run_id in enumerate(run_ids):
            limit = limits[i] if limits is not None else None
            commands.append(
                self._script(
                    "acquire",
                    self._run_keys(run_id),
                    _header(
                        self._ip,
                        run_id,
                        _name(owner, "lease owner"),
                        repr(float(ttl)),
                        repr(float(now)),
                        self.lease_clock[0],
                        self._request_id(),
                        "1" if timers else "0",
                        "" if limit is None else str(limit),
                    ),
                )
            )
            if load:
                commands += self._load_commands(run_id)
        replies = await self._submit(commands)
        grants: list[LeaseGrant] = []
        refused: list[tuple[str, dict[str, str | None] | None]] = []
        granted_hints: list[Command] = []
        for i, run_id in enumerate(run_ids):
            reply = replies[i * (1 + reads)]
            if isinstance(reply, Exception):
                if strict:
                    raise self._refusal(run_id, reply)
                message = str(reply)
                if isinstance(reply, UndecodableReply) or message.startswith(
                    f"HOLON WRONGTYPE {self.run_key(run_id)} "
                ):
                    # Nothing can lease a record that is not a hash, or whose fields are
                    # not text: fail it here, alone.
                    reason = (
                        f"run {run_id!r}: its fields are not UTF-8 text ({reply})"
                        if isinstance(reply, UndecodableReply)
                        else str(self._refusal(run_id, reply))
                    )
                    logger.error("run %s: %s; marking it failed", run_id, reason)
                    await self.quarantine(run_id, reason, now)
                elif not message.startswith("HOLON NOTFOUND"):
                    raise self._refusal(run_id, reply)
                refused.append((run_id, None))
                continue
            if reply[0] == 1:
                record = None
                if load:
                    start = i * (1 + reads) + 1
                    try:
                        record = self._loaded(run_id, replies[start : start + reads])
                    except (CorruptRecord, StoreError):
                        record = None  # the executor loads it again and meets the error
                grants.append(
                    LeaseGrant(
                        run_id=run_id,
                        token=int(reply[1]),
                        recovered=reply[2] == 1,
                        record=record,
                    )
                )
                granted_hints += self._hints(run_id, RunStatus.RUNNING)
                self.signals.notify(run_id)
            else:
                _, st, lx, wk = reply
                refused.append((run_id, {"st": st, "lx": lx or None, "wk": wk or None}))
        if self.cluster:
            if granted_hints:
                await self._pipeline(granted_hints)
            for grant in grants:
                if grant.run_id not in self._known:
                    await self._hint_from_record(grant.run_id)
            await self._repair_many(refused)
        return grants

    async def renew_lease(self, run_id: str, token: int, ttl: float, now: float) -> Control | None:
        """Extend the lease; returns the pending control request. Raises `StaleLease`."""
        command = self._script(
            "renew",
            self._run_keys(run_id),
            _header(
                self._ip, run_id, token, repr(float(ttl)), repr(float(now)), self.lease_clock[0]
            ),
        )
        replies = await self._write(run_id, [command])
        return _codec.load_control(replies[0] or None, run_id=run_id)

    async def release_lease(self, run_id: str, token: int) -> None:
        """Drop the lease if `token` still holds it."""
        command = self._script("release", self._run_keys(run_id), _header(self._ip, run_id, token))
        replies = await self._write(run_id, [command])
        if self.cluster and isinstance(replies[0], list) and replies[0][0] == "running":
            # Claimable at once: a running run without a lease.
            _, workflow, version = replies[0]
            lease = self._claim_index("lease", workflow, version)
            await self._pipeline([("ZADD", lease, 0, run_id)])
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
        """Lease up to `limit` runs needing an executor, found through the claim indexes.

        On a Cluster the indexes are hints and may still name runs that were taken: the
        ones found stale are repaired, and the indexes read again (a few times at most),
        so that stale entries do not hide the runs behind them."""
        if not workflows or limit <= 0:
            return []
        self._check_limits_supported(bool(limits))
        if not self.retention.keeps_everything:
            await self.purge_expired(now)
        queues = await self._claim_queues(workflows, versions or {})
        if not queues:
            return []
        grants: list[LeaseGrant] = []
        tried: set[str] = set()
        for _ in range(_CLAIM_ROUNDS if self.cluster else 1):
            found = await self._candidates(queues, limit, now)
            fresh = [c for c in found if c not in tried]
            if not fresh:
                break
            tried.update(fresh)
            while fresh and len(grants) < limit:
                take = limit - len(grants)
                batch, fresh = fresh[:take], fresh[take:]
                caps = [(limits or {}).get(found[run_id]) for run_id in batch]
                grants += await self._acquire_many(
                    batch, owner, ttl, now, timers=True, strict=False, load=True, limits=caps
                )
            if len(grants) >= limit:
                break
        return grants

    async def _claim_queues(
        self, workflows: Sequence[str], versions: Mapping[str, Sequence[str]]
    ) -> list[tuple[str, str]]:
        """The (workflow, version) pairs whose claim indexes a claim reads: the versions
        given, else every version the workflow's runs are on."""
        named = list(dict.fromkeys(workflows))
        queues = [(wf, v) for wf in named if wf in versions for v in versions[wf]]
        everything = [wf for wf in named if wf not in versions]
        if not everything:
            return queues
        known = await self._pipeline([("SMEMBERS", self._versions_key(wf)) for wf in everything])
        for wf, reply in zip(everything, known, strict=True):
            if isinstance(reply, Exception):
                raise self._describe(reply, self._versions_key(wf))
            queues += [(wf, v) for v in sorted(reply)]
        return queues

    async def _candidates(
        self, queues: Sequence[tuple[str, str]], limit: int, now: float
    ) -> dict[str, str]:
        """Runs the claim indexes name as needing an executor (queued, lease expired,
        timer due; at most `limit` of each kind per workflow and version), each with
        its workflow."""
        commands = [
            self._script(
                "candidates",
                [self._claim_index(kind, wf, version) for kind in CLAIM_INDEXES],
                repr(float(now)),
                self.lease_clock[0],
                limit,
            )
            for wf, version in queues
        ]
        replies = await self._pipeline(commands)
        candidates: dict[str, str] = {}
        for (wf, version), reply in zip(queues, replies, strict=True):
            if isinstance(reply, Exception):
                raise self._describe(reply, self._claim_index("ready", wf, version))
            for group in reply:
                candidates.update(dict.fromkeys(group, wf))
        return candidates

    # -- checkpoints --------------------------------------------------------------------

    def commit(
        self, run_id: str, *, expected_seq: int, token: int | None, checkpoint: Checkpoint
    ) -> Awaitable[Committed]:
        """Write a checkpoint in one round trip: fenced, sequence-checked, idempotent.

        The script call is encoded here and the checkpoint is not kept while the write
        waits for its pipeline (on a worker with a thousand runs in flight, what waiting
        writes hold is what the garbage collector walks); bad data raises here, before
        anything is sent. The awaitable returned sends it.
        """
        status = checkpoint.status
        expire_at = ""
        kept = self.retention.kept
        if kept and status in kept:
            expire_at = repr(checkpoint.at + kept[status])
        # Most steps record no result and open no wait: no call for those.
        results = _result_args(checkpoint.results) if checkpoint.results else ()
        events = _event_args(checkpoint.events)
        wait_keys = checkpoint.wait_keys
        keys = _wait_key_args(wait_keys) if wait_keys else ()
        wake = "" if checkpoint.wake_at is None else repr(checkpoint.wake_at)
        command = self._script(
            "commit",
            self._run_keys(run_id),
            # The header, as one f-string (see the script): no field holds a separator.
            f"{self._ip}\x1f{run_id}\x1f{'' if token is None else token}\x1f{expected_seq}"
            f"\x1f{self._request_id()}\x1f{status}\x1f{wake}"
            f"\x1f{time_text(checkpoint.at)}\x1f{'1' if checkpoint.release_lease else '0'}"
            f"\x1f{'1' if checkpoint.clear_control else '0'}\x1f{self.timeline_cap}"
            f"\x1f{expire_at}\x1f{'0' if wait_keys is None else '1'}"
            f"\x1f{len(results) // 2}\x1f{len(events)}\x1f{len(keys)}"
            f"\x1f{'' if checkpoint.version is None else _name(checkpoint.version, 'version')}",
            dump_body(checkpoint.body),
            *results,
            *events,
            *keys,
        )
        if self.cluster:
            # Only a Cluster needs the checkpoint after this (for its index hints).
            return self._commit_on_cluster(run_id, command, checkpoint, expire_at)
        if self.timeline_cap and events:
            return self._submit((command,), run_id, partial(self._committed_capped, len(events)))
        return self._submit((command,), run_id, self._committed)

    def _committed_capped(
        self, added: int, run_id: str, replies: list[Any], first: int = 0
    ) -> Committed:
        """`_committed`, and the warning when the commit's `added` events take the run
        near the timeline cap."""
        committed = self._committed(run_id, replies, first)
        warn_near_cap(run_id, committed.event_seq - added, committed.event_seq, self.timeline_cap)
        return committed

    def _committed(self, run_id: str, replies: list[Any], first: int = 0) -> Committed:
        """The commit script's reply (`replies[first]`) as a `Committed`, or the
        refusal it carries."""
        reply = replies[first]
        if isinstance(reply, Exception):
            raise self._refusal(run_id, reply)
        seq, event_seq, control = reply[0], reply[1], reply[2]
        self.signals.notify(run_id)
        return Committed(
            seq=int(seq),
            event_seq=int(event_seq),
            control=_codec.load_control(control, run_id=run_id) if control else None,
        )

    async def request(self, run_id: str, control: Control) -> RunRecord:
        """Record an operator's pause or stop request; the checkpoint is not touched."""
        command = self._script(
            "request",
            self._run_keys(run_id),
            _header(self._ip, run_id),
            control.model_dump_json(exclude_defaults=True),
        )
        await self._write(run_id, [command])
        self.signals.notify(run_id)
        record = await self.load_run(run_id)
        if record is None:
            raise RunNotFound(f"no run {run_id!r} in {self.safe_url}", run_id=run_id)
        return record

    async def append_timeline(self, run_id: str, events: Sequence[NewEvent]) -> int:
        """Add events to the run's timeline without touching its checkpoint."""
        key, _, _, _, timeline_key = self._run_keys(run_id)
        command = self._script(
            "append",
            (key, timeline_key),
            _header(self._ip, run_id, self._request_id(), self.timeline_cap),
            *_event_args(events),
        )
        replies = await self._write(run_id, [command])
        self.signals.notify(run_id)
        event_seq = int(replies[0])
        warn_near_cap(run_id, event_seq - len(events), event_seq, self.timeline_cap)
        return event_seq

    async def quarantine(self, run_id: str, reason: str, at: float) -> None:
        """Mark a run whose record cannot be decoded `failed`, without reading it."""
        event = NewEvent(kind="failed", at=at, data={"error": "CorruptRecord", "message": reason})
        command = self._script(
            "quarantine",
            self._run_keys(run_id),
            _header(
                self._ip,
                run_id,
                repr(at),
                self._request_id(),
                self.timeline_cap,
                self.max_value_bytes,
            ),
            dump_body(quarantined_body(reason)),
            _events([event]),
        )
        commands = [command]
        keep_for = self.retention.keep_for(RunStatus.FAILED)
        if keep_for is not None:
            commands.append(("ZADD", f"{self.key_prefix}expiry", repr(at + keep_for), run_id))
        replies = await self._write(run_id, commands)
        if self.cluster:
            await self._hint_from_record(run_id)
            await self._unindex_waiting(run_id, replies[0], [])
        self.signals.notify(run_id)

    async def _commit_on_cluster(
        self, run_id: str, command: Command, checkpoint: Checkpoint, expire_at: str
    ) -> Committed:
        """Send a commit with the index hints a Cluster needs in the same pipeline, then
        tidy the wait-key indexes the run left."""
        known = run_id in self._known
        moved: list[Command] = []
        if known and checkpoint.version is not None:
            workflow, version, created = self._known[run_id]
            if checkpoint.version != version:
                # Its hints move to the new version's claim indexes.
                moved = [
                    ("ZREM", self._claim_index(kind, workflow, version), run_id)
                    for kind in CLAIM_INDEXES
                ]
                moved.append(("SADD", self._versions_key(workflow), checkpoint.version))
                self._remember(run_id, workflow, checkpoint.version, created)
        hints = [*moved, *self._hints(run_id, checkpoint.status)]
        if expire_at:
            hints.append(("ZADD", f"{self.key_prefix}expiry", expire_at, run_id))
        for key in checkpoint.wait_keys or ():
            hints.append(("ZADD", self._index("waiting", key), 0, run_id))
        replies = await self._write(run_id, [command, *hints])
        committed = self._committed_capped(len(checkpoint.events), run_id, replies)
        if not known:
            await self._hint_from_record(run_id)
        before = replies[0][3] if len(replies[0]) > 3 else []
        await self._unindex_waiting(run_id, before, checkpoint.wait_keys or [])
        return committed

    async def _unindex_waiting(
        self, run_id: str, before: Sequence[str], now: Sequence[str]
    ) -> None:
        """Cluster: drop the run from the wait-key indexes it left (after the write)."""
        gone = [k for k in before if k not in now]
        if gone:
            await self._pipeline([("ZREM", self._index("waiting", k), run_id) for k in gone])

    # -- housekeeping -------------------------------------------------------------------

    async def delete_runs(self, run_ids: Sequence[str]) -> list[str]:
        """Delete the finished runs among `run_ids` (others are left alone); returns the
        ids deleted, in the order given."""
        ids = list(dict.fromkeys(run_ids))
        if not ids:
            return []
        commands = [self._script("delete", self._run_keys(i), _header(self._ip, i)) for i in ids]
        replies = await self._submit(commands)
        deleted: list[str] = []
        cleanup: list[Command] = []
        for run_id, reply in zip(ids, replies, strict=True):
            if isinstance(reply, Exception):
                raise self._refusal(run_id, reply)
            if reply[0] != 1:
                continue
            deleted.append(run_id)
            self._known.pop(run_id, None)
            self.signals.notify(run_id)
            if self.cluster:
                _, wf, keys, status = reply
                cleanup += [
                    ("ZREM", self._status_key(wf, status), run_id),
                    ("ZREM", f"{self.key_prefix}expiry", run_id),
                    *(("ZREM", self._index("waiting", k), run_id) for k in keys),
                ]
        if cleanup:
            await self._pipeline(cleanup)
        return deleted

    async def purge_expired(self, now: float, limit: int = 1000) -> list[str]:
        """Delete finished runs whose retention (`self.retention`, per final status) ran
        out by `now`; each is listed, when it finishes, with the time it is due.

        `claim` calls it, so a deployment with workers needs nothing more."""
        key = f"{self.key_prefix}expiry"
        try:
            due: list[str] = await self._client.zrangebyscore(
                key, "-inf", repr(float(now)), start=0, num=limit
            )
        except RedisError as exc:
            raise self._describe(exc, key) from None
        if not due:
            return []
        deleted = await self.delete_runs(due)
        await self._pipeline([("ZREM", key, *due)])
        return deleted
