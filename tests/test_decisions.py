"""The gate's rules as pure functions: a record, a proposal and the time in; what to
write and what to raise out. No store, no runner."""

from __future__ import annotations

from typing import Any

import pytest

from holon import (
    DecisionConflict,
    DigestMismatch,
    HumanApproval,
    InvalidAnswer,
    NotAnApprover,
    NotWaiting,
    payload_digest,
)
from holon.runtime.decisions import EventDelivery, Proposal, deliver, evaluate, matches, raced
from holon.runtime.timers import on_wake
from holon.stores.base import RunBody, RunRecord, RunStatus, WaitRecord

NOW = 1_000.0


def record(
    wait: WaitRecord | None, status: RunStatus = RunStatus.WAITING, **body: Any
) -> RunRecord:
    return RunRecord(
        run_id="r1",
        workflow="wf",
        version="1",
        status=status,
        input=None,
        body=RunBody(wait=wait, **body),
        created_at=0.0,
        updated_at=0.0,
        wake_at=wait.deadline if wait else None,
    )


def approval_wait(**condition: Any) -> WaitRecord:
    approval = HumanApproval(**{"approvers": ["a", "b", "role:ops"], **condition})
    return WaitRecord(
        wait_id="Gate#1",
        kind="approval",
        step="Gate",
        next="Go",
        spec=approval.spec(),
        opened_at=0.0,
        deadline=approval.deadline(0.0),
        escalate_at=approval.escalate_at(0.0),
    )


def test_an_accepted_approval_that_meets_the_quorum_closes_the_wait() -> None:
    outcome = evaluate(record(approval_wait()), Proposal("approve", "a", comment="ok"), NOW)
    assert outcome.error is None and outcome.accepted and outcome.checkpoint is not None
    checkpoint = outcome.checkpoint
    assert checkpoint.status == RunStatus.QUEUED and checkpoint.wait_keys == []
    assert checkpoint.body.wait is None and checkpoint.body.cursor is not None
    assert checkpoint.body.cursor.step == "Go"
    assert checkpoint.body.closed_wait is not None
    assert checkpoint.body.decision["by"] == ["a"]
    assert [e.kind for e in checkpoint.events] == ["decision", "wait_closed", "step_started"]


def test_refusals_write_only_the_timeline() -> None:
    stored = record(approval_wait(payload={"x": 1}))
    for proposal, error in [
        (Proposal("approve", "mallory"), NotAnApprover),
        (Proposal("approve", "a", digest="0" * 64), DigestMismatch),
    ]:
        outcome = evaluate(stored, proposal, NOW)
        assert isinstance(outcome.error, error)
        assert outcome.checkpoint is not None and not outcome.accepted
        assert outcome.checkpoint.body == stored.body
        assert outcome.checkpoint.status == stored.status
        assert outcome.checkpoint.wake_at == stored.wake_at
        assert outcome.checkpoint.wait_keys is None
        assert [e.kind for e in outcome.checkpoint.events] == ["decision_refused"]


def test_a_refusal_is_not_written_while_an_executor_holds_the_run() -> None:
    outcome = evaluate(record(None, RunStatus.RUNNING), Proposal("approve", "a"), NOW)
    assert isinstance(outcome.error, NotWaiting) and outcome.checkpoint is None


def test_roles_and_self_approval() -> None:
    stored = record(approval_wait(forbid_self_approval=True), started_by="b")
    assert evaluate(stored, Proposal("approve", "zoe", roles=frozenset({"ops"})), NOW).accepted
    refused = evaluate(stored, Proposal("approve", "b"), NOW)
    assert isinstance(refused.error, NotAnApprover) and "forbid_self_approval" in str(refused.error)
    assert evaluate(stored, Proposal("reject", "b"), NOW).accepted, "rejecting is allowed"


def test_a_lost_race_is_a_conflict_unless_it_was_the_same_decision() -> None:
    stored = record(approval_wait())
    first = evaluate(stored, Proposal("approve", "a"), NOW)
    assert first.checkpoint is not None
    after = stored.model_copy(
        update={"status": first.checkpoint.status, "body": first.checkpoint.body}
    )
    loser = raced(Proposal("approve", "b"), evaluate(stored, Proposal("approve", "b"), NOW))
    assert isinstance(loser, Proposal) and loser.raced == "Gate#1"
    assert isinstance(evaluate(after, loser, NOW).error, DecisionConflict)
    again = raced(Proposal("approve", "a"), first)
    repeat = evaluate(after, again, NOW)
    assert repeat.error is None and repeat.checkpoint is None, "the same decision: once"
    late = evaluate(after, Proposal("approve", "b"), NOW)
    assert isinstance(late.error, NotWaiting)


def test_answers_are_validated() -> None:
    wait = WaitRecord(
        wait_id="Ask#1",
        kind="input",
        step="Ask",
        next="Use",
        spec={"question": "?", "input_kind": "choice", "options": [1, 2]},
        opened_at=0.0,
    )
    refused = evaluate(record(wait), Proposal("answer", "p", value=3), NOW)
    assert isinstance(refused.error, InvalidAnswer) and "not one of the options" in str(
        refused.error
    )
    accepted = evaluate(record(wait), Proposal("answer", "p", value=2), NOW)
    assert accepted.checkpoint is not None and accepted.checkpoint.body.decision == 2


def test_event_delivery_and_matching() -> None:
    assert matches({"a.b": 1, "c": "x"}, {"a": {"b": 1}, "c": "x", "d": 0})
    assert not matches({"a.b": 1}, {"a": 1})
    wait = WaitRecord(
        wait_id="E#1",
        kind="event",
        step="E",
        next="Go",
        spec={"name": "paid", "match": {"id": 7}},
        opened_at=0.0,
    )
    assert isinstance(
        deliver(record(wait), EventDelivery("paid", {"id": 8}), NOW).error, NotWaiting
    )
    outcome = deliver(record(wait), EventDelivery("paid", {"id": 7}, event_id="e1"), NOW)
    assert outcome.checkpoint is not None and outcome.checkpoint.body.events_seen == ["e1"]
    after = record(None, RunStatus.QUEUED, events_seen=["e1"])
    repeat = deliver(after, EventDelivery("paid", {"id": 7}, event_id="e1"), NOW)
    assert repeat.error is None and repeat.checkpoint is None


def test_timers_escalate_then_expire() -> None:
    wait = approval_wait(timeout=100, escalate_after=10, escalate_to=["boss"])
    stored = record(wait)
    assert stored.wake_at == 100.0
    escalated = on_wake(stored, 10.0)
    assert escalated is not None and escalated.status == RunStatus.WAITING
    assert escalated.wait_keys is not None and "approver:boss" in escalated.wait_keys
    assert escalated.wake_at == 100.0 and escalated.release_lease
    expired = on_wake(stored.model_copy(update={"body": escalated.body}), 100.0)
    assert expired is not None and expired.status == RunStatus.EXPIRED
    assert [e.kind for e in expired.events] == ["timed_out", "wait_closed", "expired"]


def test_the_digest_is_of_canonical_json() -> None:
    assert payload_digest({"b": 1, "a": "é"}) == payload_digest({"a": "é", "b": 1})
    assert (
        payload_digest({"a": 1})
        == "015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862"
    )


@pytest.mark.parametrize("bad", [{"approvers": "a"}, {"approvers": []}, {"min_approvals": 4}])
def test_approval_arguments_are_checked(bad: dict[str, Any]) -> None:
    with pytest.raises((TypeError, ValueError)):
        HumanApproval(**{"approvers": ["a", "b", "c"], **bad})
