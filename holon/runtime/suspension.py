"""Halting a run on a wait: the checkpoint that opens the wait record and leaves the run
`waiting`, its lease released (a waiting run holds no task and no lease)."""

from __future__ import annotations

from typing import Any

from holon._json import to_json_value
from holon.definition.conditions import wait_kind
from holon.definition.directives import Wait
from holon.runtime.execution import Execution, next_step
from holon.runtime.transitions import Transitions
from holon.runtime.waits import wait_keys, wake_time
from holon.stores.base import Checkpoint, NewEvent, RunStatus, WaitRecord, evolve

__all__ = ["Suspender"]


def _unset(value: Any) -> bool:
    """None, False or an empty list or object: a wait condition's setting left alone."""
    return value is None or value is False or (isinstance(value, (list, dict)) and not value)


class Suspender:
    """Opens the waits that steps return."""

    def __init__(self, transitions: Transitions) -> None:
        self.transitions = transitions

    def checkpoint(
        self,
        execution: Execution,
        step: str,
        directive: Wait,
        occurrence: int,
        *,
        events: list[NewEvent],
        results: dict[str, Any],
        update: dict[str, Any] | None = None,
        wait_id: str | None = None,
    ) -> Checkpoint:
        """The checkpoint that halts the run on the wait `step` returned.

        Raises `UnknownStepError` when the wait names a step the flow does not have,
        and `StepOutputError` when its condition cannot be stored, before anything is
        written. `wait_id` names the wait (default `<step>#<occurrence>`).
        """
        wait = self._open(execution, step, directive, occurrence, wait_id)
        transitions = self.transitions
        opened = transitions.event(
            "waiting",
            step,
            at=wait.opened_at,
            wait_id=wait.wait_id,
            wait_kind=wait.kind,
            next=wait.next,
            **wait.spec,
        )
        changes = {**(update or {}), "wait": wait, "cursor": transitions.cursor_at(wait.next)}
        return Checkpoint(
            status=RunStatus.WAITING,
            body=evolve(execution.body, changes),
            at=wait.opened_at,
            results=results,
            events=[*events, opened],
            release_lease=True,
            wake_at=wake_time(wait),
            wait_keys=wait_keys(wait),
        )

    def _open(
        self, execution: Execution, step: str, wait: Wait, occurrence: int, wait_id: str | None
    ) -> WaitRecord:
        workflow = execution.workflow
        for target, how in (
            (wait.next, "waits, then goes to"),
            (wait.on_reject, "waits with on_reject="),
            (wait.on_timeout, "waits with on_timeout="),
        ):
            if target is not None:
                next_step(workflow, step, target, how)
        spec = to_json_value(
            wait.condition.spec(), what="wait condition", run_id=execution.run_id, step=step
        )
        if not isinstance(spec, dict):
            raise TypeError(f"wait condition of step {step!r} described itself as {spec!r}")
        # Settings left unset are not stored (readers default them): a waiting run's
        # record and its `waiting` event stay small, and there may be millions of them.
        spec = {k: v for k, v in spec.items() if not _unset(v)}
        now = self.transitions.clock.now()
        return WaitRecord(
            wait_id=wait_id or f"{step}#{occurrence}",
            kind=wait_kind(wait.condition),
            step=step,
            next=wait.next,
            on_reject=wait.on_reject,
            on_timeout=wait.on_timeout,
            spec=spec,
            opened_at=now,
            deadline=wait.condition.deadline(now),
            escalate_at=wait.condition.escalate_at(now),
        )
