"""Reading a wait record: who may act on it, when it must be looked at, how it is indexed,
and `WaitInfo`, the description `handle.Waiting()` and `runner.Pending()` return."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from holon.stores.base import RunRecord, WaitRecord

__all__ = [
    "WaitInfo",
    "approvals",
    "approvers",
    "can_decide",
    "describe",
    "wait_keys",
    "wake_time",
]


def approvers(wait: WaitRecord) -> list[str]:
    """The identities and `role:` entries that may decide now (escalation included)."""
    listed = list(wait.spec.get("approvers") or [])
    if wait.escalated_at is not None:
        listed += [a for a in wait.spec.get("escalate_to") or [] if a not in listed]
    return listed


def can_decide(wait: WaitRecord, by: str, roles: Iterable[str]) -> bool:
    """Whether `by`, holding `roles`, is listed directly or through a `role:` entry."""
    listed = set(approvers(wait))
    return by in listed or any(f"role:{role}" in listed for role in roles)


def approvals(wait: WaitRecord) -> list[str]:
    """Who approved so far, in order."""
    return [d.by for d in wait.decisions if d.verdict == "approve"]


def wake_time(wait: WaitRecord | None) -> float | None:
    """When a waiting run must be looked at again: its deadline or its escalation."""
    if wait is None:
        return None
    times = [wait.deadline]
    if wait.escalated_at is None:
        times.append(wait.escalate_at)
    present = [t for t in times if t is not None]
    return min(present) if present else None


def wait_keys(wait: WaitRecord) -> list[str]:
    """The index keys of a run waiting here: `approver:<who>` (roles as
    `approver:role:<name>`) for approvals, `event:<name>` for events."""
    if wait.kind == "approval":
        return [f"approver:{a}" for a in dict.fromkeys(approvers(wait))]
    if wait.kind == "event":
        return [f"event:{wait.spec['name']}"]
    return []


@dataclass(frozen=True)
class WaitInfo:
    """What a run waits for, as `handle.Waiting()` and `runner.Pending()` describe it.

    Times are seconds since the epoch, like every time holon stores.
    """

    run_id: str
    workflow: str
    wait_id: str
    """Name it in a decision (`Approve(..., wait_id=...)`) to make sure it answers this
    wait and not a later one."""
    kind: str
    """`approval`, `input`, `event` or `timer`."""
    step: str
    next: str
    question: str | None = None
    payload: Any = None
    digest: str | None = None
    """SHA-256 (hex) of the canonical JSON of `payload`; approve with it."""
    approvers: list[str] = field(default_factory=list)
    approvals_needed: int = 0
    """How many more distinct approvals open the gate."""
    approved_by: list[str] = field(default_factory=list)
    deadline: float | None = None
    escalate_at: float | None = None
    escalated: bool = False
    options: list[Any] | None = None
    event: str | None = None
    match: dict[str, Any] | None = None
    opened_at: float = 0.0
    paused: bool = False
    spec: dict[str, Any] = field(default_factory=dict)
    """The condition's stored description: the settings it was given (those left at
    None, False or empty are not stored)."""


def describe(record: RunRecord) -> WaitInfo | None:
    """The wait of a waiting (or paused mid-wait) run, else None."""
    wait = record.body.wait
    if wait is None or record.status.value not in ("waiting", "paused"):
        return None
    spec = wait.spec
    approved = approvals(wait)
    needed = 0
    if wait.kind == "approval":
        needed = max(0, int(spec.get("min_approvals", 1)) - len(set(approved)))
    return WaitInfo(
        run_id=record.run_id,
        workflow=record.workflow,
        wait_id=wait.wait_id,
        kind=wait.kind,
        step=wait.step,
        next=wait.next,
        question=spec.get("question"),
        payload=spec.get("payload"),
        digest=spec.get("digest"),
        approvers=approvers(wait) if wait.kind == "approval" else [],
        approvals_needed=needed,
        approved_by=approved,
        deadline=wait.deadline,
        escalate_at=wait.escalate_at,
        escalated=wait.escalated_at is not None,
        options=spec.get("options"),
        event=spec.get("name") if wait.kind == "event" else None,
        match=spec.get("match") if wait.kind == "event" else None,
        opened_at=wait.opened_at,
        paused=record.status.value == "paused",
        spec=spec,
    )
