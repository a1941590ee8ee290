"""The rules of the gate, as pure functions: given a run record, a proposed decision (or
event) and the time, what to write and what to tell the caller.

Nothing here reads or writes a store, so every rule is testable on its own;
`holon.control.operator.Operator` applies the outcome with a compare-and-set commit.

The rules, in the order they are checked:

1. The run must be waiting (not paused, not finished) on a wait of the right kind, and
   a decision that names a `wait_id` must name the open wait. Otherwise `NotWaiting`,
   unless the same decision already closed that wait (a repeat, recorded once).
2. A decision that was about to be accepted but lost the commit race to another
   decision, which closed the wait or contradicts it, gets `DecisionConflict`.
3. Approvals: the identity must be listed (directly or by `role:`), must not be the
   run's starter when self-approval is forbidden, and a digest it names must be the
   wait's. Answers must validate. Refusals are `DecisionRefused` errors and are
   recorded in the timeline; the run keeps waiting.
4. The same decision twice is recorded once; a different verdict from someone who
   already decided is a `DecisionConflict` (decisions are final).
5. One rejection closes the gate; `min_approvals` distinct approvals open it.

Every attempt is in the timeline, with who, when and why: an accepted decision as
`decision`, a refused one (a lost race included) as `decision_refused`. While no executor
holds the run (a waiting, paused or finished run), a refusal is written as a checkpoint
that changes nothing but the timeline: same status, body, wake-up time and index keys,
through the same compare-and-set as an accepted decision, so it can never overwrite a
decision that landed first (it is then judged again on the newer record). While an
executor holds the run (the decision that won the race queued it), the refusal is
added to the timeline alone (`Outcome.events`, `Store.append_timeline`), which never
costs the executor its checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import ValidationError as PydanticValidationError

from holon._json import digest as payload_digest
from holon._json import to_json_value
from holon.definition.conditions import option_id, resolve_model
from holon.errors import (
    DecisionConflict,
    DecisionRefused,
    DigestMismatch,
    HolonError,
    InvalidAnswer,
    NotAnApprover,
    NotWaiting,
    StepOutputError,
)
from holon.runtime.waits import approvals, approvers, can_decide
from holon.sealing import Keyring, redact
from holon.stores.base import (
    Checkpoint,
    Cursor,
    Decision,
    NewEvent,
    RunRecord,
    RunStatus,
    WaitRecord,
)

__all__ = [
    "EVENTS_REMEMBERED",
    "EventDelivery",
    "Outcome",
    "Proposal",
    "close_wait",
    "deliver",
    "edited_args",
    "evaluate",
    "matches",
    "raced",
    "validate_answer",
]

EVENTS_REMEMBERED = 256
"""How many delivered event ids a run remembers to recognise redeliveries."""

Verdict = Literal["approve", "reject", "answer"]


@dataclass(frozen=True)
class Proposal:
    """A decision someone submits."""

    verdict: Verdict
    by: str
    roles: frozenset[str] = frozenset()
    comment: str | None = None
    digest: str | None = None
    value: Any = None
    wait_id: str | None = None
    """The wait the decider means; None means whichever is open."""
    raced: str | None = None
    """Set by the caller after a lost commit race: the wait this decision was about to
    be accepted on."""
    keyring: Keyring | None = field(default=None, compare=False)
    """The keys that seal a secret in the answer (the workflow's, see `holon.sealing`)."""


@dataclass(frozen=True)
class EventDelivery:
    """An event sent to a run."""

    name: str
    payload: Any
    event_id: str | None = None
    raced: str | None = None


@dataclass
class Outcome:
    """What to do: write `checkpoint` (if any), then raise `error` (if any)."""

    checkpoint: Checkpoint | None = None
    error: HolonError | None = None
    accepted: bool = False
    """The checkpoint records the decision (a lost race on it is a conflict)."""
    wait_id: str | None = None
    events: list[NewEvent] = field(default_factory=list)
    """Events to add to the timeline alone, when there is no checkpoint to carry them
    (a refusal while an executor holds the run)."""


def _event(kind: str, now: float, step: str | None, **data: Any) -> NewEvent:
    return NewEvent(kind=kind, at=now, step=step, data=data)


def _idle(record: RunRecord) -> bool:
    """No executor holds the run, so a timeline-only write cannot cost one its commit."""
    return record.status not in (RunStatus.QUEUED, RunStatus.RUNNING)


def _refuse(record: RunRecord, error: HolonError, event: NewEvent, now: float) -> Outcome:
    """Raise `error`, and record the attempt in the timeline: by a checkpoint while the
    run is idle, else (an executor holds it) by adding `event` to the timeline alone."""
    if not _idle(record):
        return Outcome(error=error, events=[event])
    checkpoint = Checkpoint(
        status=record.status,
        body=record.body,
        at=now,
        events=[event],
        wake_at=record.wake_at,
    )
    return Outcome(checkpoint=checkpoint, error=error)


def _refused_event(
    proposal: Proposal, wait: WaitRecord | None, error: HolonError, now: float
) -> NewEvent:
    return _event(
        "decision_refused",
        now,
        wait.step if wait else None,
        verdict=proposal.verdict,
        by=proposal.by,
        roles=sorted(proposal.roles),
        comment=proposal.comment,
        digest=proposal.digest,
        wait_id=proposal.wait_id or (wait.wait_id if wait else None),
        error=type(error).__name__,
        reason=str(error),
    )


def _repeat(record: RunRecord, proposal: Proposal) -> bool:
    """The same decision already closed the wait it is meant for, and the run has not
    opened another wait since."""
    closed = record.body.closed_wait
    meant = proposal.wait_id or proposal.raced
    if record.body.wait is not None or closed is None or closed.wait_id != meant:
        return False
    return any(
        d.by == proposal.by and d.verdict == proposal.verdict and d.value == proposal.value
        for d in closed.decisions
    )


def edited_args(run_id: str, verdict: str, args: Mapping[str, Any] | None) -> Any:
    """The value of an approval that edits the arguments of the tool call its gate is
    about (`Approve(..., args={...})`), or None; refused unless it approves a dict."""
    if args is None:
        return None
    if verdict != "approve" or not isinstance(args, Mapping):
        raise TypeError(
            f"args= edits the arguments an approval approves: a dict, given with "
            f"Approve(); got {args!r} with {verdict}"
        )
    return {"args": to_json_value(dict(args), what="args", run_id=run_id, step=None)}


def evaluate(record: RunRecord, proposal: Proposal, now: float) -> Outcome:
    """Judge `proposal` against the run as stored; see the module docstring."""
    run_id = record.run_id
    wait = record.body.wait
    by = proposal.by
    what = "answer" if proposal.verdict == "answer" else proposal.verdict
    is_open = record.status == RunStatus.WAITING and wait is not None
    meant = proposal.wait_id or proposal.raced
    if not is_open or (meant is not None and wait is not None and meant != wait.wait_id):
        if _repeat(record, proposal):
            return Outcome()
        if proposal.raced is not None:
            error: HolonError = DecisionConflict(
                f"{by!r}'s {what} on run {run_id!r} lost the race: wait {proposal.raced!r} "
                "closed first (another decision, or its timeout)",
                by=by,
                run_id=run_id,
                wait_id=proposal.raced,
            )
        elif is_open and wait is not None:
            error = NotWaiting(
                f"{by!r}'s {what} names wait {proposal.wait_id!r}, which is closed; run "
                f"{run_id!r} now waits at {wait.wait_id!r}",
                status=record.status.value,
                run_id=run_id,
            )
        else:
            error = NotWaiting(
                f"run {run_id!r} is {record.status.value}, not waiting for a decision; "
                f"{by!r}'s {what} was not recorded",
                status=record.status.value,
                run_id=run_id,
            )
        # A closed wait still names the step the decision was meant for.
        about = wait or record.body.closed_wait
        return _refuse(record, error, _refused_event(proposal, about, error, now), now)
    assert wait is not None
    wanted = "input" if proposal.verdict == "answer" else "approval"
    if wait.kind != wanted:
        error = NotWaiting(
            f"run {run_id!r} waits for {wait.kind} at {wait.wait_id!r}, not for "
            f"{'an answer' if wanted == 'input' else 'an approval'}",
            status=record.status.value,
            run_id=run_id,
        )
        return _refuse(record, error, _refused_event(proposal, wait, error, now), now)
    if wanted == "input":
        return _answer(record, wait, proposal, now)
    return _approval(record, wait, proposal, now)


def _approval(record: RunRecord, wait: WaitRecord, proposal: Proposal, now: float) -> Outcome:
    run_id, by, spec = record.run_id, proposal.by, wait.spec
    refusal: DecisionRefused | None = None
    if not can_decide(wait, by, proposal.roles):
        roles = f" (roles {sorted(proposal.roles)})" if proposal.roles else ""
        refusal = NotAnApprover(
            f"{by!r}{roles} is not an approver of run {run_id!r} at step {wait.step!r}; "
            f"approvers: {approvers(wait)}",
            by=by,
            run_id=run_id,
            wait_id=wait.wait_id,
        )
    elif (
        proposal.verdict == "approve"
        and spec.get("forbid_self_approval")
        and record.body.started_by == by
    ):
        refusal = NotAnApprover(
            f"{by!r} started run {run_id!r} and may not approve it (forbid_self_approval)",
            by=by,
            run_id=run_id,
            wait_id=wait.wait_id,
        )
    elif proposal.verdict == "approve" and proposal.digest is None and spec.get("require_digest"):
        refusal = DigestMismatch(
            f"{by!r}'s approval names no payload digest, and the gate of wait "
            f"{wait.wait_id!r} requires one: pass digest= (Waiting().digest is "
            f"{spec.get('digest')!r})",
            by=by,
            run_id=run_id,
            wait_id=wait.wait_id,
        )
    elif proposal.digest is not None and proposal.digest != spec.get("digest"):
        refusal = DigestMismatch(
            f"{by!r}'s {proposal.verdict} names payload digest {proposal.digest!r}, but the "
            f"payload of wait {wait.wait_id!r} has digest {spec.get('digest')!r}: the payload "
            "changed since it was shown",
            by=by,
            run_id=run_id,
            wait_id=wait.wait_id,
        )
    if refusal is not None:
        return _refuse(record, refusal, _refused_event(proposal, wait, refusal, now), now)
    earlier = [d for d in wait.decisions if d.by == by]
    if earlier:
        if earlier[0].verdict == proposal.verdict:
            return Outcome()  # the same decision again: recorded once
        conflict = DecisionConflict(
            f"{by!r} already decided {earlier[0].verdict!r} on wait {wait.wait_id!r} of run "
            f"{run_id!r}; decisions are final",
            by=by,
            run_id=run_id,
            wait_id=wait.wait_id,
        )
        return _refuse(record, conflict, _refused_event(proposal, wait, conflict, now), now)
    decision = Decision(
        decision_id=f"{wait.wait_id}:{by}:{proposal.verdict}",
        verdict=proposal.verdict,
        by=by,
        at=now,
        comment=proposal.comment,
        digest=proposal.digest,
        roles=sorted(proposal.roles),
        value=proposal.value,
    )
    decisions = [*wait.decisions, decision]
    events = [_decision_event(wait, decision, now)]
    # One shape whatever the outcome (docs/waits.md): `by` lists who decided it, the
    # one who rejected or every approver that opened the gate.
    summary: dict[str, Any] = {
        "approved": proposal.verdict == "approve",
        "by": [by],
        "timed_out": False,
        "comment": proposal.comment,
        "wait_id": wait.wait_id,
        "digest": spec.get("digest"),
        "decisions": [d.model_dump(mode="json") for d in decisions],
    }
    edits = [d.value["args"] for d in decisions if isinstance(d.value, dict) and "args" in d.value]
    if edits:
        summary["args"] = edits[-1]  # an approver's edit of what is approved (the latest)
    updated = wait.model_copy(update={"decisions": decisions})
    if proposal.verdict == "reject":
        return _accepted(
            close_wait(record, updated, summary, wait.on_reject, events, now, "rejected"),
            wait.wait_id,
        )
    approved = set(approvals(updated))
    if len(approved) < int(spec.get("min_approvals", 1)):
        body = record.body.model_copy(update={"wait": updated})
        checkpoint = Checkpoint(
            status=RunStatus.WAITING, body=body, at=now, events=events, wake_at=record.wake_at
        )
        return _accepted(checkpoint, wait.wait_id)
    summary["by"] = sorted(approved)
    checkpoint = close_wait(record, updated, summary, wait.next, events, now, "approved")
    return _accepted(checkpoint, wait.wait_id)


def _accepted(checkpoint: Checkpoint, wait_id: str | None = None) -> Outcome:
    return Outcome(checkpoint=checkpoint, accepted=True, wait_id=wait_id)


def _decision_event(wait: WaitRecord, decision: Decision, now: float) -> NewEvent:
    data: dict[str, Any] = {
        "verdict": decision.verdict,
        "by": decision.by,
        "roles": decision.roles,
        "comment": decision.comment,
        "digest": decision.digest,
        "wait_id": wait.wait_id,
    }
    if decision.verdict == "answer":
        data["value"] = redact(decision.value)  # the answer is kept, sealed, in the wait
    return _event("decision", now, wait.step, **data)


def _answer(record: RunRecord, wait: WaitRecord, proposal: Proposal, now: float) -> Outcome:
    value, problem, errors = validate_answer(wait.spec, proposal.value, proposal.keyring)
    if problem is not None:
        refusal = InvalidAnswer(
            f"{proposal.by!r}'s answer to {wait.spec.get('question')!r} (run "
            f"{record.run_id!r}) was refused: {problem}; the run keeps waiting",
            by=proposal.by,
            run_id=record.run_id,
            wait_id=wait.wait_id,
            errors=errors,
        )
        event = _refused_event(proposal, wait, refusal, now)
        event.data["value"] = redact(_json_or_repr(redact(proposal.value)))
        return _refuse(record, refusal, event, now)
    decision = Decision(
        decision_id=f"{wait.wait_id}:{proposal.by}:answer",
        verdict="answer",
        by=proposal.by,
        at=now,
        comment=proposal.comment,
        value=value,
    )
    updated = wait.model_copy(update={"decisions": [*wait.decisions, decision]})
    events = [_decision_event(wait, decision, now)]
    checkpoint = close_wait(record, updated, value, wait.next, events, now, "answered")
    return _accepted(checkpoint, wait.wait_id)


def _json_or_repr(value: Any) -> Any:
    try:
        return to_json_value(value, what="answer", run_id="-", step=None)
    except StepOutputError:
        return repr(value)


def validate_answer(
    spec: dict[str, Any], value: Any, keyring: Keyring | None = None
) -> tuple[Any, str | None, list[dict[str, Any]]]:
    """(the answer as JSON, its secrets sealed with `keyring`; why it is refused or None;
    pydantic's errors)."""
    ref = spec.get("schema_ref")
    if ref:
        model = resolve_model(ref)
        try:
            answer = model.model_validate(value)
            return (
                to_json_value(answer, what="answer", run_id="-", step=None, keyring=keyring),
                None,
                [],
            )
        except PydanticValidationError as exc:
            errors: list[dict[str, Any]] = [dict(e) for e in exc.errors(include_url=False)]
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in errors
            )
            return None, f"it does not match {model.__name__}: {problems}", errors
    try:
        value = to_json_value(value, what="answer", run_id="-", step=None, keyring=keyring)
    except StepOutputError:
        return None, f"a {type(value).__name__} is not JSON", []
    kind = spec.get("input_kind", "text")
    options = spec.get("options")
    if kind == "choice" or (kind == "approval" and options):
        ids = [option_id(o) for o in options or []]
        if isinstance(value, dict) and value in (options or []):
            value = option_id(value)  # the whole option given back: its id
        if value not in ids:
            return None, f"{value!r} is not one of the options {ids}", []
    elif kind == "approval" and not isinstance(value, bool):
        return None, f"an approval answer is true or false, got {value!r}", []
    elif kind == "text" and not isinstance(value, str):
        return None, f"a text answer is a string, got {value!r}", []
    return value, None, []


def close_wait(
    record: RunRecord,
    wait: WaitRecord,
    decision: Any,
    target: str | None,
    events: list[NewEvent],
    now: float,
    how: str,
    *,
    status: RunStatus = RunStatus.QUEUED,
    ended: RunStatus = RunStatus.REJECTED,
) -> Checkpoint:
    """Close `wait`: go to `target` (as `status`), or, without one, end the run `ended`.

    `decision` becomes `ctx.Decision` of the next step; the closed wait with its
    decisions is kept so a repeated decision is recognised.
    """
    update: dict[str, Any] = {"wait": None, "closed_wait": wait, "decision": decision}
    events = [*events, _event("wait_closed", now, wait.step, wait_id=wait.wait_id, outcome=how)]
    if target is None:
        events.append(_event(ended.value, now, wait.step, wait_id=wait.wait_id))
        return Checkpoint(
            status=ended,
            body=record.body.model_copy(update={**update, "cursor": None}),
            at=now,
            events=events,
            clear_control=True,
            release_lease=True,
            wait_keys=[],
        )
    events.append(_event("step_started", now, target))
    body = record.body.model_copy(update={**update, "cursor": Cursor(step=target), "attempt": 1})
    return Checkpoint(status=status, body=body, at=now, events=events, wait_keys=[])


# -- events ----------------------------------------------------------------------------


def matches(match: dict[str, Any] | None, payload: Any) -> bool:
    """Whether `payload` has every field of `match` (dotted keys reach nested objects)."""
    for key, expected in (match or {}).items():
        value = payload
        for part in key.split("."):
            if not isinstance(value, dict) or part not in value:
                return False
            value = value[part]
        if value != expected:
            return False
    return True


def deliver(record: RunRecord, delivery: EventDelivery, now: float) -> Outcome:
    """Judge an event sent to the run: close its event wait, or say why not."""
    run_id, wait = record.run_id, record.body.wait
    name, event_id = delivery.name, delivery.event_id
    if event_id is not None and event_id in record.body.events_seen:
        return Outcome()  # delivered before: recorded once
    waits_here = (
        record.status == RunStatus.WAITING
        and wait is not None
        and wait.kind == "event"
        and wait.spec.get("name") == name
    )
    if not waits_here:
        if delivery.raced is not None:
            return Outcome(
                error=DecisionConflict(
                    f"event {name!r} for run {run_id!r} lost the race: another event closed "
                    f"wait {delivery.raced!r} first",
                    by=f"event:{name}",
                    run_id=run_id,
                    wait_id=delivery.raced,
                )
            )
        waiting_for = (
            f"waits for {wait.kind} at {wait.wait_id!r}"
            if wait is not None and record.status == RunStatus.WAITING
            else f"is {record.status.value}"
        )
        return Outcome(
            error=NotWaiting(
                f"run {run_id!r} {waiting_for}, not for event {name!r}",
                status=record.status.value,
                run_id=run_id,
            )
        )
    assert wait is not None
    if not matches(wait.spec.get("match"), delivery.payload):
        return Outcome(
            error=NotWaiting(
                f"run {run_id!r} waits for event {name!r} matching {wait.spec.get('match')}; "
                "this payload does not match",
                status=record.status.value,
                run_id=run_id,
            )
        )
    decision_value = {"event": name, "payload": delivery.payload, "event_id": event_id}
    decision = Decision(
        decision_id=event_id or f"{wait.wait_id}:{payload_digest(delivery.payload)}",
        verdict="event",
        by=f"event:{name}",
        at=now,
        value=decision_value,
        digest=payload_digest(delivery.payload),
    )
    updated = wait.model_copy(update={"decisions": [decision]})
    events = [
        _event(
            "event_received",
            now,
            wait.step,
            name=name,
            event_id=event_id,
            payload=redact(delivery.payload),
            digest=decision.digest,
            wait_id=wait.wait_id,
        )
    ]
    checkpoint = close_wait(record, updated, decision_value, wait.next, events, now, "event")
    if event_id is not None:
        seen = [*record.body.events_seen, event_id][-EVENTS_REMEMBERED:]
        checkpoint.body = checkpoint.body.model_copy(update={"events_seen": seen})
    return _accepted(checkpoint, wait.wait_id)


def raced(attempt: Proposal | EventDelivery, outcome: Outcome) -> Proposal | EventDelivery:
    """The proposal (or delivery) to judge again after `outcome`'s commit lost a race."""
    if outcome.accepted and outcome.wait_id is not None:
        return replace(attempt, raced=outcome.wait_id)
    return attempt
