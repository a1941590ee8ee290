"""The approval gate's rules, on every store: who may decide, the payload digest,
self-approval, quorum, rejection, timeouts, escalation, races, late decisions, roles and
the pending inbox."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any, cast

import anyio
import pytest

from holon import (
    END,
    START,
    Context,
    DecisionConflict,
    DigestMismatch,
    HumanApproval,
    ManualClock,
    Next,
    NotAnApprover,
    NotWaiting,
    RunFailed,
    RunStatus,
    Wait,
    Workflow,
    WorkflowRunner,
    payload_digest,
)
from holon.stores.base import Store
from tests.waits_support import RacingStore, next_event, of_kind

pytestmark = pytest.mark.anyio

PLAN = {"service": "billing", "replicas": 3, "note": "café ☕"}


def gate(approval: HumanApproval, **wait: Any) -> Workflow:
    """START -> Gate (the approval) -> Done, which returns ctx.Decision."""
    return Workflow("gate").Flow(
        {
            START: lambda ctx: "Gate",
            "Gate": lambda ctx: Wait(approval, "Done", **wait),
            "Done": lambda ctx: "Finish",
            "Finish": lambda ctx: END,
            "Rollback": lambda ctx: END,
            "Chase": lambda ctx: END,
        }
    )


async def waiting(runner: WorkflowRunner, **run: Any) -> Any:
    handle = await runner.Run(**run)
    await handle.WaitUntil(RunStatus.WAITING, timeout=10)
    return handle


async def test_a_non_approver_is_refused_and_the_refusal_recorded(store: Store) -> None:
    wf = gate(HumanApproval(approvers=["ops-lead"]))
    async with WorkflowRunner(wf, store, clock=ManualClock()) as runner:
        handle = await waiting(runner)
        before = await handle.Record()
        with pytest.raises(NotAnApprover, match="'intern' is not an approver") as info:
            await handle.Approve(by="intern", comment="ship it")
        assert info.value.by == "intern" and info.value.run_id == handle.run_id
        after = await handle.Record()
        assert after.status == RunStatus.WAITING and after.body == before.body
        refused = (await handle.Timeline())[-1]
        assert refused.kind == "decision_refused"
        assert refused.data["by"] == "intern" and refused.data["comment"] == "ship it"
        assert (
            refused.data["error"] == "NotAnApprover"
            and "not an approver" in (refused.data["reason"])
        )
        assert refused.at == runner.clock.now()
        await handle.Approve(by="ops-lead")
        await handle.Result(timeout=10)


async def test_the_digest_binds_the_approval_to_the_payload(store: Store) -> None:
    wf = gate(HumanApproval(approvers=["ops"], question="Deploy?", payload=PLAN))
    async with WorkflowRunner(wf, store) as runner:
        handle = await waiting(runner)
        info = await handle.Waiting()
        assert info is not None and info.payload == PLAN and info.question == "Deploy?"
        # Any client computes the same digest: sorted keys, "," and ":", UTF-8.
        by_hand = json.dumps(PLAN, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        expected = hashlib.sha256(by_hand.encode("utf-8")).hexdigest()
        assert info.digest == payload_digest(PLAN) == expected
        changed = payload_digest({**PLAN, "replicas": 30})
        with pytest.raises(DigestMismatch, match="payload changed") as refused:
            await handle.Approve(by="ops", digest=changed)
        assert refused.value.wait_id == info.wait_id
        assert await handle.Status() == RunStatus.WAITING
        event = (await handle.Timeline())[-1]
        assert event.kind == "decision_refused" and event.data["digest"] == changed
        assert await handle.Approve(by="ops", digest=expected) == RunStatus.QUEUED
        await handle.Result(timeout=10)
        decision = of_kind(await handle.Timeline(), "decision")
        assert [d.data["digest"] for d in decision] == [expected]


async def test_self_approval_is_refused_when_forbidden(store: Store) -> None:
    wf = gate(HumanApproval(approvers=["alice", "bob"], forbid_self_approval=True))
    async with WorkflowRunner(wf, store) as runner:
        handle = await waiting(runner, started_by="alice")
        started = (await handle.Timeline())[0]
        assert started.data["started_by"] == "alice"
        with pytest.raises(NotAnApprover, match="'alice' started run .* may not approve"):
            await handle.Approve(by="alice")
        assert [i.run_id for i in (await runner.Pending("alice")).items] == []
        assert [i.run_id for i in (await runner.Pending("bob")).items] == [handle.run_id]
        await handle.Approve(by="bob")
        await handle.Result(timeout=10)
    allowed = gate(HumanApproval(approvers=["alice"]))
    async with WorkflowRunner(allowed, store) as runner:
        handle = await waiting(runner, started_by="alice")
        await handle.Approve(by="alice")  # not forbidden here
        await handle.Result(timeout=10)


async def test_quorum_of_two_out_of_three(store: Store) -> None:
    seen: list[Any] = []

    def done(ctx: Context[Any, Any]) -> Any:
        seen.append(ctx.Decision)
        return END

    wf = Workflow("quorum").Flow(
        {
            START: lambda ctx: Wait(
                HumanApproval(approvers=["a", "b", "c"], min_approvals=2), "Done"
            ),
            "Done": done,
        }
    )
    async with WorkflowRunner(wf, store) as runner:
        handle = await waiting(runner)
        assert await handle.Approve(by="a", comment="fine") == RunStatus.WAITING
        assert await handle.Approve(by="a") == RunStatus.WAITING  # the same again: once
        info = await handle.Waiting()
        assert info is not None and info.approvals_needed == 1 and info.approved_by == ["a"]
        assert info.approvers == ["a", "b", "c"]
        assert await handle.Approve(by="c") == RunStatus.QUEUED
        await handle.Result(timeout=10)
        assert seen[0]["approved"] is True and seen[0]["by"] == ["a", "c"]
        assert [d["by"] for d in seen[0]["decisions"]] == ["a", "c"]
        decisions = of_kind(await handle.Timeline(), "decision")
        assert [(d.data["by"], d.data["comment"]) for d in decisions] == [
            ("a", "fine"),
            ("c", None),
        ]


async def test_one_rejection_among_approvals_closes_the_gate(store: Store) -> None:
    approval = HumanApproval(approvers=["a", "b", "c"], min_approvals=2)
    async with WorkflowRunner(gate(approval), store) as runner:
        handle = await waiting(runner)
        await handle.Approve(by="a")
        assert await handle.Reject(by="b", comment="no") == RunStatus.REJECTED
        with pytest.raises(RunFailed, match="ended rejected"):
            await handle.Result(timeout=1)
        with pytest.raises(NotWaiting, match="is rejected"):
            await handle.Approve(by="c")
    async with WorkflowRunner(gate(approval, on_reject="Rollback"), store) as runner:
        handle = await waiting(runner)
        await handle.Approve(by="a")
        await handle.Reject(by="c")
        await handle.Result(timeout=10)
        steps = [e.step for e in of_kind(await handle.Timeline(), "step_completed")]
        assert "Rollback" in steps and "Done" not in steps


async def test_an_approver_cannot_change_their_decision(store: Store) -> None:
    approval = HumanApproval(approvers=["a", "b"], min_approvals=2)
    async with WorkflowRunner(gate(approval), store) as runner:
        handle = await waiting(runner)
        await handle.Approve(by="a")
        with pytest.raises(DecisionConflict, match="already decided 'approve'"):
            await handle.Reject(by="a")
        assert await handle.Status() == RunStatus.WAITING


async def test_timeout_goes_to_on_timeout_or_expires(store: Store) -> None:
    clock = ManualClock()
    approval = HumanApproval(approvers=["ops"], timeout=timedelta(hours=4))
    async with WorkflowRunner(gate(approval, on_timeout="Chase"), store, clock=clock) as runner:
        handle = await waiting(runner)
        info = await handle.Waiting()
        assert info is not None and info.deadline == clock.now() + 4 * 3600
        assert (await handle.Record()).wake_at == info.deadline
        clock.advance(4 * 3600 - 1)
        await runner.recover_now()
        assert await handle.Status() == RunStatus.WAITING
        clock.advance(1)
        await runner.recover_now()
        await handle.Result(timeout=10)
        timeline = await handle.Timeline()
        timed_out = of_kind(timeline, "timed_out")
        assert len(timed_out) == 1 and timed_out[0].data["next"] == "Chase"
        assert [e.step for e in of_kind(timeline, "step_completed")][-1] == "Chase"
        with pytest.raises(NotWaiting, match="is completed"):
            await handle.Approve(by="ops")
    async with WorkflowRunner(gate(approval), store, clock=clock) as runner:
        handle = await waiting(runner)
        clock.advance(4 * 3600)
        await runner.recover_now()
        record = await handle.WaitUntil(timeout=10)
        assert record.status == RunStatus.EXPIRED and record.lease is None
        with pytest.raises(RunFailed, match="ended expired"):
            await handle.Result(timeout=1)
        assert [e.kind for e in await handle.Timeline()][-3:] == [
            "timed_out",
            "wait_closed",
            "expired",
        ]


async def test_escalation_adds_approvers_after_a_delay(store: Store) -> None:
    clock = ManualClock()
    approval = HumanApproval(
        approvers=["oncall"], escalate_after=timedelta(minutes=30), escalate_to=["cto"]
    )
    async with WorkflowRunner(gate(approval), store, clock=clock) as runner:
        handle = await waiting(runner)
        info = await handle.Waiting()
        assert info is not None and info.escalate_at == clock.now() + 1800
        assert not info.escalated
        with pytest.raises(NotAnApprover):
            await handle.Approve(by="cto")
        assert (await runner.Pending("cto")).items == []
        clock.advance(1800)
        await runner.recover_now()
        escalated = await next_event(handle, "escalated")
        assert escalated.data["added"] == ["cto"]
        assert escalated.data["approvers"] == ["oncall", "cto"]
        info = await handle.Waiting()
        assert info is not None and info.escalated and info.approvers == ["oncall", "cto"]
        assert [i.run_id for i in (await runner.Pending("cto")).items] == [handle.run_id]
        assert (await handle.Record()).wake_at is None, "nothing more to wake up for"
        await handle.Approve(by="cto")
        await handle.Result(timeout=10)


async def test_two_concurrent_approvals_by_the_same_person(store: Store) -> None:
    racing = RacingStore(store)
    async with WorkflowRunner(gate(HumanApproval(approvers=["ops"])), cast(Store, racing)) as r:
        handle = await waiting(r)
        statuses: list[RunStatus] = []

        async def approve() -> None:
            statuses.append(await handle.Approve(by="ops", comment="go"))

        racing.race(2)
        async with anyio.create_task_group() as group:
            group.start_soon(approve)
            group.start_soon(approve)
        assert len(statuses) == 2, "both calls succeed: the same decision twice"
        await handle.Result(timeout=10)
        assert len(of_kind(await handle.Timeline(), "decision")) == 1, "recorded once"


async def test_two_concurrent_approvals_by_different_people(store: Store) -> None:
    racing = RacingStore(store)
    wf = gate(HumanApproval(approvers=["a", "b"]))
    async with WorkflowRunner(wf, cast(Store, racing)) as runner:
        handle = await waiting(runner)
        won: list[str] = []
        lost: list[DecisionConflict] = []

        async def approve(by: str) -> None:
            try:
                await handle.Approve(by=by)
                won.append(by)
            except DecisionConflict as exc:
                lost.append(exc)

        racing.race(2)
        async with anyio.create_task_group() as group:
            group.start_soon(approve, "a")
            group.start_soon(approve, "b")
        assert len(won) == 1 and len(lost) == 1
        assert lost[0].by != won[0] and lost[0].wait_id == "Gate#1"
        assert "lost the race" in str(lost[0])
        await handle.Result(timeout=10)
        decisions = of_kind(await handle.Timeline(), "decision")
        assert [d.data["by"] for d in decisions] == won


async def test_an_approval_racing_a_rejection_leaves_both_attempts_in_the_timeline(
    store: Store,
) -> None:
    racing = RacingStore(store)
    wf = gate(HumanApproval(approvers=["a", "b"]))
    clock = ManualClock()
    async with WorkflowRunner(wf, cast(Store, racing), clock=clock) as runner:
        handle = await waiting(runner)
        outcomes: dict[str, str] = {}

        async def decide(by: str, verdict: str) -> None:
            try:
                if verdict == "approve":
                    await handle.Approve(by=by, comment=f"{by} says yes")
                else:
                    await handle.Reject(by=by, comment=f"{by} says no")
                outcomes[by] = "won"
            except DecisionConflict:
                outcomes[by] = "lost"

        racing.race(2)
        async with anyio.create_task_group() as group:
            group.start_soon(decide, "a", "approve")
            group.start_soon(decide, "b", "reject")
        assert sorted(outcomes.values()) == ["lost", "won"], outcomes
        winner = next(by for by, outcome in outcomes.items() if outcome == "won")
        loser = next(by for by, outcome in outcomes.items() if outcome == "lost")
        with anyio.fail_after(10):
            while not of_kind(await handle.Timeline(), "decision_refused"):
                await next_event(handle, "decision_refused")
        timeline = await handle.Timeline()
        accepted = of_kind(timeline, "decision")
        refused = of_kind(timeline, "decision_refused")
        assert [d.data["by"] for d in accepted] == [winner]
        assert [r.data["by"] for r in refused] == [loser]
        attempt = refused[0]
        assert attempt.data["verdict"] == ("approve" if loser == "a" else "reject")
        assert attempt.data["comment"] == f"{loser} says {'yes' if loser == 'a' else 'no'}"
        assert attempt.data["error"] == "DecisionConflict"
        assert "lost the race" in attempt.data["reason"]
        assert attempt.at == clock.now() and attempt.step == "Gate"


async def test_quorum_two_concurrent_approvals_both_count(store: Store) -> None:
    racing = RacingStore(store)
    wf = gate(HumanApproval(approvers=["a", "b", "c"], min_approvals=2))
    async with WorkflowRunner(wf, cast(Store, racing)) as runner:
        handle = await waiting(runner)
        racing.race(2)
        async with anyio.create_task_group() as group:
            group.start_soon(handle.Approve, "a")
            group.start_soon(handle.Approve, "b")
        await handle.Result(timeout=10)
        decisions = of_kind(await handle.Timeline(), "decision")
        assert sorted(d.data["by"] for d in decisions) == ["a", "b"]


async def test_a_decision_for_an_earlier_wait_is_refused(store: Store) -> None:
    wf = Workflow("twice").Flow(
        {
            START: lambda ctx: "Gate",
            "Gate": lambda ctx: Wait(HumanApproval(approvers=["a", "b"]), "Work"),
            "Work": lambda ctx: END if ctx.StepResults.get("Again") else "Again",
            "Again": lambda ctx: Next("Gate", output="second round"),
        }
    )
    async with WorkflowRunner(wf, store) as runner:
        handle = await waiting(runner)
        first = await handle.Waiting()
        assert first is not None and first.wait_id == "Gate#1"
        await handle.Approve(by="a", wait_id="Gate#1")
        record = await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        assert record.body.wait is not None and record.body.wait.wait_id == "Gate#2"
        with pytest.raises(NotWaiting, match="names wait 'Gate#1', which is closed"):
            await handle.Approve(by="b", wait_id="Gate#1")
        with pytest.raises(NotWaiting, match="names wait 'Gate#1'"):
            await handle.Approve(by="a", wait_id="Gate#1")
        assert await handle.Status() == RunStatus.WAITING
        await handle.Approve(by="b", wait_id="Gate#2")
        await handle.Result(timeout=10)
        decisions = of_kind(await handle.Timeline(), "decision")
        assert [(d.data["by"], d.data["wait_id"]) for d in decisions] == [
            ("a", "Gate#1"),
            ("b", "Gate#2"),
        ]


async def test_a_late_decision_is_refused(store: Store) -> None:
    async with WorkflowRunner(gate(HumanApproval(approvers=["a", "b"])), store) as runner:
        handle = await waiting(runner)
        await handle.Approve(by="a")
        await handle.Result(timeout=10)
        # The identical decision again, naming the wait it closed, is a repeat: no error.
        assert await handle.Approve(by="a", wait_id="Gate#1") == RunStatus.COMPLETED
        assert len(of_kind(await handle.Timeline(), "decision")) == 1
        with pytest.raises(NotWaiting, match="is completed, not waiting"):
            await handle.Approve(by="b")
        with pytest.raises(NotWaiting, match="is completed"):
            await handle.Reject(by="a")
        refused = of_kind(await handle.Timeline(), "decision_refused")
        assert [(e.data["by"], e.data["error"]) for e in refused] == [
            ("b", "NotWaiting"),
            ("a", "NotWaiting"),
        ]


async def test_role_approvers(store: Store) -> None:
    approval = HumanApproval(approvers=["role:ops", "dana"], min_approvals=2)
    async with WorkflowRunner(gate(approval), store) as runner:
        handle = await waiting(runner)
        with pytest.raises(NotAnApprover, match=r"'carol' \(roles \['dev'\]\) is not"):
            await handle.Approve(by="carol", roles=["dev"])
        await handle.Approve(by="carol", roles=["ops", "dev"], comment="on call")
        assert [i.run_id for i in (await runner.Pending("erin", roles=["ops"])).items] == [
            handle.run_id
        ]
        assert (await runner.Pending("carol", roles=["ops"])).items == [], "carol decided"
        await handle.Approve(by="dana")
        await handle.Result(timeout=10)
        decisions = of_kind(await handle.Timeline(), "decision")
        assert [(d.data["by"], d.data["roles"]) for d in decisions] == [
            ("carol", ["dev", "ops"]),
            ("dana", []),
        ]


async def test_pending_lists_what_an_identity_can_act_on_paged(store: Store) -> None:
    quorum = Workflow("quorum").Flow(
        {
            START: lambda ctx: Wait(
                HumanApproval(approvers=["alice", "bob"], min_approvals=2), "Done"
            ),
            "Done": lambda ctx: END,
        }
    )
    own = gate(HumanApproval(approvers=["alice", "role:ops"], forbid_self_approval=True))
    expected: list[str] = []
    async with WorkflowRunner(own, store) as runner:
        for i in range(5):
            handle = await waiting(runner, run_id=f"run-{i}")
            expected.append(handle.run_id)
        await waiting(runner, run_id="run-self", started_by="alice")
        other = await waiting(runner, run_id="run-approved")
        await other.Approve(by="alice")
    async with WorkflowRunner(quorum, store) as runner:
        decided = await waiting(runner, run_id="run-q-decided")
        await decided.Approve(by="alice")
        open_one = await waiting(runner, run_id="run-q-open")
        expected.append(open_one.run_id)
        pages: list[list[str]] = []
        cursor = None
        while True:
            page = await runner.Pending("alice", limit=2, cursor=cursor)
            pages.append([i.run_id for i in page.items])
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert [run_id for p in pages for run_id in p] == sorted(expected)
        assert all(len(p) == 2 for p in pages[:-1])
        by_role = await runner.Pending("zed", roles=["ops"], limit=100)
        assert [i.run_id for i in by_role.items] == sorted([*expected[:5], "run-self"])
        first = (await runner.Pending("alice", limit=1)).items[0]
        assert first.kind == "approval" and first.workflow == "gate"
        assert first.approvals_needed == 1 and first.step == "Gate"


async def test_only_the_settings_a_gate_was_given_are_stored(store: Store) -> None:
    wf = Workflow("Gate").Flow(
        {
            START: lambda ctx: Wait(
                HumanApproval(approvers=["dev", "ops"], forbid_self_approval=True), "Done"
            ),
            "Done": lambda ctx: END,
        }
    )
    async with WorkflowRunner(wf, store, clock=ManualClock()) as runner:
        handle = await runner.Run(started_by="dev")
        record = await handle.WaitUntil("waiting", timeout=10)
        assert record.body.wait is not None
        assert record.body.wait.spec == {
            "approvers": ["dev", "ops"],
            "min_approvals": 1,
            "forbid_self_approval": True,
        }
        info = await handle.Waiting()
        assert info is not None
        assert (info.question, info.payload, info.digest, info.deadline) == (None, None, None, None)
        assert info.approvers == ["dev", "ops"] and info.approvals_needed == 1
        with pytest.raises(NotAnApprover, match="'dev' started run .* may not approve"):
            await handle.Approve(by="dev")
        await handle.Approve(by="ops")
        assert (await handle.WaitUntil("completed", timeout=10)).status == RunStatus.COMPLETED
