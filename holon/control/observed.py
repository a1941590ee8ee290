"""`ObservedStore`: a store that tells observers what each write put in a timeline.

```py
store = ObservedStore(open_store(url), [notifier.observe, spans.observe])
worker = Worker(steward, store=store)
```

Everything a run does reaches its timeline through a store write: a checkpoint's
events (`commit`), a new run's (`create_run`), a refused decision's (`append_timeline`).
Wrapping the store the executor and the operator write through lets notifications and
telemetry follow runs without the engine knowing of them. Observers are called after
the write succeeded, with the run id and its new events, in the writing task: they
must not block (hand the work to a task of their own) and must not raise (what they
raise is logged and dropped, never the run's failure).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, cast

from holon.stores.base import Checkpoint, Committed, NewEvent, RunRecord, Store

__all__ = ["ObservedStore", "Observer"]

logger = logging.getLogger("holon.observed")

Observer = Callable[[str, Sequence[NewEvent]], None]
"""Called with a run id and the timeline events a write just stored for it."""


class ObservedStore:
    """A store that calls `observers` with the events of each successful write; every
    other operation goes to the store it wraps unchanged."""

    def __init__(self, store: Store, observers: Iterable[Observer] = ()) -> None:
        self.inner = store
        self.observers = list(observers)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"ObservedStore({self.inner!r})"

    @property
    def store(self) -> Store:
        """This object as a `Store` (it answers every operation of one)."""
        return cast(Store, self)

    def _tell(self, run_id: str, events: Sequence[NewEvent]) -> None:
        for observer in self.observers:
            try:
                observer(run_id, events)
            except Exception:
                logger.exception("an observer of run %s failed; the run is unaffected", run_id)

    def commit(
        self, run_id: str, *, expected_seq: int, token: int | None, checkpoint: Checkpoint
    ) -> Awaitable[Committed]:
        pending = self.inner.commit(
            run_id, expected_seq=expected_seq, token=token, checkpoint=checkpoint
        )
        if not checkpoint.events or not self.observers:
            return pending
        return self._committed(pending, run_id, list(checkpoint.events))

    async def _committed(
        self, pending: Awaitable[Committed], run_id: str, events: list[NewEvent]
    ) -> Committed:
        committed = await pending
        self._tell(run_id, events)
        return committed

    async def create_run(
        self, record: RunRecord, events: Sequence[NewEvent]
    ) -> tuple[RunRecord, bool]:
        stored, created = await self.inner.create_run(record, events)
        if created:
            self._tell(stored.run_id, events)
        return stored, created

    async def append_timeline(self, run_id: str, events: Sequence[NewEvent]) -> int:
        seq = await self.inner.append_timeline(run_id, events)
        self._tell(run_id, events)
        return seq
