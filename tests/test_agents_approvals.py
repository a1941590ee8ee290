"""Tool calls that need a person: the run waits durably with the tool's name and exact
arguments as the approval's payload, bound to their digest, single-use, under the
rules of `HumanApproval`; approved, the tool runs once; rejected, the model is told
and goes on; approved with edited arguments, those are what runs."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic_ai import Agent as PydanticAIAgent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from holon import (
    END,
    START,
    DigestMismatch,
    ExecuteContext,
    HumanApproval,
    Next,
    NotAnApprover,
    NotWaiting,
    RunStatus,
    Workflow,
    WorkflowRunner,
)
from holon.agents import HolonDurability, PydanticAgent
from holon.stores.base import Store

pytestmark = pytest.mark.anyio


class Outreach:
    """An agent that e-mails a contact: first `ceo@acme`; told that was rejected, it
    tries `cto@acme`. Records what the model was told and every e-mail sent."""

    def __init__(self) -> None:
        self.told: list[str] = []
        self.sent: list[dict[str, Any]] = []
        self.model_calls = 0

    def model(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.model_calls += 1
        returns = [
            p for m in messages for p in getattr(m, "parts", []) if isinstance(p, ToolReturnPart)
        ]
        if not returns:
            args = {"to": "ceo@acme", "body": "Welcome aboard"}
            return ModelResponse(parts=[ToolCallPart("send_email", args, "call-1")])
        last = str(returns[-1].content)
        self.told.append(last)
        if "rejected" in last and len(returns) == 1:
            args = {"to": "cto@acme", "body": "Welcome aboard"}
            return ModelResponse(parts=[ToolCallPart("send_email", args, "call-2")])
        return ModelResponse(parts=[TextPart(f"done: {last}")])

    def workflow(self, **rules: Any) -> Workflow:
        agent = PydanticAIAgent(
            FunctionModel(self.model), name="outreach", capabilities=[HolonDurability()]
        )

        @agent.tool_plain(requires_approval=True)
        def send_email(to: str, body: str) -> str:
            self.sent.append({"to": to, "body": body})
            return f"sent to {to}: {body}"

        approvals = {"send_email": HumanApproval(approvers=["ops", "role:sales"], **rules)}

        async def reach_out(ctx: Any) -> Next:
            async with await ctx.Agents.outreach as outreach:
                return Next(END, output=await outreach.Run("welcome acme"))

        return (
            Workflow("ToolApprovals")
            .Agents({"outreach": lambda: PydanticAgent(agent, approvals=approvals)})
            .Flow({START: lambda ctx: "Reach", "Reach": reach_out})
        )


async def test_approved_tool_call_runs_once(store: Store) -> None:
    outreach = Outreach()
    async with WorkflowRunner(outreach.workflow(), store) as runner:
        handle = await runner.Run(started_by="alice")
        await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        info = await handle.Waiting()
        assert info is not None and info.kind == "approval"
        assert info.payload == {
            "tool": "send_email",
            "args": {"to": "ceo@acme", "body": "Welcome aboard"},
        }
        assert outreach.sent == []  # nothing ran before the approval
        with pytest.raises(NotAnApprover):
            await handle.Approve("mallory", digest=info.digest)
        assert await handle.Approve("bob", digest=info.digest, roles=["sales"]) in (
            RunStatus.QUEUED,
            RunStatus.RUNNING,
        )
        assert await handle.Result(timeout=10) == "done: sent to ceo@acme: Welcome aboard"
        timeline = await handle.Timeline()
    assert outreach.sent == [{"to": "ceo@acme", "body": "Welcome aboard"}]
    assert outreach.model_calls == 2  # the first request was replayed, not made again
    assert [e.data["tool_call_id"] for e in timeline if e.kind == "tool_call"] == ["call-1"]


async def test_rejected_then_changed_arguments_and_replayed_approvals(store: Store) -> None:
    outreach = Outreach()
    async with WorkflowRunner(outreach.workflow(), store) as runner:
        handle = await runner.Run()
        await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        first = await handle.Waiting()
        assert first is not None
        await handle.Reject("ops", comment="not the CEO", digest=first.digest)
        # The model is told and goes on: it asks for another address.
        record = await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        second = await handle.Waiting()
        assert second is not None and second.wait_id != first.wait_id
        assert second.payload["args"]["to"] == "cto@acme"
        assert outreach.told == ["The tool call was rejected by ops: not the CEO."]
        # An approval of what the approver saw before (other arguments) is refused...
        with pytest.raises(DigestMismatch):
            await handle.Approve("ops", digest=first.digest)
        # ... and so is one replayed on the closed gate.
        with pytest.raises(NotWaiting):
            await handle.Approve("ops", wait_id=first.wait_id)
        still = await handle.Waiting()
        assert still is not None and still.wait_id == second.wait_id  # nothing applied
        assert (await handle.Record()).body.wait == record.body.wait
        assert outreach.sent == []
        await handle.Approve("ops", digest=second.digest, wait_id=second.wait_id)
        assert await handle.Result(timeout=10) == "done: sent to cto@acme: Welcome aboard"
    assert outreach.sent == [{"to": "cto@acme", "body": "Welcome aboard"}]


async def test_approved_with_edited_arguments(store: Store) -> None:
    outreach = Outreach()
    async with WorkflowRunner(outreach.workflow(), store) as runner:
        handle = await runner.Run()
        await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        info = await handle.Waiting()
        assert info is not None
        edited = {"to": "ceo@acme", "body": "Welcome aboard, from all of us"}
        await handle.Approve("ops", digest=info.digest, args=edited)
        assert await handle.Result(timeout=10) == (
            "done: sent to ceo@acme: Welcome aboard, from all of us"
        )
    assert outreach.sent == [edited]


async def test_quorum_and_self_approval_rules_apply(store: Store) -> None:
    outreach = Outreach()
    wf = outreach.workflow(min_approvals=2, forbid_self_approval=True)
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run(started_by="ops")
        await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        info = await handle.Waiting()
        assert info is not None and info.approvals_needed == 2
        with pytest.raises(NotAnApprover, match="forbid_self_approval"):
            await handle.Approve("ops", digest=info.digest)
        assert await handle.Approve("bob", roles=["sales"]) == RunStatus.WAITING
        assert outreach.sent == []
        await handle.Approve("carol", roles=["sales"])
        assert await handle.Result(timeout=10) == "done: sent to ceo@acme: Welcome aboard"
    assert len(outreach.sent) == 1


async def test_a_tool_approval_inside_an_execute_task(store: Store) -> None:
    outreach = Outreach()
    flow = outreach.workflow()
    factories = flow.agent_map

    async def main(ctx: ExecuteContext[Any, Any]) -> Any:
        return await ctx.Agent("outreach", "welcome acme")

    wf = Workflow("ToolApprovalsExecute").Agents(dict(factories)).Execute(main)
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        info = await handle.Waiting()
        assert info is not None and info.payload["tool"] == "send_email"
        await handle.Approve("ops", digest=info.digest)
        assert await handle.Result(timeout=10) == "done: sent to ceo@acme: Welcome aboard"
    assert outreach.sent == [{"to": "ceo@acme", "body": "Welcome aboard"}]


async def test_an_expired_tool_approval_tells_the_model(store: Store) -> None:
    outreach = Outreach()
    async with WorkflowRunner(outreach.workflow(timeout=0.05), store, poll_interval=0.05) as runner:
        handle = await runner.Run()
        assert await handle.Result(timeout=10) == "done: Nobody approved the tool call in time."
        kinds = [e.kind for e in await handle.Timeline()]
    assert outreach.sent == []
    assert "wait_closed" in kinds
