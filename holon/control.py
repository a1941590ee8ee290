"""Operator verbs on stored runs: pause, resume, stop, approve, reject.

These write without a lease. Each reads the run, decides, and commits with the
sequence number it read (compare-and-set); if anything else committed in between, it
reads again and decides again. A run that an executor holds is never written here:
the executor is asked (`Store.request`) and applies the request at its next boundary.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from holon._json import to_json_value
from holon.builder import Workflow
from holon.clock import Clock
from holon.context import validate_state
from holon.directives import START
from holon.errors import (
    InvalidRunState,
    NotAnApprover,
    NotWaiting,
    RunNotFound,
    SeqConflict,
    StateValidationError,
    StoreError,
    UnknownStepError,
)
from holon.stores.base import (
    Checkpoint,
    Control,
    Cursor,
    Decision,
    NewEvent,
    RunRecord,
    RunStatus,
    Store,
)

__all__ = ["Operator"]

_MAX_CAS_ATTEMPTS = 50

Decide = Callable[[RunRecord], Checkpoint | None]


class Operator:
    """Applies operator verbs to runs in one store."""

    def __init__(self, store: Store, clock: Clock, workflows: Mapping[str, Workflow]) -> None:
        self.store = store
        self.clock = clock
        self.workflows = workflows

    async def load(self, run_id: str) -> RunRecord:
        record = await self.store.load_run(run_id)
        if record is None:
            raise RunNotFound(f"no run {run_id!r} in {self.store.url}", run_id=run_id)
        return record

    async def _cas(self, run_id: str, decide: Decide) -> RunRecord:
        """Commit what `decide` returns for the current record; retry on a race.

        `decide` returns None when there is nothing to write.
        """
        for _ in range(_MAX_CAS_ATTEMPTS):
            record = await self.load(run_id)
            checkpoint = decide(record)
            if checkpoint is None:
                return record
            try:
                await self.store.commit(
                    run_id, expected_seq=record.seq, token=None, checkpoint=checkpoint
                )
            except SeqConflict:
                continue
            return await self.load(run_id)
        raise StoreError(
            f"run {run_id!r} kept changing; gave up after {_MAX_CAS_ATTEMPTS} attempts",
            run_id=run_id,
        )

    def _event(self, kind: str, step: str | None = None, **data: Any) -> NewEvent:
        return NewEvent(kind=kind, at=self.clock.now(), step=step, data=data)

    # -- pause / stop --------------------------------------------------------------------

    async def pause(self, run_id: str, by: str | None) -> RunRecord:
        """Pause at the next step boundary (at once when no executor holds the run)."""
        record = await self.load(run_id)
        _refuse_terminal(record, "pause")
        if record.status == RunStatus.PAUSED:
            return record
        if record.status == RunStatus.RUNNING and record.lease_live(self.clock.now()):
            return await self.store.request(
                run_id, Control(kind="pause", at=self.clock.now(), by=by)
            )

        def decide(current: RunRecord) -> Checkpoint | None:
            if current.status == RunStatus.PAUSED:
                return None
            _refuse_terminal(current, "pause")
            paused_from = RunStatus.WAITING if current.status == RunStatus.WAITING else None
            body = current.body.model_copy(update={"paused_from": paused_from})
            return Checkpoint(
                status=RunStatus.PAUSED,
                body=body,
                at=self.clock.now(),
                release_lease=True,
                clear_control=True,
                events=[self._event("paused", _step(current), by=by)],
            )

        return await self._cas(run_id, decide)

    async def stop_idle(self, run_id: str, by: str | None) -> RunRecord:
        """Stop a run no live executor holds: queued, waiting, paused, or orphaned."""

        def decide(current: RunRecord) -> Checkpoint | None:
            if current.status == RunStatus.STOPPED:
                return None
            _refuse_terminal(current, "stop")
            return Checkpoint(
                status=RunStatus.STOPPED,
                body=current.body,
                at=self.clock.now(),
                release_lease=True,
                clear_control=True,
                events=[self._event("stopped", _step(current), by=by)],
            )

        return await self._cas(run_id, decide)

    async def request_stop(self, run_id: str, by: str | None) -> RunRecord:
        return await self.store.request(run_id, Control(kind="stop", at=self.clock.now(), by=by))

    # -- resume --------------------------------------------------------------------------

    async def resume(
        self,
        run_id: str,
        *,
        goto: str | None,
        state: Mapping[str, Any] | None,
        by: str | None,
    ) -> RunRecord:
        """Continue a paused run, optionally at another step and with a state patch.

        A waiting run can be resumed only with `goto`, which abandons the wait.
        """

        def decide(current: RunRecord) -> Checkpoint:
            workflow = self.workflows.get(current.workflow)
            if current.status not in (RunStatus.PAUSED, RunStatus.WAITING) or (
                current.status == RunStatus.WAITING and goto is None
            ):
                raise InvalidRunState(
                    f"run {run_id!r} is {current.status.value}; Resume() continues a paused "
                    "run (or, with goto=, a waiting one)",
                    status=current.status.value,
                    run_id=run_id,
                )
            body = current.body
            update: dict[str, Any] = {"paused_from": None}
            if goto is not None:
                if workflow is not None and (goto not in workflow.steps or goto == START.value):
                    known = sorted(n for n in workflow.steps if n != START.value)
                    raise UnknownStepError(
                        f"Resume(goto={goto!r}): {goto!r} is not a step of workflow "
                        f"{current.workflow!r}; known steps: {known}",
                        run_id=run_id,
                        step=goto,
                        workflow=current.workflow,
                    )
                update.update(cursor=Cursor(step=goto), wait=None, attempt=1)
            if state is not None:
                if not isinstance(state, Mapping):
                    raise StateValidationError(
                        f"Resume(state=...) takes a dict of fields, got {state!r}", run_id=run_id
                    )
                model = workflow.state_model if workflow else None
                patch = {
                    k: to_json_value(v, what="state", run_id=run_id, step=None)
                    for k, v in state.items()
                }
                if model is not None:
                    unknown = sorted(set(patch) - set(model.model_fields))
                    if unknown:
                        raise StateValidationError(
                            f"Resume(state=...) of run {run_id!r}: {model.__name__} has no "
                            f"field {unknown[0]!r}; fields: {sorted(model.model_fields)}",
                            run_id=run_id,
                        )
                update["state"] = validate_state(
                    model, {**body.state, **patch}, run_id=run_id, step=None
                )
            new_body = body.model_copy(update=update)
            back_to_wait = goto is None and body.paused_from == RunStatus.WAITING and body.wait
            status = RunStatus.WAITING if back_to_wait else RunStatus.QUEUED
            events = [
                self._event(
                    "resumed",
                    _step(current),
                    by=by,
                    goto=goto,
                    state=dict(state) if state else None,
                )
            ]
            if goto is not None:
                events.append(self._event("step_started", goto))
            return Checkpoint(
                status=status,
                body=new_body,
                at=self.clock.now(),
                clear_control=True,
                events=events,
                wake_at=current.wake_at if back_to_wait else None,
            )

        return await self._cas(run_id, decide)

    # -- decisions -------------------------------------------------------------------------

    async def decide(
        self,
        run_id: str,
        *,
        verdict: str,
        by: str,
        comment: str | None,
    ) -> RunRecord:
        """Approve or reject the approval gate a run waits at."""
        if not isinstance(by, str) or not by:
            raise NotAnApprover(
                f"a decision needs the identity of who decides, got {by!r}",
                by=str(by),
                run_id=run_id,
            )

        def decide(current: RunRecord) -> Checkpoint | None:
            wait = current.body.wait
            if current.status != RunStatus.WAITING or wait is None:
                raise NotWaiting(
                    f"run {run_id!r} is {current.status.value}, not waiting for a decision; "
                    f"{by!r}'s {verdict} was not recorded",
                    status=current.status.value,
                    run_id=run_id,
                )
            if wait.kind != "approval":
                raise NotWaiting(
                    f"run {run_id!r} waits for {wait.kind}, not an approval",
                    status=current.status.value,
                    run_id=run_id,
                )
            approvers = wait.spec.get("approvers", [])
            if by not in approvers:
                raise NotAnApprover(
                    f"{by!r} is not an approver of run {run_id!r} at step {wait.step!r}; "
                    f"approvers: {approvers}",
                    by=by,
                    run_id=run_id,
                )
            if any(d.by == by and d.verdict == verdict for d in wait.decisions):
                return None  # the same decision again: recorded once
            now = self.clock.now()
            decision = Decision(
                decision_id=f"{wait.wait_id}:{by}:{verdict}",
                verdict=verdict,  # type: ignore[arg-type]
                by=by,
                at=now,
                comment=comment,
            )
            decisions = [*wait.decisions, decision]
            events = [
                self._event(
                    "decision",
                    wait.step,
                    verdict=verdict,
                    by=by,
                    comment=comment,
                    wait_id=wait.wait_id,
                )
            ]
            summary = {
                "approved": verdict == "approve",
                "by": by,
                "comment": comment,
                "decisions": [d.model_dump(mode="json") for d in decisions],
            }
            if verdict == "reject":
                if wait.on_reject is None:
                    events.append(self._event("rejected", wait.step, by=by))
                    body = current.body.model_copy(
                        update={
                            "wait": wait.model_copy(update={"decisions": decisions}),
                            "decision": summary,
                            "cursor": None,
                        }
                    )
                    return Checkpoint(
                        status=RunStatus.REJECTED,
                        body=body,
                        at=now,
                        events=events,
                        clear_control=True,
                    )
                return self._close_wait(current, decisions, summary, wait.on_reject, events)
            approvals = {d.by for d in decisions if d.verdict == "approve"}
            if len(approvals) < int(wait.spec.get("min_approvals", 1)):
                body = current.body.model_copy(
                    update={"wait": wait.model_copy(update={"decisions": decisions})}
                )
                return Checkpoint(
                    status=RunStatus.WAITING,
                    body=body,
                    at=now,
                    events=events,
                    wake_at=current.wake_at,
                )
            summary["by"] = sorted(approvals)
            return self._close_wait(current, decisions, summary, wait.next, events)

        return await self._cas(run_id, decide)

    def _close_wait(
        self,
        current: RunRecord,
        decisions: list[Decision],
        summary: dict[str, Any],
        target: str,
        events: list[NewEvent],
    ) -> Checkpoint:
        body = current.body.model_copy(
            update={
                "wait": None,
                "decision": summary,
                "cursor": Cursor(step=target),
                "attempt": 1,
            }
        )
        events.append(self._event("step_started", target))
        return Checkpoint(status=RunStatus.QUEUED, body=body, at=self.clock.now(), events=events)


def _step(record: RunRecord) -> str | None:
    return record.body.cursor.step if record.body.cursor else None


def _refuse_terminal(record: RunRecord, verb: str) -> None:
    if record.status.terminal:
        raise InvalidRunState(
            f"run {record.run_id!r} already ended {record.status.value}; cannot {verb} it",
            status=record.status.value,
            run_id=record.run_id,
        )
