"""The live feed across processes, on Redis: what a step emits (`ctx.Emit`) in the process
executing its run reaches watchers in other processes (an HTTP server, a CLI) through
Redis pub/sub, on one channel per run (`{prefix}feed:{run_id}`).

Like the feed in one process, nothing is stored: a watcher receives what is emitted while
it listens. Each process publishes what its steps emit and listens, on one connection of
its own, to the channels of the runs it watches; it skips what it published itself (its
own watchers had it already). A Redis Cluster store keeps the feed in its process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from holon.stores.signals import ChangeSignals, Emitted

__all__ = ["RedisFeed"]

logger = logging.getLogger("holon.redis")

OUTBOX = 4096
"""Emitted items waiting to be published; past this many, new ones are dropped (a feed
never holds a step up)."""

_LISTEN_TURN = 0.05
"""Longest the listener waits for a message before it takes new (un)subscriptions."""


class RedisFeed:
    """Relays a store's `ChangeSignals` feed through Redis (see the module docstring).

    Args:
        client: gives the store's Redis client (made when the store opens).
        prefix: the store's key prefix.
    """

    def __init__(self, client: Callable[[], Any], prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self.origin = uuid.uuid4().hex
        """This process's mark on what it publishes."""
        self.signals: ChangeSignals | None = None
        self._outbox: asyncio.Queue[tuple[str, str]] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wanted: dict[str, str] = {}
        """Channels to listen to -> their run."""
        self._listening: set[str] = set()
        self._ready: dict[str, asyncio.Event] = {}
        self._wake = asyncio.Event()
        """Set when the channels wanted change while the listener has none."""

    def channel(self, run_id: str) -> str:
        return f"{self._prefix}feed:{run_id}"

    # -- publishing ------------------------------------------------------------------

    def send(self, run_id: str, item: Emitted) -> None:
        """Publish `item` for the watchers of other processes (soon, in order)."""
        try:
            payload = json.dumps(
                {
                    "origin": self.origin,
                    "seq": item.seq,
                    "kind": item.kind,
                    "at": item.at,
                    "step": item.step,
                    "data": item.data,
                }
            )
        except (TypeError, ValueError):
            logger.debug("run %s: emitted %r is not JSON; kept in this process", run_id, item)
            return
        if self._outbox is None:
            self._outbox = asyncio.Queue(OUTBOX)
            self._tasks.append(asyncio.get_running_loop().create_task(self._publish_forever()))
        with contextlib.suppress(asyncio.QueueFull):
            self._outbox.put_nowait((self.channel(run_id), payload))

    async def _publish_forever(self) -> None:
        assert self._outbox is not None
        while True:
            channel, payload = await self._outbox.get()
            try:
                await self._client().publish(channel, payload)
            except Exception as exc:  # a feed never fails a run: the item is lost
                logger.warning("could not publish to %s: %s", channel, exc)
            finally:
                self._outbox.task_done()

    async def flush(self) -> None:
        """Wait until everything sent so far is published."""
        if self._outbox is not None:
            await self._outbox.join()

    # -- listening -------------------------------------------------------------------

    def listen(self, run_id: str) -> None:
        """Start receiving what other processes emit for `run_id`."""
        channel = self.channel(run_id)
        self._wanted[channel] = run_id
        self._ready.setdefault(channel, asyncio.Event())
        self._wake.set()
        if not any(t.get_name() == "holon-feed-listener" for t in self._tasks if not t.done()):
            task = asyncio.get_running_loop().create_task(
                self._listen_forever(), name="holon-feed-listener"
            )
            self._tasks.append(task)

    def unlisten(self, run_id: str) -> None:
        channel = self.channel(run_id)
        self._wanted.pop(channel, None)
        self._ready.pop(channel, None)

    async def ready(self, run_id: str) -> None:
        """Wait until what other processes emit for `run_id` is being received."""
        event = self._ready.get(self.channel(run_id))
        if event is not None:
            await event.wait()

    async def _listen_forever(self) -> None:
        try:
            await self._listen()
        except Exception as exc:  # the next watch starts a new listener
            logger.warning("the Redis feed stopped listening: %s", exc)
        finally:
            self._listening.clear()

    async def _listen(self) -> None:
        pubsub = self._client().pubsub()
        try:
            while True:
                await self._follow(pubsub)
                if not self._listening:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=_LISTEN_TURN
                )
                if message is not None and message.get("type") == "message":
                    self._deliver(message)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _follow(self, pubsub: Any) -> None:
        """Subscribe to the channels wanted now, and leave the others."""
        wanted = set(self._wanted)
        new, old = wanted - self._listening, self._listening - wanted
        if new:
            await pubsub.subscribe(*sorted(new))
            self._listening |= new
            for channel in new:
                event = self._ready.get(channel)
                if event is not None:
                    event.set()
        if old:
            await pubsub.unsubscribe(*sorted(old))
            self._listening -= old

    def _deliver(self, message: dict[str, Any]) -> None:
        channel = message.get("channel")
        if isinstance(channel, bytes):
            channel = channel.decode()
        run_id = self._wanted.get(str(channel))
        if run_id is None or self.signals is None:
            return
        try:
            fields = json.loads(message["data"])
        except (TypeError, ValueError):
            return
        if fields.get("origin") == self.origin:
            return  # published here: this process's watchers had it already
        item = Emitted(
            run_id, fields["seq"], fields["kind"], fields["at"], fields["step"], fields["data"]
        )
        self.signals.deliver(run_id, item)

    async def close(self) -> None:
        """Stop publishing and listening (what is still in the outbox is dropped)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        self._outbox = None
        self._listening.clear()
