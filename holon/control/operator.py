"""Operator verbs on stored runs: pause, resume, stop, and decisions and events for waits.

These write without a lease. Each reads the run, decides, and commits with the
sequence number it read (compare-and-set); if anything else committed in between, it
reads again and decides again. A run that an executor holds is never written here:
the executor is asked (`Store.request`) and applies the request at its next boundary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, Literal

from pydantic import SecretBytes, SecretStr

from holon._json import to_json_value
from holon.clock import Clock
from holon.definition.budget import Budget
from holon.definition.builder import Workflow
from holon.definition.directives import START
from holon.errors import (
    InvalidRunState,
    NotAnApprover,
    NotWaiting,
    SecretKeyError,
    StateValidationError,
    StepOutputError,
    UnknownStepError,
)
from holon.limits import Limits
from holon.runtime.compare_and_set import Decide, compare_and_set, load
from holon.runtime.context import validate_state
from holon.runtime.decisions import EventDelivery, Outcome, Proposal, deliver, evaluate, raced
from holon.runtime.definitions import Definitions
from holon.runtime.inbox import (
    KeptEvent,
    check_keep_for,
    keep_broadcast,
    keep_for_run,
    new_event_id,
    take_kept_event,
    waits_for_event,
)
from holon.runtime.waits import wait_keys, wake_time
from holon.sealing import Keyring, redact
from holon.stores.base import (
    TERMINAL_STATUSES,
    Checkpoint,
    Control,
    Cursor,
    NewEvent,
    RunRecord,
    RunStatus,
    Store,
)

__all__ = ["Operator"]

_DEFAULT_LIMITS = Limits()

RETRYABLE = frozenset({RunStatus.FAILED, RunStatus.STOPPED, RunStatus.EXPIRED})
"""The statuses `Retry()` continues a run from."""


class Operator:
    """Applies operator verbs to runs in one store."""

    def __init__(self, store: Store, clock: Clock, definitions: Definitions) -> None:
        self.store = store
        self.clock = clock
        self.definitions = definitions

    async def load(self, run_id: str) -> RunRecord:
        return await load(self.store, run_id)

    async def _cas(
        self,
        run_id: str,
        decide: Decide,
        on_conflict: Callable[[], None] | None = None,
    ) -> RunRecord:
        """Commit what `decide` returns for the current record; retry on a race."""
        return await compare_and_set(self.store, run_id, decide, on_conflict)

    def _definition(self, record: RunRecord) -> Workflow | None:
        """The definition the run's rules come from: the one that would execute it here,
        else the newest of its workflow here (None for a workflow not known here)."""
        return self.definitions.pick(record) or self.definitions.newest(record.workflow)

    def _limits(self, record: RunRecord) -> Limits:
        """The size limits of the run's workflow (the defaults for one not known here)."""
        workflow = self._definition(record)
        return workflow.size_limits if workflow is not None else _DEFAULT_LIMITS

    def _keyring(self, record: RunRecord) -> Keyring | None:
        """The keys that seal the secrets of the run's workflow (none for one not here)."""
        workflow = self._definition(record)
        return workflow.plan.rules.keyring if workflow is not None else None

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
                wait_keys=[],
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
        budget: Budget | Mapping[str, Any] | None = None,
    ) -> RunRecord:
        """Continue a paused run, optionally at another step, with a state patch or a
        new budget. A waiting run can be resumed only with `goto` (abandons the wait)."""
        new_budget = Budget.of(budget).as_dict() if budget is not None else None

        def decide(current: RunRecord) -> Checkpoint:
            workflow = self.definitions.pick(current)
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
            patch: dict[str, Any] | None = None
            update: dict[str, Any] = {"paused_from": None, "needs_version": None}
            if goto is not None:
                self._check_goto(current, workflow, goto, "Resume")
                update.update(cursor=Cursor(step=goto), wait=None, attempt=1)
            if state is not None:
                patch, update["state"] = self.patched_state(current, workflow, state, "Resume")
            if new_budget is not None:
                update["budget"] = new_budget
            new_body = body.model_copy(update=update)
            back_to_wait = goto is None and body.paused_from == RunStatus.WAITING and body.wait
            status = RunStatus.WAITING if back_to_wait else RunStatus.QUEUED
            events = [
                self._event(
                    "resumed",
                    _step(current),
                    by=by,
                    goto=goto,
                    state=redact(patch) if patch is not None else None,
                    **({"budget": new_budget} if new_budget is not None else {}),
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
                wake_at=wake_time(body.wait) if back_to_wait else None,
                wait_keys=[] if goto is not None else None,
            )

        return await self._cas(run_id, decide)

    def _check_goto(
        self, current: RunRecord, workflow: Workflow | None, goto: str, verb: str
    ) -> None:
        if workflow is not None and (goto not in workflow.steps or goto == START.value):
            known = sorted(n for n in workflow.steps if n != START.value)
            raise UnknownStepError(
                f"{verb}(goto={goto!r}): {goto!r} is not a step of workflow "
                f"{current.workflow!r}; known steps: {known}",
                run_id=current.run_id,
                step=goto,
                workflow=current.workflow,
            )

    def patched_state(
        self,
        current: RunRecord,
        workflow: Workflow | None,
        state: Mapping[str, Any],
        verb: str,
        base: Mapping[str, Any] | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The patch as stored (JSON, secrets sealed) and the state it makes of `base`
        (default: the run's state), validated against the workflow's State model and
        its size limit; `StateValidationError` naming the field at fault."""
        run_id = current.run_id
        if not isinstance(state, Mapping):
            raise StateValidationError(
                f"{verb}(state=...) takes a dict of fields, got {state!r}", run_id=run_id
            )
        model = workflow.state_model if workflow else None
        # Secrets are sealed by `validate_state`: here they are kept as they are.
        keyring = workflow.plan.rules.keyring if workflow else None
        patch = {
            k: v
            if isinstance(v, SecretStr | SecretBytes) and model is not None
            else to_json_value(v, what="state", run_id=run_id, step=None, keyring=keyring)
            for k, v in state.items()
        }
        if model is not None:
            unknown = sorted(set(patch) - set(model.model_fields))
            if unknown:
                raise StateValidationError(
                    f"{verb}(state=...) of run {run_id!r}: {model.__name__} has no "
                    f"field {unknown[0]!r}; fields: {sorted(model.model_fields)}",
                    run_id=run_id,
                )
        merged = validate_state(
            model,
            {**(current.body.state if base is None else base), **patch},
            run_id=run_id,
            step=None,
            keyring=keyring,
        )
        self._limits(current).check(
            "state_patch",
            {k: merged.get(k, v) for k, v in patch.items()},
            what=f"the state patch of {verb}(state=...) of run {run_id!r}",
            run_id=run_id,
        )
        return patch, merged

    # -- retry ---------------------------------------------------------------------------

    async def retry(
        self,
        run_id: str,
        *,
        goto: str | None,
        state: Mapping[str, Any] | None,
        by: str | None,
    ) -> RunRecord:
        """Continue a `failed`, `stopped` or `expired` run from its last checkpoint:
        the step at its cursor runs again as a new attempt (same idempotency key), a
        stopped wait is waited on again, an expired wait's step opens a new one."""

        def decide(current: RunRecord) -> Checkpoint:
            if current.status not in RETRYABLE:
                hint = (
                    "; Fork() it to run it again from a checkpoint"
                    if (current.status == RunStatus.COMPLETED)
                    else ""
                )
                raise InvalidRunState(
                    f"run {run_id!r} is {current.status.value}; Retry() continues a failed, "
                    f"stopped or expired run{hint}",
                    status=current.status.value,
                    run_id=run_id,
                )
            body = current.body
            if body.compensating or body.compensated:
                raise InvalidRunState(
                    f"run {run_id!r} failed and its completed steps were undone by their "
                    "compensations; it cannot continue from its checkpoint (Fork() it "
                    "from an earlier one instead)",
                    status=current.status.value,
                    run_id=run_id,
                )
            workflow = self._definition(current)
            update: dict[str, Any] = {
                "error": None,
                "retry_at": None,
                "deaths": 0,
                "paused_from": None,
                "attempt": body.attempt + 1,
            }
            status, wake_at, keys = RunStatus.QUEUED, None, []
            cursor = body.cursor
            if goto is not None:
                self._check_goto(current, workflow, goto, "Retry")
                update.update(cursor=Cursor(step=goto), wait=None, attempt=1)
            elif body.wait is not None:  # stopped while waiting: wait again
                status, wake_at, keys = (
                    RunStatus.WAITING,
                    wake_time(body.wait),
                    wait_keys(body.wait),
                )
                update["attempt"] = body.attempt
            elif cursor is None and body.closed_wait is not None:
                # Expired (or rejected): the step that opened the wait opens a new one.
                update.update(cursor=Cursor(step=body.closed_wait.step), attempt=1)
            elif cursor is None:
                raise InvalidRunState(
                    f"run {run_id!r} has no step to continue at; Retry(goto=STEP) names one",
                    status=current.status.value,
                    run_id=run_id,
                )
            patch = None
            if state is not None:
                patch, update["state"] = self.patched_state(current, workflow, state, "Retry")
            new_body = body.model_copy(update=update)
            step = new_body.cursor.step if new_body.cursor else None
            events = [
                self._event(
                    "retried",
                    step,
                    by=by,
                    previous=current.status.value,
                    attempt=new_body.attempt,
                    goto=goto,
                    state=redact(patch) if patch is not None else None,
                )
            ]
            if status == RunStatus.QUEUED:
                events.append(self._event("step_started", step))
            return Checkpoint(
                status=status,
                body=new_body,
                at=self.clock.now(),
                clear_control=True,
                release_lease=True,
                events=events,
                wake_at=wake_at,
                wait_keys=keys,
            )

        return await self._cas(run_id, decide)

    # -- decisions and events --------------------------------------------------------------

    async def _judge(self, run_id: str, attempt: Proposal | EventDelivery) -> RunRecord:
        """Apply the gate's rules to `attempt` and commit the outcome (compare-and-set).

        A commit that loses a race is judged again on the newer record, marked as having
        raced, so a decision overtaken by another one gets `DecisionConflict`.
        """
        judged: list[Outcome] = []

        def decide(record: RunRecord) -> Checkpoint | None:
            nonlocal attempt
            keyring = self._keyring(record)
            if isinstance(attempt, Proposal) and attempt.keyring is not keyring:
                attempt = replace(attempt, keyring=keyring)  # seals a secret in an answer
            self._check_size(record, attempt)
            now = self.clock.now()
            outcome = (
                evaluate(record, attempt, now)
                if isinstance(attempt, Proposal)
                else deliver(record, attempt, now)
            )
            judged.append(outcome)
            return outcome.checkpoint

        def lost_race() -> None:
            nonlocal attempt
            attempt = raced(attempt, judged[-1])

        record = await self._cas(run_id, decide, on_conflict=lost_race)
        outcome = judged[-1]
        if outcome.checkpoint is None and outcome.events:
            # A refusal while an executor holds the run: recorded beside its checkpoint.
            await self.store.append_timeline(run_id, outcome.events)
        if outcome.error is not None:
            raise outcome.error
        return record

    def _check_size(self, record: RunRecord, attempt: Proposal | EventDelivery) -> None:
        """Refuse an answer, comment or event payload over its limit, before judging."""
        limits, run_id = self._limits(record), record.run_id
        if isinstance(attempt, EventDelivery):
            what = f"the payload of event {attempt.name!r} sent to run {run_id!r}"
            limits.check("event_payload", attempt.payload, what=what, run_id=run_id)
            return
        if attempt.comment is not None:
            what = f"the comment by {attempt.by!r} on run {run_id!r}"
            limits.check("answer", attempt.comment, what=what, run_id=run_id)
        if attempt.verdict == "answer":
            try:
                value = to_json_value(
                    attempt.value,
                    what="answer",
                    run_id=run_id,
                    step=None,
                    keyring=attempt.keyring,
                )
            except StepOutputError:
                return  # not JSON at all: the gate's rules refuse it, naming why
            what = f"the answer by {attempt.by!r} to run {run_id!r}"
            limits.check("answer", value, what=what, run_id=run_id)

    async def decide(
        self,
        run_id: str,
        *,
        verdict: Literal["approve", "reject"],
        by: str,
        comment: str | None = None,
        digest: str | None = None,
        roles: Iterable[str] = (),
        wait_id: str | None = None,
        value: Any = None,
    ) -> RunRecord:
        """Approve or reject the approval gate a run waits at (see `holon.runtime.decisions`);
        `value`: what the decision carries (`edited_args`)."""
        _check_identity(run_id, by)
        proposal = Proposal(
            verdict=verdict,
            by=by,
            roles=_roles(roles),
            comment=comment,
            digest=digest,
            wait_id=wait_id,
            value=value,
        )
        return await self._judge(run_id, proposal)

    async def answer(
        self,
        run_id: str,
        *,
        value: Any,
        by: str,
        comment: str | None = None,
        wait_id: str | None = None,
    ) -> RunRecord:
        """Answer the `HumanInput` a run waits at."""
        _check_identity(run_id, by)
        proposal = Proposal(verdict="answer", by=by, comment=comment, value=value, wait_id=wait_id)
        return await self._judge(run_id, proposal)

    async def send(
        self,
        run_id: str,
        *,
        name: str,
        payload: Any,
        event_id: str | None = None,
        keep_for: float | None = None,
    ) -> RunRecord:
        """Deliver event `name` to a run waiting on it; idempotent on `event_id`.

        With `keep_for` (seconds), an event the run does not wait for yet is kept in its
        inbox for that long instead of refused, and delivered when the wait opens (see
        `holon.runtime.inbox`); a run that has finished refuses it as before."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"an event name is a non-empty string, got {name!r}")
        if event_id is not None and (not isinstance(event_id, str) or not event_id):
            raise TypeError(f"event_id is a non-empty string, got {event_id!r}")
        check_keep_for(keep_for)
        data = await self._event_payload(run_id, payload)
        if keep_for is not None and event_id is None:
            event_id = new_event_id()
        delivery = EventDelivery(name=name, payload=data, event_id=event_id)
        try:
            return await self._judge(run_id, delivery)
        except NotWaiting:
            if keep_for is None:
                raise
            record = await self.load(run_id)
            if record.status in TERMINAL_STATUSES:
                raise
        if waits_for_event(record) == name:
            # It opened the wait for this event since it was judged: deliver now (a
            # payload its wait does not match is refused, not kept).
            return await self._judge(run_id, delivery)
        assert event_id is not None
        await self._keep(record, KeptEvent(event_id, name, data), keep_for)
        # The run may have opened its wait meanwhile, before the event was kept: try again
        # (its executor looks in the inbox too; the run records the event once either way).
        delivered = await take_kept_event(self.store, self.clock, run_id)
        return delivered if delivered is not None else await self.load(run_id)

    async def keep(self, name: str, payload: Any, event_id: str, keep_for: float) -> None:
        """Keep a broadcast event for the runs that start waiting on `name` in the next
        `keep_for` seconds (each has it once)."""
        check_keep_for(keep_for)
        data = to_json_value(payload, what=f"the payload of event {name!r}", run_id="-", step=None)
        _DEFAULT_LIMITS.check("event_payload", data, what=f"the payload of event {name!r}")
        await keep_broadcast(self.store, self.clock, KeptEvent(event_id, name, data), keep_for)

    async def _keep(self, record: RunRecord, event: KeptEvent, keep_for: float) -> None:
        self._check_size(record, EventDelivery(name=event.name, payload=event.payload))
        await keep_for_run(self.store, self.clock, record.run_id, event, keep_for)

    async def _event_payload(self, run_id: str, payload: Any) -> Any:
        """The payload as JSON, a secret in it sealed with the keys of the run's workflow."""
        try:
            return to_json_value(payload, what="event payload", run_id=run_id, step=None)
        except SecretKeyError:
            keyring = self._keyring(await self.load(run_id))
            return to_json_value(
                payload, what="event payload", run_id=run_id, step=None, keyring=keyring
            )


def _check_identity(run_id: str, by: str) -> None:
    if not isinstance(by, str) or not by:
        raise NotAnApprover(
            f"a decision needs the identity of who decides, got {by!r}",
            by=str(by),
            run_id=run_id,
        )


def _roles(roles: Iterable[str]) -> frozenset[str]:
    if isinstance(roles, str) or not all(isinstance(r, str) and r for r in roles):
        raise TypeError(f"roles= takes a list of role names, got {roles!r}")
    return frozenset(roles)


def _step(record: RunRecord) -> str | None:
    return record.body.cursor.step if record.body.cursor else None


def _refuse_terminal(record: RunRecord, verb: str) -> None:
    if record.status.terminal:
        raise InvalidRunState(
            f"run {record.run_id!r} already ended {record.status.value}; cannot {verb} it",
            status=record.status.value,
            run_id=record.run_id,
        )
