"""`RunWatch`: a run's events as they happen, for `RunHandle.Watch()`.

Two sources are merged, each in its own order: the run's timeline, read from the store
(so a watcher in any process sees every checkpointed event), and what the run's steps
send with `ctx.Emit(kind, data)` (`Emitted`), which is never stored and reaches the
watchers through the store's `ChangeSignals` feed: in the process executing the run,
and on a Redis store in other processes too (`holon.stores.redis_feed`).

An HTTP event stream (server-sent events) is one loop over a `RunWatch`: send each
`TimelineEvent` as a timeline event (its `seq` as the SSE id, so a client that
reconnects passes it back as `after`) and each `Emitted` as a live event. The watch
subscribes to the feed when it is made, so nothing emitted after `Watch()` returned
is missed; `aclose()` (or the end of the run) unsubscribes.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, Awaitable, Callable
from types import TracebackType
from typing import Any, Generic, TypeVar

import anyio

from holon.stores.base import Emitted, RunProgress, Store, TimelineEvent

__all__ = ["RunWatch"]


ItemT = TypeVar("ItemT", TimelineEvent, "TimelineEvent | Emitted")


class RunWatch(Generic[ItemT]):
    """An async iterator of a run's `TimelineEvent`s and (unless made with
    `emitted=False`) `Emitted` items; it ends after the events of a terminal status.

    Args:
        store: the run's store.
        run_id: the run.
        after: the timeline sequence number to start after.
        timeout: bounds the whole watch (`TimeoutError`); None waits as long as the
            run lasts.
        poll_interval: seconds between reads of the store (other processes' writes
            are not signalled here).
        progress: reads the run's status and sequence numbers.
        emitted: include what steps emit (`Emitted`), not only the timeline.
    """

    def __init__(
        self,
        store: Store,
        run_id: str,
        *,
        after: int,
        timeout: float | None,
        poll_interval: float,
        progress: Callable[[], Awaitable[RunProgress]],
        emitted: bool = True,
    ) -> None:
        self._store = store
        self.run_id = run_id
        self._feed = store.signals.subscribe(run_id) if emitted else None
        self._after = after
        self._timeout = timeout
        self._poll = poll_interval
        self._progress = progress
        self._items = self._watch()

    async def ready(self) -> None:
        """Wait until what steps emit in other processes reaches this watch (a Redis
        store relays it; other stores keep it in the executing process)."""
        if self._feed is not None:
            await self._store.signals.ready(self.run_id)

    def __aiter__(self) -> RunWatch[ItemT]:
        return self

    async def __anext__(self) -> ItemT:
        item: Any = await self._items.__anext__()
        return item  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        """Stop watching (unsubscribes from the feed)."""
        await self._items.aclose()
        self._unsubscribe()

    async def __aenter__(self) -> RunWatch[ItemT]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        self._unsubscribe()  # a watch dropped before its end lets go of the feed

    def _unsubscribe(self) -> None:
        if self._feed is not None:
            self._store.signals.unsubscribe(self.run_id, self._feed)
            self._feed = None

    def _emitted(self) -> list[Emitted]:
        items: list[Emitted] = []
        feed = self._feed
        while feed is not None:
            try:
                items.append(feed.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
        return items

    async def _watch(self) -> AsyncGenerator[TimelineEvent | Emitted, None]:
        store = self._store
        signals = store.signals
        deadline = math.inf if self._timeout is None else anyio.current_time() + self._timeout
        seen = self._after
        try:
            while True:
                change = signals.event(self.run_id)
                live = self._emitted()
                for item in live:
                    yield item
                events = await store.timeline(self.run_id, seen)
                for event in events:
                    seen = event.seq
                    yield event
                if events or live:
                    continue
                progress = await self._progress()
                if progress.status.terminal and progress.event_seq <= seen:
                    for item in self._emitted():
                        yield item
                    return
                remaining = deadline - anyio.current_time()
                if remaining <= 0:
                    raise TimeoutError(f"Watch of run {self.run_id!r} timed out")
                await signals.wait(change, min(self._poll, remaining))
        finally:
            self._unsubscribe()
