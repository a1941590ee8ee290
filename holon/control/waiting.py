"""Reaching runs through the store's index of waits: deliver an event to every run
waiting on it, and list the approvals an identity can act on.

`WorkflowRunner` and `Client` both offer these verbs (`Send`, `Pending`); they are here
once, written against the store and the operator alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from holon.control.operator import Operator
from holon.errors import DecisionConflict, NotWaiting, RunNotFound
from holon.runtime.inbox import new_event_id
from holon.runtime.waits import WaitInfo, can_decide, describe
from holon.stores.base import Page, RunRecord, RunStatus, Store

__all__ = ["pending_approvals", "send_event"]


async def send_event(
    operator: Operator,
    event: str,
    payload: Any,
    event_id: str | None,
    *,
    keep_for: float | None = None,
    on_queued: Callable[[str], None] | None = None,
) -> list[str]:
    """Deliver `event` to every run waiting on it with a matching `match`; returns the
    ids of the runs that have it (`on_queued` is told of each that became ready).

    Each run records the delivery once per `event_id`, so sending again is safe. Runs
    are found through the store's index of waiting runs, a page at a time. With
    `keep_for` (seconds) the event is also kept that long for runs that start waiting
    on it later.
    """
    if keep_for is not None:
        event_id = event_id or new_event_id()
        # Kept before the waiting runs are looked up: a run that opens its wait in
        # between finds it in the inbox, so none is missed.
        await operator.keep(event, payload, event_id, keep_for)
    reached: list[str] = []
    cursor: str | None = None
    while True:
        page = await operator.store.find_waiting(f"event:{event}", limit=100, cursor=cursor)
        for run_id in page.items:
            try:
                record = await operator.send(run_id, name=event, payload=payload, event_id=event_id)
            except (NotWaiting, DecisionConflict, RunNotFound):
                continue  # the index is a hint: this run waits for something else now
            reached.append(run_id)
            if record.status == RunStatus.QUEUED and on_queued is not None:
                on_queued(run_id)
        if page.next_cursor is None:
            return reached
        cursor = page.next_cursor


async def pending_approvals(
    store: Store,
    approver: str,
    roles: Iterable[str] = (),
    *,
    limit: int = 100,
    cursor: str | None = None,
) -> Page[WaitInfo]:
    """The approvals `approver` (holding `roles`) can act on now, in run-id order;
    pass `page.next_cursor` back for the next page.

    Gates the identity already decided on, or may not approve (it started the run and
    self-approval is forbidden), are left out.
    """
    if not isinstance(approver, str) or not approver:
        raise ValueError(f"Pending(approver=...) takes an identity, got {approver!r}")
    if limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    held = frozenset(roles)
    keys = [f"approver:{approver}", *(f"approver:role:{r}" for r in sorted(held))]
    found: list[WaitInfo] = []
    after = cursor
    while True:
        pages = [await store.find_waiting(k, limit=limit, cursor=after) for k in keys]
        more = [p.items[-1] for p in pages if p.next_cursor is not None and p.items]
        bound = min(more) if more else None
        candidates = sorted({i for p in pages for i in p.items if bound is None or i <= bound})
        for position, run_id in enumerate(candidates):
            record = await store.load_run(run_id)
            info = describe(record) if record is not None else None
            if record is not None and info is not None and _can_act(record, approver, held):
                found.append(info)
            if len(found) == limit:
                rest = position + 1 < len(candidates) or bound is not None
                return Page(items=found, next_cursor=run_id if rest else None)
        if bound is None:
            return Page(items=found)
        after = bound


def _can_act(record: RunRecord, approver: str, roles: frozenset[str]) -> bool:
    wait = record.body.wait
    if record.status != RunStatus.WAITING or wait is None or wait.kind != "approval":
        return False
    if not can_decide(wait, approver, roles):
        return False
    if any(d.by == approver for d in wait.decisions):
        return False
    return not (wait.spec.get("forbid_self_approval") and record.body.started_by == approver)
