"""Events sent before their run waits for them: kept in an inbox, delivered when the
wait opens.

An event sent to one run that does not wait for it (yet) is kept in the run's inbox
(`run:<id>`); an event broadcast to the runs waiting on its name can also be kept in the
event's inbox (`event:<name>`) for runs that start waiting later. Kept events expire
(`KEEP_EVENTS_FOR` by default), an inbox holds a bounded number of them, and each is
delivered to a run once (by its `event_id`, which every kept event has).

Neither side can miss the other: the sender keeps the event and then tries to deliver it
again, and the executor of a run that opens an event wait commits the wait and then looks
in the inboxes. When both deliver, the run records the event once (its `event_id`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from holon.clock import Clock
from holon.errors import InboxFull
from holon.runtime.compare_and_set import compare_and_set
from holon.runtime.decisions import EventDelivery, deliver
from holon.stores.base import Checkpoint, RunRecord, RunStatus, Store

__all__ = [
    "KEEP_EVENTS_FOR",
    "KEPT_PER_EVENT",
    "KEPT_PER_RUN",
    "KeptEvent",
    "check_keep_for",
    "event_inbox",
    "keep_broadcast",
    "keep_for_run",
    "new_event_id",
    "run_inbox",
    "take_kept_event",
    "waits_for_event",
]

KEEP_EVENTS_FOR = 3600.0
"""Seconds an event sent to a run that does not wait for it yet is kept by default."""

KEPT_PER_RUN = 100
"""The most events kept for one run at once; one more is refused (`NotWaiting`)."""

KEPT_PER_EVENT = 1000
"""The most events of one name kept for runs that start waiting later."""


def run_inbox(run_id: str) -> str:
    return f"run:{run_id}"


def event_inbox(name: str) -> str:
    return f"event:{name}"


def new_event_id() -> str:
    """An id for an event sent without one: a kept event needs one to be delivered once."""
    return f"kept-{uuid.uuid4().hex}"


@dataclass(frozen=True)
class KeptEvent:
    """An event in an inbox, as stored (`document`) and as read back (`from_document`)."""

    event_id: str
    name: str
    payload: Any

    def document(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "name": self.name, "payload": self.payload}

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> KeptEvent:
        return cls(str(document["event_id"]), str(document["name"]), document.get("payload"))


def waits_for_event(record: RunRecord) -> str | None:
    """The name of the event the run waits for, or None."""
    wait = record.body.wait
    if record.status != RunStatus.WAITING or wait is None or wait.kind != "event":
        return None
    name = wait.spec.get("name")
    return name if isinstance(name, str) else None


async def take_kept_event(store: Store, clock: Clock, run_id: str) -> RunRecord | None:
    """When run `run_id` waits for an event that was kept for it (in its own inbox, then
    in the event's), deliver the oldest that matches its wait. Returns the run's record
    after a delivery, None when there was none to make."""
    record = await store.load_run(run_id)
    if record is None or (name := waits_for_event(record)) is None:
        return None
    now = clock.now()
    own = [KeptEvent.from_document(d) for d in await store.kept_events(run_inbox(run_id), now)]
    for event in own:
        if event.event_id in record.body.events_seen:
            await store.drop_kept_event(run_inbox(run_id), event.event_id)  # had it already
    candidates = [e for e in own if e.name == name and e.event_id not in record.body.events_seen]
    candidates += [
        KeptEvent.from_document(d) for d in await store.kept_events(event_inbox(name), now)
    ]
    for event in candidates:
        delivered = await _deliver(store, clock, run_id, event)
        if delivered is not None:
            if event in own:
                await store.drop_kept_event(run_inbox(run_id), event.event_id)
            return delivered
    return None


async def _deliver(store: Store, clock: Clock, run_id: str, event: KeptEvent) -> RunRecord | None:
    """Deliver `event` if the run (as it is now) waits for it and has not had it."""
    taken = False

    def decide(record: RunRecord) -> Checkpoint | None:
        nonlocal taken
        delivery = EventDelivery(name=event.name, payload=event.payload, event_id=event.event_id)
        outcome = deliver(record, delivery, clock.now())
        taken = outcome.checkpoint is not None
        return outcome.checkpoint

    record = await compare_and_set(store, run_id, decide)
    return record if taken else None


def check_keep_for(keep_for: float | None) -> None:
    if keep_for is not None and (
        isinstance(keep_for, bool) or not isinstance(keep_for, (int, float)) or keep_for <= 0
    ):
        raise TypeError(f"keep_for is a number of seconds above 0 (or None), got {keep_for!r}")


async def keep_for_run(
    store: Store, clock: Clock, run_id: str, event: KeptEvent, keep_for: float
) -> None:
    """Keep `event` in run `run_id`'s inbox for `keep_for` seconds; `InboxFull` when it
    holds `KEPT_PER_RUN` already."""
    now = clock.now()
    kept = await store.keep_event(
        run_inbox(run_id),
        event.event_id,
        event.document(),
        expires_at=now + keep_for,
        most=KEPT_PER_RUN,
        now=now,
    )
    if not kept:
        raise InboxFull(
            f"run {run_id!r} does not wait for event {event.name!r}, and its inbox of "
            f"events sent before their wait is full ({KEPT_PER_RUN} kept)",
            run_id=run_id,
        )


async def keep_broadcast(store: Store, clock: Clock, event: KeptEvent, keep_for: float) -> None:
    """Keep a broadcast `event` in its name's inbox for the runs that wait for it in the
    next `keep_for` seconds; `InboxFull` when `KEPT_PER_EVENT` of that name are kept."""
    now = clock.now()
    kept = await store.keep_event(
        event_inbox(event.name),
        event.event_id,
        event.document(),
        expires_at=now + keep_for,
        most=KEPT_PER_EVENT,
        now=now,
    )
    if not kept:
        raise InboxFull(
            f"event {event.name!r} was not kept for runs that wait later: {KEPT_PER_EVENT} "
            "events of that name are kept already"
        )
