"""The plumbing of the Redis store: connection, settings checks, keys, pipelines and the
index hints a Cluster needs."""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import replace
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, NoScriptError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError

from holon.errors import RunNotFound, SeqConflict, StaleLease, StoreError, seq_conflict
from holon.stores._codec import MAX_VALUE_BYTES
from holon.stores.base import (
    ChangeSignals,
    RunStatus,
)
from holon.stores.redis_batch import Batcher, Command
from holon.stores.redis_codec import (
    CLAIM_INDEXES,
    URL_OPTIONS,
    LeaseClock,
    _at_least,
    _claim_entries,
    _float,
    _name,
    _tag,
    safe_url,
)
from holon.stores.redis_feed import RedisFeed
from holon.stores.redis_lanes import WAITAOF, Decode, Lane
from holon.stores.redis_scripts import SCRIPTS
from holon.stores.retention import Retention
from holon.stores.timeline_cap import DEFAULT_TIMELINE_CAP, check_timeline_cap

logger = logging.getLogger("holon.stores.redis")

__all__ = ["RedisBase"]


PIPELINE_LANES = 4
"""Connections of its own a store writes on (a run's writes all take the same one)."""

PIPELINE_COMMANDS = 256
"""The most commands one pipeline carries: on our own connections, the most whose
replies are handed out together (the first waits for the last). Through the batcher, a
thousand runs' commits in one pipeline would keep the server busy while this process
waits, then the other way round; in pipelines of a few hundred, the server works through
one while this process prepares the next (about 5 % more steps a second for 1,000 runs,
in the drain of `benchmarks/drain_redis.py`, than with 2,000)."""


class RedisBase:
    """Connection, keys and plumbing shared by the Redis store's parts."""

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "",
        lease_clock: LeaseClock | None = None,
        timeline_cap: int | None = None,
        completed_ttl: float | None = None,
        retention: Retention | None = None,
        durable_ack: Literal["aof"] | None = None,
        client: Any = None,
        max_value_bytes: int | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "redis+cluster", "rediss+cluster"):
            raise StoreError(f"not a Redis URL: {safe_url(url)!r}")
        self.url = url
        self.safe_url = safe_url(url)
        self.cluster = parts.scheme.endswith("+cluster")
        options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(options) - URL_OPTIONS
        if unknown:
            raise StoreError(f"{self.safe_url!r}: unknown option(s) {sorted(unknown)}")
        clock = lease_clock or options.get("lease_clock", "server")
        if clock not in ("server", "caller"):
            raise StoreError(f"{self.safe_url!r}: lease_clock must be 'server' or 'caller'")
        self.lease_clock: LeaseClock = "server" if clock == "server" else "caller"
        self.timeline_cap = check_timeline_cap(
            timeline_cap
            if timeline_cap is not None
            else options.get("timeline_cap", DEFAULT_TIMELINE_CAP),
            self.safe_url,
        )
        try:
            kept = retention or Retention.from_options(options, self.safe_url)
            if completed_ttl is not None:
                kept = replace(kept, completed=completed_ttl)
        except ValueError as exc:
            raise StoreError(str(exc)) from None
        self.retention = kept
        """How long finished runs are kept, per final status (`purge_expired`)."""
        ack = durable_ack or options.get("durable_ack")
        if ack not in (None, "", "aof"):
            raise StoreError(f"{self.safe_url!r}: durable_ack must be 'aof' when given")
        self.durable_ack = "aof" if ack == "aof" else None
        self.key_prefix = key_prefix or "holon:"
        self.max_value_bytes = max_value_bytes or MAX_VALUE_BYTES
        """A stored value larger than this is read as a corrupt record."""
        self.signals = ChangeSignals()
        self._feed: RedisFeed | None = None
        if not self.cluster:  # a Cluster keeps the feed in its process
            self._feed = RedisFeed(lambda: self._client, self.key_prefix)
            self._feed.signals = self.signals
            self.signals.relay = self._feed
        self.commit_waits = True
        self.server_version = ""
        self._parts = parts
        self._client: Any = client
        self._own_client = client is None
        self._direct = client is None and not self.cluster
        """Write on pipelined connections of our own (a real server, not a Cluster)."""
        self._lanes = (
            [
                Lane(
                    self._open_wire,
                    self._describe,
                    [("SCRIPT", "LOAD", script.source) for script in SCRIPTS.values()],
                    max_batch=PIPELINE_COMMANDS,
                    check_ack=self._ack_error if self.durable_ack == "aof" else None,
                )
                for _ in range(PIPELINE_LANES)
            ]
            if self._direct
            else []
        )
        self._next_lane = itertools.count()
        self._keys: dict[str, tuple[str, str, str, str, str]] = {}
        self._ids = itertools.count()
        self._id_base = uuid.uuid4().hex[:12]
        self._ip = "" if self.cluster else self.key_prefix
        self._known: dict[str, tuple[str, str, float]] = {}
        """Cluster: workflow, current version and creation time of runs seen lately,
        for index hints."""
        # A Cluster, or a client handed in: one pipeline at a time, through the client.
        self._batcher = Batcher(
            self._send, self._load_scripts, self._describe, max_batch=PIPELINE_COMMANDS
        )

    # -- keys -----------------------------------------------------------------------

    def run_key(self, run_id: str) -> str:
        """The key of a run's hash; its results and timeline add `:r` and `:t`."""
        if not run_id:
            raise StoreError("a run id must not be empty")
        return f"{self.key_prefix}run:{{{_tag(run_id)}}}"

    def _run_keys(self, run_id: str) -> tuple[str, str, str, str, str]:
        """The run's hash, body, long input, results and timeline keys (one hash tag)."""
        keys = self._keys.get(run_id)
        if keys is None:
            # Run ids travel in scripts' packed headers: refused here if they could not.
            key = self.run_key(_name(run_id, "run id"))
            keys = (key, f"{key}:b", f"{key}:i", f"{key}:r", f"{key}:t")
            if len(self._keys) >= 10_000:
                self._keys.clear()
            self._keys[run_id] = keys
        return keys

    def _index(self, kind: str, workflow: str) -> str:
        return f"{self.key_prefix}{kind}:{{{_tag(workflow)}}}"

    def _claim_index(self, kind: str, workflow: str, version: str) -> str:
        """A claim index (`ready`, `lease`, `timer`) of a workflow's runs on one version
        (the same hash tag as the workflow's other indexes)."""
        return f"{self._index(kind, workflow)}@{version}"

    def _versions_key(self, workflow: str) -> str:
        """The set of versions a workflow's runs are on (or were)."""
        return self._index("versions", workflow)

    def _status_key(self, workflow: str, status: str) -> str:
        """The index of one workflow's runs in one status."""
        return f"{self._index('status', workflow)}:{status}"

    @property
    def _workflows_key(self) -> str:
        return f"{self.key_prefix}workflows"

    @property
    def _schedules_key(self) -> str:
        """The set of the names of the schedules kept."""
        return f"{self.key_prefix}schedules"

    def _schedule_key(self, name: str) -> str:
        """A schedule: a hash of its fields, JSON each."""
        return f"{self.key_prefix}schedule:{{{_tag(name)}}}"

    @property
    def _workers_key(self) -> str:
        """The hash of live executors: name -> JSON of their info and expiry."""
        return f"{self.key_prefix}workers"

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
            # The store's own connections read RESP2 (`redis_resp`); redis-py 8 would
            # otherwise switch the connections it makes for them to RESP3.
            "protocol": 2,
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
            await self._connect_and_check()
        except BaseException:
            await self._drop_client()
            raise

    async def _connect_and_check(self) -> None:
        try:
            await self._client.ping()
        except RedisError as exc:
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
        closed = StoreError(f"Redis store {self.safe_url} was closed before the write was answered")
        for lane in self._lanes:
            lane.close(closed)
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
            self._definitions_key: "hash",
            f"{self.key_prefix}expiry": "zset",
        }
        if not self.cluster:
            expected[f"{self.key_prefix}counts"] = "hash"
        expected[self._workflows_key] = "set"
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
        if self._feed is not None:
            await self._feed.close()
        await self._drop_client()

    @property
    def completed_ttl(self) -> float | None:
        """Seconds a `completed` run is kept (`retention.completed`); None: for ever."""
        return self.retention.keep_for(RunStatus.COMPLETED)

    @property
    def pipelines(self) -> int:
        """Write pipelines answered so far: concurrent writes share them (group commit)."""
        return self._batcher.pipelines + sum(lane.pipelines for lane in self._lanes)

    def _submit(
        self, commands: Sequence[Command], key: str | None = None, decode: Decode | None = None
    ) -> Awaitable[Any]:
        """Send `commands` in one pipeline, shared with other writes; the awaitable gives
        their replies, or what `decode(key, replies, first)` makes of them.

        Writes with the same `key` (a run's id) are applied in the order they were made,
        even one whose writer stopped waiting: on our own connections they all take the
        same lane, and the batcher keeps that order itself."""
        lanes = self._lanes
        if lanes:
            number = hash(key) if key is not None else next(self._next_lane)
            return lanes[number % len(lanes)].call(commands, key, decode)
        if decode is None:
            return self._batcher.call(commands, key)
        assert key is not None
        return self._batcher.call(commands, key, decode)

    async def _open_wire(self) -> asyncio.StreamWriter:
        """A new connection for a lane (authenticated, on our database): its writer,
        whose transport the lane writes to and reads from directly."""
        if self._client is None:
            raise StoreError(f"Redis store {self.safe_url} is not open (call open() first)")
        # redis-py opens it (TLS, authentication, database, client name); the lane then
        # owns it, and the client's connection object lets go of it. (The writer is
        # kept: dropping it would close the connection.)
        connection = self._client.connection_pool.make_connection()
        await connection.connect()
        writer: asyncio.StreamWriter = connection._writer
        connection._reader = connection._writer = None
        return writer

    def _ack_error(self, reply: Any) -> StoreError | None:
        """The error for a `WAITAOF` reply that does not confirm the append-only file."""
        if isinstance(reply, Exception) or not reply or int(reply[0]) < 1:
            return StoreError(
                f"Redis at {self.safe_url}: WAITAOF did not confirm the write reached "
                f"the append-only file ({reply!r}); is appendonly enabled?"
            )
        return None

    async def _send(self, commands: Sequence[Command]) -> list[Any]:
        """Send one batch as a client pipeline; errors come back in place of replies."""
        if self.durable_ack == "aof":
            commands = [*commands, WAITAOF]
        pipe = self._client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        try:
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        except UnicodeDecodeError:
            # The replies after the undecodable one may still be unread on the
            # connection (redis-py 8 keeps it): drop it, or the next command would read
            # them as its own.
            pool = getattr(self._client, "connection_pool", None)
            if pool is not None:
                await pool.disconnect()
            raise
        if self.durable_ack == "aof":
            error = self._ack_error(replies.pop())
            if error is not None:
                raise error
        return replies

    def _request_id(self) -> str:
        """A unique id for one write, so that sending it again is recognised."""
        return f"{self._id_base}{next(self._ids):x}"

    def _script(self, name: str, keys: Sequence[str], *args: Any) -> Command:
        return ("EVALSHA", SCRIPTS[name].sha, len(keys), *keys, *args)

    async def _write(self, run_id: str, commands: Sequence[Command]) -> list[Any]:
        """Send one write through the group committer; map refusals to holon errors."""
        replies: list[Any] = await self._submit(commands, run_id)
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
            stored, _, expected = message.removeprefix("HOLON SEQ ").strip().partition(" ")
            try:
                return seq_conflict(run_id, int(expected), int(stored))
            except ValueError:
                return SeqConflict(f"run {run_id!r}: {message}", run_id=run_id)
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
        workflow, version, created = known
        hints: list[Command] = [("ZADD", self._status_key(workflow, status.value), created, run_id)]
        if status == RunStatus.QUEUED:
            hints.append(("ZADD", self._claim_index("ready", workflow, version), created, run_id))
        elif status == RunStatus.RUNNING:
            hints.append(("ZADD", self._claim_index("lease", workflow, version), "NX", 0, run_id))
        elif status == RunStatus.WAITING:
            hints.append(("ZADD", self._claim_index("timer", workflow, version), "NX", 0, run_id))
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
            known = self._known.get(run_id, ("", "", 0.0))
            workflow = (fields or {}).get("wf") or known[0]
            version = (fields or {}).get("av") or (fields or {}).get("ver") or known[1]
            if not workflow:
                continue
            wanted = _claim_entries(fields)
            for kind in CLAIM_INDEXES:
                key = self._claim_index(kind, workflow, version)
                if kind in wanted:
                    commands.append(("ZADD", key, wanted[kind], run_id))
                else:
                    commands.append(("ZREM", key, run_id))
        if commands:
            await self._pipeline(commands)

    async def _pipeline(self, commands: Sequence[Command]) -> list[Any]:
        """Send idempotent commands (reads, index upkeep) through the batcher, which sends
        them again after a dropped connection or a `NOSCRIPT` reply."""
        if not commands:
            return []  # a pipeline of nothing would get no reply to wait for
        if self._client is None:
            raise StoreError(f"Redis store {self.safe_url} is not open (call open() first)")
        replies: list[Any] = await self._submit(commands)
        return replies

    def _remember(self, run_id: str, workflow: str, version: str, created: float) -> None:
        if len(self._known) > 100_000:
            self._known.clear()
        self._known[run_id] = (workflow, version, created)

    async def _hint_from_record(self, run_id: str) -> None:
        row = await self._pipeline([("HMGET", self.run_key(run_id), "wf", "st", "ca", "ver", "av")])
        if isinstance(row[0], Exception):  # fields that are not text: no hint to give
            return
        wf, st, ca, ver, av = row[0]
        if wf is None or st is None:
            return
        self._remember(run_id, wf, av or ver or "", _float(ca))
        await self._pipeline(self._hints(run_id, RunStatus(st)))
