"""`redis://host:port/db` and `redis+cluster://host:port`: the store for many workers.

Each run lives under one hash tag, `{prefix}run:{<id>}` (its hash), `...:r` (step results)
and `...:t` (its timeline, a stream), so every write to a run is one Lua script in one
slot. Global indexes are sorted sets: runs by creation (`{prefix}created`), by status
(`{prefix}status:<status>`), by workflow (`{prefix}wf:{<name>}`), and, per workflow,
the runs a worker may claim: queued (`ready:{<name>}`), running by lease expiry
(`lease:{<name>}`) and waiting by wake-up time (`timer:{<name>}`). `claim` reads those
three, never the whole keyspace; no operation uses `KEYS` or `SCAN`.

On a single server the scripts keep the indexes exact. On a Cluster the indexes live in
other slots than the runs, so they are hints: added in the same pipeline as the write,
removed only by readers that found the run record disagreeing. The run record is the
truth; every listing and claim checks it.

See `docs/redis.md` for durability settings, retention and the Cluster.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import parse_qs, quote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, NoScriptError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError

from holon.errors import CorruptRecord, RunNotFound, SeqConflict, StaleLease, StoreError
from holon.stores import _codec
from holon.stores.base import (
    ChangeSignals,
    Checkpoint,
    Committed,
    Control,
    LeaseGrant,
    NewEvent,
    Page,
    RunRecord,
    RunStatus,
    RunSummary,
    TimelineEvent,
    quarantined_body,
)
from holon.stores.redis_batch import Batcher, Command
from holon.stores.redis_scripts import SCRIPTS

__all__ = ["RedisStore", "safe_url"]

logger = logging.getLogger("holon.stores.redis")

LeaseClock = Literal["server", "caller"]

_OPTIONS = {"lease_clock", "timeline_cap", "completed_ttl", "durable_ack"}
_CLAIMABLE = ("ready", "lease", "timer")


def safe_url(url: str) -> str:
    """The URL with its password replaced by `***`, fit for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def _tag(name: str) -> str:
    """`name` made safe inside a hash tag (no braces, reversible)."""
    return name.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


class RedisStore:
    """A store on a Redis server or Redis Cluster.

    Args:
        url: `redis://[user:password@]host:port/db`, `rediss://...` for TLS, or
            `redis+cluster://host:port` for a Cluster (any node). Query options:
            `lease_clock`, `timeline_cap`, `completed_ttl`, `durable_ack` (the keyword
            arguments of the same names win over them).
        key_prefix: put before every key; deployments with different prefixes share a
            database without seeing each other's runs. Default `holon:`.
        lease_clock: `"server"` (default): leases expire by the Redis server's clock, so
            workers' clocks do not matter. `"caller"`: by the `now` the caller passes,
            for tests that drive time with a manual clock.
        timeline_cap: the most events kept per run (the oldest are trimmed); 0 keeps all.
        completed_ttl: seconds a `completed` run is kept; None keeps it for ever.
        durable_ack: `"aof"` makes every write wait until the server has written it to
            its append-only file (`WAITAOF`, Redis 7.2 and newer).
        client: an already made `redis.asyncio` client (e.g. fakeredis); the URL then
            only names the store in messages.

    Example:
        ```python
        store = RedisStore("redis://localhost:6379/0", key_prefix="deploy:")
        await store.open()
        ```
    """

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "",
        lease_clock: LeaseClock | None = None,
        timeline_cap: int | None = None,
        completed_ttl: float | None = None,
        durable_ack: Literal["aof"] | None = None,
        client: Any = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "redis+cluster", "rediss+cluster"):
            raise StoreError(f"not a Redis URL: {safe_url(url)!r}")
        self.url = url
        self.safe_url = safe_url(url)
        self.cluster = parts.scheme.endswith("+cluster")
        options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(options) - _OPTIONS
        if unknown:
            raise StoreError(f"{self.safe_url!r}: unknown option(s) {sorted(unknown)}")
        clock = lease_clock or options.get("lease_clock", "server")
        if clock not in ("server", "caller"):
            raise StoreError(f"{self.safe_url!r}: lease_clock must be 'server' or 'caller'")
        self.lease_clock: LeaseClock = "server" if clock == "server" else "caller"
        try:
            self.timeline_cap = (
                timeline_cap if timeline_cap is not None else int(options.get("timeline_cap", 0))
            )
            ttl_text = options.get("completed_ttl")
            self.completed_ttl = (
                completed_ttl
                if completed_ttl is not None
                else (float(ttl_text) if ttl_text else None)
            )
        except ValueError:
            raise StoreError(
                f"{self.safe_url!r}: timeline_cap must be an integer and completed_ttl seconds"
            ) from None
        ack = durable_ack or options.get("durable_ack")
        if ack not in (None, "", "aof"):
            raise StoreError(f"{self.safe_url!r}: durable_ack must be 'aof' when given")
        self.durable_ack = "aof" if ack == "aof" else None
        self.key_prefix = key_prefix or "holon:"
        self.signals = ChangeSignals()
        self.server_version = ""
        self._parts = parts
        self._client: Any = client
        self._own_client = client is None
        self._ip = "" if self.cluster else self.key_prefix
        self._known: dict[str, tuple[str, float]] = {}
        """Cluster: workflow and creation time of runs seen lately, for index hints."""
        self._batcher = Batcher(self._send, self._load_scripts, self._describe)

    # -- keys -----------------------------------------------------------------------

    def run_key(self, run_id: str) -> str:
        """The key of a run's hash; its results and timeline add `:r` and `:t`."""
        if not run_id:
            raise StoreError("a run id must not be empty")
        return f"{self.key_prefix}run:{{{_tag(run_id)}}}"

    def _run_keys(self, run_id: str) -> tuple[str, str, str]:
        key = self.run_key(run_id)
        return key, f"{key}:r", f"{key}:t"

    def _index(self, kind: str, workflow: str) -> str:
        return f"{self.key_prefix}{kind}:{{{_tag(workflow)}}}"

    def _status_key(self, status: str) -> str:
        return f"{self.key_prefix}status:{status}"

    @property
    def _created_key(self) -> str:
        return f"{self.key_prefix}created"

    @property
    def _definitions_key(self) -> str:
        return f"{self.key_prefix}definitions"

    # -- connection -------------------------------------------------------------------

    def _make_client(self) -> Any:
        parts = self._parts
        common: dict[str, Any] = {
            "host": parts.hostname or "127.0.0.1",
            "port": parts.port or 6379,
            "username": parts.username or None,
            "password": parts.password or None,
            "ssl": parts.scheme.startswith("rediss"),
            "decode_responses": True,
            "socket_connect_timeout": 5,
        }
        if self.cluster:
            return RedisCluster(**common)
        path = parts.path.strip("/")
        try:
            db = int(path) if path else 0
        except ValueError:
            raise StoreError(f"{self.safe_url!r}: the database must be a number") from None
        return Redis(**common, db=db, retry=Retry(NoBackoff(), 0))

    def _describe(self, exc: BaseException, key: str | None = None) -> StoreError:
        """A StoreError naming the server (and the key) for a client-level error."""
        where = f"Redis at {self.safe_url}" + (f", key {key!r}" if key else "")
        if isinstance(exc, StoreError):
            return exc
        if isinstance(exc, AuthenticationError) or "WRONGPASS" in str(exc) or "NOAUTH" in str(exc):
            return StoreError(f"{where}: authentication failed ({exc})")
        if isinstance(exc, RedisConnectionError | OSError):
            return StoreError(f"{where}: cannot connect ({exc})")
        if "WRONGTYPE" in str(exc):
            return StoreError(f"{where}: a key holds the wrong type of value ({exc})")
        if "DB index is out of range" in str(exc):
            return StoreError(f"{where}: the server has no such database ({exc})")
        return StoreError(f"{where}: {exc}")

    async def open(self) -> None:
        """Connect, check the server's settings and load the scripts. Idempotent."""
        if self._client is None:
            self._client = self._make_client()
        try:
            await self._client.ping()
        except RedisError as exc:
            await self._drop_client()
            raise self._describe(exc) from None
        try:
            info = await self._client.info("server")
        except RedisError:
            info = {}  # servers that do not implement INFO (test doubles)
        if isinstance(info, dict) and "redis_version" not in info:  # a Cluster: per node
            info = next(iter(info.values()), {})
        self.server_version = str(info.get("redis_version", "")) if isinstance(info, dict) else ""
        await self._check_settings()
        await self._check_key_types()
        await self._load_scripts()

    async def _drop_client(self) -> None:
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _check_settings(self) -> None:
        try:
            policy = (await self._client.config_get("maxmemory-policy")).get("maxmemory-policy")
        except RedisError:
            policy = None  # CONFIG is often disabled on managed servers
        if isinstance(policy, dict):  # a Cluster answers per node
            policy = next(iter(policy.values()), None)
        if policy and policy != "noeviction":
            logger.warning(
                "Redis at %s has maxmemory-policy %r: when memory runs out it may evict run "
                "records. Set maxmemory-policy noeviction on a server that holds runs.",
                self.safe_url,
                policy,
            )
        if self.durable_ack == "aof" and not _at_least(self.server_version, (7, 2)):
            raise StoreError(
                f"Redis at {self.safe_url}: durable_ack='aof' needs WAITAOF, which Redis "
                f"7.2 and newer have; this server is {self.server_version or 'unknown'}. "
                "Drop durable_ack and rely on appendfsync always, or upgrade the server."
            )

    async def _check_key_types(self) -> None:
        expected = {
            self._created_key: "zset",
            self._definitions_key: "hash",
            f"{self.key_prefix}expiry": "zset",
        }
        if not self.cluster:
            expected[f"{self.key_prefix}counts"] = "hash"
        expected.update({self._status_key(s.value): "zset" for s in RunStatus})
        for key, kind in expected.items():
            try:
                found = await self._client.type(key)
            except RedisError as exc:
                raise self._describe(exc, key) from None
            if found not in ("none", kind):
                raise StoreError(
                    f"Redis at {self.safe_url}: key {key!r} holds a {found}, not a {kind}; "
                    "another program uses this key prefix. Choose another key_prefix."
                )

    async def _load_scripts(self) -> None:
        for script in SCRIPTS.values():
            try:
                await self._client.script_load(script.source)
            except RedisError as exc:
                raise self._describe(exc) from None

    async def close(self) -> None:
        await self._drop_client()

    @property
    def pipelines(self) -> int:
        """Write pipelines sent so far: concurrent writes share them (group commit)."""
        return self._batcher.pipelines

    async def _send(self, commands: Sequence[Command]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        if self.durable_ack == "aof":
            pipe.execute_command("WAITAOF", 1, 0, 5000)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        if self.durable_ack == "aof":
            local = replies.pop()
            if isinstance(local, Exception) or not local or int(local[0]) < 1:
                raise StoreError(
                    f"Redis at {self.safe_url}: WAITAOF did not confirm the write reached "
                    f"the append-only file ({local!r}); is appendonly enabled?"
                )
        return replies

    def _script(self, name: str, keys: Sequence[str], *args: Any) -> Command:
        return ("EVALSHA", SCRIPTS[name].sha, len(keys), *keys, *args)

    async def _write(self, run_id: str, commands: Sequence[Command]) -> list[Any]:
        """Send one write through the group committer; map refusals to holon errors."""
        replies = await self._batcher.call(commands)
        first = replies[0]
        if isinstance(first, Exception):
            raise self._refusal(run_id, first)
        return replies

    def _refusal(self, run_id: str, exc: Exception) -> Exception:
        message = str(exc)
        if message.startswith("HOLON STALE"):
            current = message.removeprefix("HOLON STALE ").strip()
            return StaleLease(
                f"run {run_id!r}: lease token refused; the current token is {current}",
                run_id=run_id,
            )
        if message.startswith("HOLON SEQ"):
            return SeqConflict(
                f"run {run_id!r}: commit based on an old checkpoint; the store has "
                f"{message.removeprefix('HOLON SEQ ').strip()}",
                run_id=run_id,
            )
        if message.startswith("HOLON NOTFOUND"):
            return RunNotFound(f"no run {run_id!r} in {self.safe_url}", run_id=run_id)
        if message.startswith("HOLON WRONGTYPE"):
            return StoreError(
                f"Redis at {self.safe_url}: {message.removeprefix('HOLON WRONGTYPE ')}",
                run_id=run_id,
            )
        if isinstance(exc, NoScriptError):
            return StoreError(f"Redis at {self.safe_url}: scripts could not be loaded")
        return self._describe(exc, self.run_key(run_id))

    # -- index hints (Cluster only) ------------------------------------------------------

    def _hints(self, run_id: str, status: RunStatus) -> list[Command]:
        """Index entries a Cluster write adds in its own pipeline (never removes)."""
        known = self._known.get(run_id)
        if not self.cluster or known is None:
            return []
        workflow, created = known
        hints: list[Command] = [("ZADD", self._status_key(status.value), created, run_id)]
        if status == RunStatus.QUEUED:
            hints.append(("ZADD", self._index("ready", workflow), created, run_id))
        elif status == RunStatus.RUNNING:
            hints.append(("ZADD", self._index("lease", workflow), "NX", 0, run_id))
        elif status == RunStatus.WAITING:
            hints.append(("ZADD", self._index("timer", workflow), "NX", 0, run_id))
        return hints

    async def _repair(self, run_id: str, fields: dict[str, str | None] | None) -> None:
        """Make a run's claim-index entries match its record (Cluster: hints go stale)."""
        if not self.cluster:
            return
        await self._repair_many([(run_id, fields)])

    async def _repair_many(self, runs: Sequence[tuple[str, dict[str, str | None] | None]]) -> None:
        if not self.cluster or not runs:
            return
        commands: list[Command] = []
        for run_id, fields in runs:
            workflow = (fields or {}).get("wf") or self._known.get(run_id, ("", 0.0))[0]
            if not workflow:
                continue
            wanted = _claim_entries(fields)
            for kind in _CLAIMABLE:
                if kind in wanted:
                    commands.append(("ZADD", self._index(kind, workflow), wanted[kind], run_id))
                else:
                    commands.append(("ZREM", self._index(kind, workflow), run_id))
        if commands:
            await self._pipeline(commands)

    async def _pipeline(self, commands: Sequence[Command]) -> list[Any]:
        try:
            pipe = self._client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            result: list[Any] = await pipe.execute(raise_on_error=False)
            return result
        except RedisError as exc:
            raise self._describe(exc) from None

    # -- runs -------------------------------------------------------------------------

    async def create_run(
        self, record: RunRecord, events: Sequence[NewEvent]
    ) -> tuple[RunRecord, bool]:
        """Store a new run, or return the existing one with that id and `False`."""
        keys = self._run_keys(record.run_id)
        args: list[Any] = [
            self._ip,
            record.run_id,
            record.workflow,
            record.version,
            record.status.value,
            _codec.dump(record.input),
            record.body.model_dump_json(),
            "" if record.wake_at is None else repr(record.wake_at),
            repr(record.created_at),
            repr(record.updated_at),
            self.timeline_cap,
            len(events),
            *_event_args(events),
        ]
        commands = [self._script("create", keys, *args)]
        if self.cluster:
            self._remember(record.run_id, record.workflow, record.created_at)
            commands += [
                ("ZADD", self._created_key, record.created_at, record.run_id),
                ("ZADD", self._index("wf", record.workflow), record.created_at, record.run_id),
                *self._hints(record.run_id, record.status),
            ]
        replies = await self._write(record.run_id, commands)
        created = replies[0] == 1
        stored = await self.load_run(record.run_id)
        assert stored is not None
        if created:
            self.signals.notify(record.run_id)
        return stored, created

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

    def _remember(self, run_id: str, workflow: str, created: float) -> None:
        if len(self._known) > 100_000:
            self._known.clear()
        self._known[run_id] = (workflow, created)

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

    # -- leases -----------------------------------------------------------------------

    async def acquire_lease(
        self, run_id: str, owner: str, ttl: float, now: float
    ) -> LeaseGrant | None:
        """Lease a queued run, or a running one whose lease expired, to `owner`."""
        grants = await self._acquire_many([run_id], owner, ttl, now, timers=False, strict=True)
        return grants[0] if grants else None

    async def _acquire_many(
        self,
        run_ids: Sequence[str],
        owner: str,
        ttl: float,
        now: float,
        *,
        timers: bool,
        strict: bool,
    ) -> list[LeaseGrant]:
        commands: list[Command] = []
        for run_id in run_ids:
            commands.append(
                self._script(
                    "acquire",
                    self._run_keys(run_id),
                    self._ip,
                    run_id,
                    owner,
                    repr(float(ttl)),
                    repr(float(now)),
                    self.lease_clock[0],
                    uuid.uuid4().hex,
                    "1" if timers else "0",
                )
            )
        replies = await self._batcher.call(commands)
        grants: list[LeaseGrant] = []
        refused: list[tuple[str, dict[str, str | None] | None]] = []
        granted_hints: list[Command] = []
        for run_id, reply in zip(run_ids, replies, strict=True):
            if isinstance(reply, Exception):
                if strict:
                    raise self._refusal(run_id, reply)
                refused.append((run_id, None))
                continue
            if reply[0] == 1:
                grants.append(
                    LeaseGrant(run_id=run_id, token=int(reply[1]), recovered=reply[2] == 1)
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

    async def _hint_from_record(self, run_id: str) -> None:
        row = await self._pipeline([("HMGET", self.run_key(run_id), "wf", "st", "ca")])
        wf, st, ca = row[0]
        if wf is None or st is None:
            return
        self._remember(run_id, wf, _float(ca))
        await self._pipeline(self._hints(run_id, RunStatus(st)))

    async def renew_lease(self, run_id: str, token: int, ttl: float, now: float) -> Control | None:
        """Extend the lease; returns the pending control request. Raises `StaleLease`."""
        command = self._script(
            "renew",
            self._run_keys(run_id),
            self._ip,
            run_id,
            str(token),
            repr(float(ttl)),
            repr(float(now)),
            self.lease_clock[0],
        )
        replies = await self._write(run_id, [command])
        return _codec.load_control(replies[0] or None, run_id=run_id)

    async def release_lease(self, run_id: str, token: int) -> None:
        """Drop the lease if `token` still holds it."""
        command = self._script("release", self._run_keys(run_id), self._ip, run_id, str(token))
        replies = await self._write(run_id, [command])
        if self.cluster and isinstance(replies[0], list) and replies[0][0] == "running":
            # Claimable at once: a running run without a lease.
            await self._pipeline([("ZADD", self._index("lease", replies[0][1]), 0, run_id)])
        self.signals.notify(run_id)

    async def claim(
        self, owner: str, workflows: Sequence[str], limit: int, ttl: float, now: float
    ) -> list[LeaseGrant]:
        """Lease up to `limit` runs needing an executor, found through the claim indexes."""
        if not workflows or limit <= 0:
            return []
        if self.completed_ttl is not None:
            await self.purge_expired(now)
        commands = [
            self._script(
                "candidates",
                [self._index(kind, wf) for kind in _CLAIMABLE],
                repr(float(now)),
                self.lease_clock[0],
                limit,
            )
            for wf in workflows
        ]
        replies = await self._pipeline(commands)
        candidates: list[str] = []
        for wf, reply in zip(workflows, replies, strict=True):
            if isinstance(reply, Exception):
                raise self._describe(reply, self._index("ready", wf))
            for group in reply:
                for run_id in group:
                    if run_id not in candidates:
                        candidates.append(run_id)
        grants: list[LeaseGrant] = []
        while candidates and len(grants) < limit:
            take, candidates = candidates[: limit - len(grants)], candidates[limit - len(grants) :]
            grants += await self._acquire_many(take, owner, ttl, now, timers=True, strict=False)
        return grants

    # -- checkpoints --------------------------------------------------------------------

    async def commit(
        self, run_id: str, *, expected_seq: int, token: int | None, checkpoint: Checkpoint
    ) -> Committed:
        """Write a checkpoint in one round trip: fenced, sequence-checked, idempotent."""
        expire_at = ""
        if self.completed_ttl is not None and checkpoint.status == RunStatus.COMPLETED:
            expire_at = repr(checkpoint.at + self.completed_ttl)
        results: list[Any] = []
        for name, value in checkpoint.results.items():
            results += [name, _codec.dump(value)]
        command = self._script(
            "commit",
            self._run_keys(run_id),
            self._ip,
            run_id,
            "" if token is None else str(token),
            expected_seq,
            uuid.uuid4().hex,
            checkpoint.status.value,
            checkpoint.body.model_dump_json(),
            "" if checkpoint.wake_at is None else repr(checkpoint.wake_at),
            repr(checkpoint.at),
            "1" if checkpoint.release_lease else "0",
            "1" if checkpoint.clear_control else "0",
            self.timeline_cap,
            expire_at,
            len(checkpoint.results),
            *results,
            len(checkpoint.events),
            *_event_args(checkpoint.events),
            *_wait_key_args(checkpoint.wait_keys),
        )
        known = run_id in self._known
        hints = self._hints(run_id, checkpoint.status)
        if self.cluster and expire_at:
            hints.append(("ZADD", f"{self.key_prefix}expiry", expire_at, run_id))
        if self.cluster and checkpoint.wait_keys:
            hints += [("ZADD", self._index("waiting", k), 0, run_id) for k in checkpoint.wait_keys]
        replies = await self._write(run_id, [command, *hints])
        seq, event_seq, control, before = replies[0]
        if self.cluster:
            if not known:
                await self._hint_from_record(run_id)
            await self._unindex_waiting(run_id, before, checkpoint.wait_keys or [])
        self.signals.notify(run_id)
        return Committed(
            seq=int(seq),
            event_seq=int(event_seq),
            control=_codec.load_control(control or None, run_id=run_id),
        )

    async def request(self, run_id: str, control: Control) -> RunRecord:
        """Record an operator's pause or stop request; the checkpoint is not touched."""
        command = self._script(
            "request", self._run_keys(run_id), self._ip, run_id, control.model_dump_json()
        )
        await self._write(run_id, [command])
        self.signals.notify(run_id)
        record = await self.load_run(run_id)
        if record is None:
            raise RunNotFound(f"no run {run_id!r} in {self.safe_url}", run_id=run_id)
        return record

    async def quarantine(self, run_id: str, reason: str, at: float) -> None:
        """Mark a run whose record cannot be decoded `failed`, without reading it."""
        command = self._script(
            "quarantine",
            self._run_keys(run_id),
            self._ip,
            run_id,
            quarantined_body(reason).model_dump_json(),
            repr(at),
            _codec.dump({"error": "CorruptRecord", "message": reason}),
            uuid.uuid4().hex,
            self.timeline_cap,
            0,
        )
        hints: list[Command] = []
        if self.cluster:
            hints = [("ZADD", self._status_key(RunStatus.FAILED.value), at, run_id)]
        replies = await self._write(run_id, [command, *hints])
        if self.cluster:
            await self._unindex_waiting(run_id, replies[0], [])
        self.signals.notify(run_id)

    async def _unindex_waiting(
        self, run_id: str, before: Sequence[str], now: Sequence[str]
    ) -> None:
        """Cluster: drop the run from the wait-key indexes it left (after the write)."""
        gone = [k for k in before if k not in now]
        if gone:
            await self._pipeline([("ZREM", self._index("waiting", k), run_id) for k in gone])

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

    # -- housekeeping -------------------------------------------------------------------

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

    async def delete_runs(self, run_ids: Sequence[str]) -> list[str]:
        """Delete the finished runs among `run_ids` (others are left alone); returns the
        ids deleted, in the order given."""
        ids = list(dict.fromkeys(run_ids))
        if not ids:
            return []
        commands = [self._script("delete", self._run_keys(i), self._ip, i, 0) for i in ids]
        replies = await self._batcher.call(commands)
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
                    ("ZREM", self._created_key, run_id),
                    ("ZREM", self._index("wf", wf), run_id),
                    ("ZREM", self._status_key(status), run_id),
                    ("ZREM", f"{self.key_prefix}expiry", run_id),
                    *(("ZREM", self._index("waiting", k), run_id) for k in keys),
                ]
        if cleanup:
            await self._pipeline(cleanup)
        return deleted

    async def purge_expired(self, now: float, limit: int = 1000) -> list[str]:
        """Delete completed runs whose retention (`completed_ttl`) ran out by `now`.

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


# -- decoding ------------------------------------------------------------------------


def _event_args(events: Sequence[NewEvent]) -> list[Any]:
    args: list[Any] = []
    for event in events:
        args += [event.kind, repr(event.at), event.step or "", _codec.dump(event.data)]
    return args


def _wait_key_args(keys: Sequence[str] | None) -> list[Any]:
    if keys is None:
        return [-1]
    for key in keys:
        if not key or "\x1f" in key:
            raise StoreError(f"invalid wait key {key!r}: empty or holds a control character")
    return [len(keys), *keys]


def _float(text: str | None) -> float:
    return float(text) if text else 0.0


def _claim_entries(fields: dict[str, str | None] | None) -> dict[str, float]:
    """The claim indexes a run belongs in, with their scores, from its stored fields."""
    if not fields:
        return {}
    status = fields.get("st")
    if status == "queued":
        return {"ready": _float(fields.get("ca"))}
    if status == "running":
        return {"lease": _float(fields.get("lx"))}
    if status == "waiting" and fields.get("wk"):
        return {"timer": _float(fields.get("wk"))}
    return {}


def _summary(run_id: str, row: Any) -> RunSummary | None:
    if isinstance(row, Exception) or not row or row[2] is None:
        return None
    wf, ver, st, ca, ua = row
    try:
        return RunSummary(
            run_id=run_id,
            workflow=wf or "",
            version=ver or "",
            status=RunStatus(st),
            created_at=_float(ca),
            updated_at=_float(ua),
        )
    except ValueError:
        return None


def _decode(run_id: str, f: dict[str, str], results: dict[str, str]) -> RunRecord:
    def corrupt(detail: str) -> CorruptRecord:
        return CorruptRecord(f"run {run_id!r}: {detail}", run_id=run_id)

    missing = [name for name in ("wf", "ver", "st", "in", "b", "seq", "es", "f") if name not in f]
    if missing:
        raise corrupt(f"stored record lacks {missing}")
    try:
        status = RunStatus(f["st"])
    except ValueError:
        raise corrupt(f"unknown status {f['st']!r}") from None
    try:
        seq, event_seq, fence = int(f["seq"]), int(f["es"]), int(f["f"])
        created, updated = float(f.get("ca", "0")), float(f.get("ua", "0"))
        wake = float(f["wk"]) if f.get("wk") else None
        expires = float(f["lx"]) if f.get("lx") else None
    except ValueError as exc:
        raise corrupt(f"a stored number is invalid ({exc})") from None
    return RunRecord(
        run_id=run_id,
        workflow=f["wf"],
        version=f["ver"],
        status=status,
        input=_codec.load(f["in"], run_id=run_id, what="input"),
        body=_codec.load_body(f["b"], run_id=run_id),
        results={
            name: _codec.load(text, run_id=run_id, what=f"result of {name!r}")
            for name, text in results.items()
        },
        seq=seq,
        event_seq=event_seq,
        control=_codec.load_control(f.get("ctl"), run_id=run_id),
        lease=_codec.load_lease(f.get("own"), fence, expires),
        fence=fence,
        wake_at=wake,
        created_at=created,
        updated_at=updated,
    )


def _at_least(version: str, wanted: tuple[int, int]) -> bool:
    try:
        parts = tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        return False
    return parts >= wanted
