"""Helpers for the tests of waits: a store that makes decisions race on purpose, and
small readers of timelines."""

from __future__ import annotations

from typing import Any

import anyio

from holon import RunHandle, TimelineEvent
from holon.stores.base import RunRecord, Store


class RacingStore:
    """A store whose next `n` reads of a run, once `race(n)` is called, each wait until
    all `n` have read: `n` decisions then hold the same version of the run, and their
    commits race for real (one wins, the others are refused and judge again)."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner
        self._expected = 0
        self._read = 0
        self._all_read = anyio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def race(self, n: int) -> None:
        self._expected, self._read, self._all_read = n, 0, anyio.Event()

    async def load_run(self, run_id: str) -> RunRecord | None:
        record = await self._inner.load_run(run_id)
        if self._read < self._expected:
            self._read += 1
            gate = self._all_read
            if self._read == self._expected:
                self._expected = 0
                gate.set()
            await gate.wait()
        return record


def of_kind(events: list[TimelineEvent], *kinds: str) -> list[TimelineEvent]:
    return [e for e in events if e.kind in kinds]


async def next_event(handle: RunHandle, kind: str, timeout: float = 10) -> TimelineEvent:
    """Wait (on the store's change signals, never sleeping) for a timeline event."""
    with anyio.fail_after(timeout):
        async for event in handle.Watch():
            if event.kind == kind:
                return event
    raise AssertionError(f"run {handle.run_id} ended without a {kind!r} event")
