"""Halting a run on a wait: the wait record is opened and the run checkpointed as
`waiting`, its lease released (a waiting run holds no task and no lease)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from holon._json import to_json_value
from holon.definition.conditions import wait_kind
from holon.definition.directives import Wait
from holon.runtime.waits import wait_keys, wake_time
from holon.stores.base import NewEvent, RunStatus, WaitRecord

if TYPE_CHECKING:
    from holon.runtime.engine import Engine
    from holon.runtime.execution import Execution

__all__ = ["Suspender"]


def _unset(value: Any) -> bool:
    """None, False or an empty list or object: a wait condition's setting left alone."""
    return value is None or value is False or (isinstance(value, (list, dict)) and not value)


class Suspender:
    """Opens the waits steps return and halts their runs on them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def suspend(
        self,
        execution: Execution,
        step: str,
        directive: Wait,
        occurrence: int,
        *,
        events: list[NewEvent],
        results: dict[str, Any],
        update: dict[str, Any] | None = None,
        state: dict[str, Any] | None = None,
    ) -> None:
        """Open the wait `step` returned and halt the run on it, releasing the lease."""
        wait = self._open(execution, step, directive, occurrence)
        events = [
            *events,
            self.engine.event(
                "waiting",
                step,
                wait_id=wait.wait_id,
                wait_kind=wait.kind,
                next=wait.next,
                **wait.spec,
            ),
        ]
        changes = {**(update or {}), "wait": wait, "cursor": self.engine.cursor_at(wait.next)}
        if state is not None:
            changes["state"] = state
        await self.engine.commit(
            execution,
            RunStatus.WAITING,
            execution.record.body.model_copy(update=changes),
            results=results,
            events=events,
            release=True,
            wake_at=wake_time(wait),
            wait_keys=wait_keys(wait),
        )

    def _open(self, execution: Execution, step: str, wait: Wait, occurrence: int) -> WaitRecord:
        workflow = execution.workflow
        for target in (wait.next, wait.on_reject, wait.on_timeout):
            if target is not None:
                self.engine.target(workflow, step, target)
        spec = to_json_value(
            wait.condition.spec(), what="wait condition", run_id=execution.run_id, step=step
        )
        if not isinstance(spec, dict):
            raise TypeError(f"wait condition of step {step!r} described itself as {spec!r}")
        # Settings left unset are not stored (readers default them): a waiting run's
        # record and its `waiting` event stay small, and there may be millions of them.
        spec = {k: v for k, v in spec.items() if not _unset(v)}
        now = self.engine.clock.now()
        return WaitRecord(
            wait_id=f"{step}#{occurrence}",
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
