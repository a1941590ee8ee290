"""In-process signals of a store: wake-ups for readers waiting on a run to change, and
the live feed of what running steps emit (`ctx.Emit`), which is never stored."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Protocol

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = ["ChangeSignals", "Emitted", "FeedRelay"]


class FeedRelay(Protocol):
    """Carries a store's feed between processes (`holon.stores.redis_feed.RedisFeed`)."""

    def send(self, run_id: str, item: Emitted) -> None: ...

    def listen(self, run_id: str) -> None: ...

    def unlisten(self, run_id: str) -> None: ...

    async def ready(self, run_id: str) -> None: ...

    async def flush(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Emitted:
    """What a running step sent to the run's watchers with `ctx.Emit(kind, data)`:
    progress or model tokens, never stored (the step's checkpoint holds its result).

    Read like a `TimelineEvent` (`run_id`, `seq`, `kind`, `at`, `step`, `data`), so a
    watcher handles both alike; `seq` is that of the last timeline event before it
    (emitted items are not numbered: an HTTP stream resumes from timeline events).
    """

    run_id: str
    seq: int
    kind: str
    at: float
    step: str | None
    data: Any


class ChangeSignals:
    """In-process wake-ups for readers waiting on a run to change, and the live feed of
    what running steps emit.

    Stores call `notify(run_id)` after every write. Writes by other processes are not
    signalled, so waiters pass a timeout and read the store again when it runs out.

    `publish(run_id, item)` hands an `Emitted` item to every `subscribe(run_id)`
    stream of this process at once, in order, without storing it: the seam through
    which `RunHandle.Watch()` (and an HTTP event stream built on it) sees a step's
    `ctx.Emit` while the step runs. A subscriber that falls `FEED_BUFFER` items behind
    loses the newest ones, never holding up the step. A `relay` (the Redis store's)
    carries the feed to and from other processes.
    """

    FEED_BUFFER = 1024

    def __init__(self, relay: FeedRelay | None = None) -> None:
        self._events: dict[str, anyio.Event] = {}
        self.relay = relay
        """Carries the feed to and from other processes (the Redis store's), or None."""
        self._feeds: dict[
            str, dict[MemoryObjectReceiveStream[Emitted], MemoryObjectSendStream[Emitted]]
        ] = {}

    def subscribe(self, run_id: str) -> MemoryObjectReceiveStream[Emitted]:
        """A stream of what `run_id`'s steps emit from now on in this process; give it
        to `unsubscribe` when done."""
        send, receive = anyio.create_memory_object_stream[Emitted](self.FEED_BUFFER)
        feeds = self._feeds.setdefault(run_id, {})
        if not feeds and self.relay is not None:
            self.relay.listen(run_id)
        feeds[receive] = send
        return receive

    def unsubscribe(self, run_id: str, feed: MemoryObjectReceiveStream[Emitted]) -> None:
        """Stop feeding `feed` (made by `subscribe`) and close it."""
        feeds = self._feeds.get(run_id, {})
        send = feeds.pop(feed, None)
        if send is not None:
            send.close()
        if not feeds:
            self._feeds.pop(run_id, None)
            if self.relay is not None:
                self.relay.unlisten(run_id)
        feed.close()

    def publish(self, run_id: str, item: Emitted) -> None:
        """Give `item` to every live subscriber of `run_id`, here and (with a relay) in
        other processes."""
        if self.relay is not None:
            self.relay.send(run_id, item)
        self.deliver(run_id, item)

    async def ready(self, run_id: str) -> None:
        """Wait until items other processes emit for `run_id` reach this process's
        subscribers (at once without a relay)."""
        if self.relay is not None and run_id in self._feeds:
            await self.relay.ready(run_id)

    async def flush(self) -> None:
        """Wait until what was published here has left for other processes."""
        if self.relay is not None:
            await self.relay.flush()

    def deliver(self, run_id: str, item: Emitted) -> None:
        """Give `item` to the subscribers of `run_id` in this process."""
        feeds = self._feeds.get(run_id)
        if not feeds:
            return
        for send in feeds.values():
            # A slow watcher misses what it cannot keep up with.
            with contextlib.suppress(anyio.WouldBlock):
                send.send_nowait(item)
        self.notify(run_id)  # wakes the watchers waiting for something new

    def notify(self, run_id: str) -> None:
        event = self._events.pop(run_id, None)
        if event is not None:
            event.set()

    def event(self, run_id: str) -> anyio.Event:
        """The event the next write to `run_id` sets. Take it *before* reading the run,
        then wait on it, so a write between the read and the wait is not missed."""
        event = self._events.get(run_id)
        if event is None:
            event = self._events[run_id] = anyio.Event()
        return event

    @staticmethod
    async def wait(event: anyio.Event, timeout: float) -> None:
        with anyio.move_on_after(timeout):
            await event.wait()
