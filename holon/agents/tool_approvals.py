"""Tool calls that need a person: a pydantic-ai tool made with `requires_approval=True`
suspends the holon run until an approver decides.

```python
agent = Agent(model, name="outreach", capabilities=[HolonDurability()])

@agent.tool_plain(requires_approval=True)
def send_email(to: str, body: str) -> str: ...

PydanticAgent(agent, approvals={"send_email": HumanApproval(approvers=["role:sales"])})
```

When the model calls such a tool, the agent run ends with the calls to approve
(pydantic-ai's `DeferredToolRequests`); for each, the step waits (durably: the run
halts, holding no task) at a `HumanApproval` with the tool's rules (approvers, roles,
quorum, expiry, no self-approval) whose payload is the tool's name and exact
arguments, so the approval is bound to their digest. Approved, the agent run goes on
and the tool runs once; rejected (or expired), the model is told and goes on; approved
with edited arguments (`Approve(..., args={...})`), the tool runs with those.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from pydantic_ai.messages import ToolCallPart
from pydantic_ai.tools import DeferredToolRequests, DeferredToolResults, ToolApproved, ToolDenied

from holon.definition.conditions import HumanApproval
from holon.errors import HolonError

__all__ = ["decide_tool_calls"]


def _approval_for(
    call: ToolCallPart, approvals: Mapping[str, HumanApproval], ctx: Any
) -> HumanApproval:
    rules = approvals.get(call.tool_name)
    if rules is None:
        raise HolonError(
            f"step {ctx.StepName!r}: the agent called tool {call.tool_name!r}, which requires "
            f"approval, and no rules say who approves it; give PydanticAgent(approvals="
            f"{{{call.tool_name!r}: HumanApproval(approvers=[...])}}); rules exist for "
            f"{sorted(approvals)}",
            run_id=ctx.RunId,
            step=ctx.StepName,
        )
    payload = {"tool": call.tool_name, "args": call.args_as_dict()}
    question = rules.question or f"Run tool {call.tool_name!r} with these arguments?"
    return replace(rules, payload=payload, question=question)


async def decide_tool_calls(
    ctx: Any,
    agent_name: str,
    requests: DeferredToolRequests,
    approvals: Mapping[str, HumanApproval],
) -> DeferredToolResults:
    """What people decided on the tool calls in `requests`: each call waits for its
    own approval (the run halts until it is given; see `RunServices.await_approval`)."""
    if requests.calls:
        names = sorted({c.tool_name for c in requests.calls})
        raise HolonError(
            f"step {ctx.StepName!r}: agent {agent_name!r} deferred tool calls {names} to be "
            "run elsewhere; holon runs deferred tools only as approvals",
            run_id=ctx.RunId,
            step=ctx.StepName,
        )
    results = DeferredToolResults()
    for call in requests.approvals:
        condition = _approval_for(call, approvals, ctx)
        unit = f"{agent_name}/{call.tool_name}/{call.tool_call_id}"
        decision = await ctx.services.await_approval(ctx, unit, condition)
        results.approvals[call.tool_call_id] = _result(decision)
    return results


def _result(decision: Any) -> ToolApproved | ToolDenied:
    if not isinstance(decision, dict) or decision.get("timed_out"):
        return ToolDenied("Nobody approved the tool call in time.")
    if decision.get("approved"):
        return ToolApproved(override_args=decision.get("args"))
    by = decision.get("by")
    who = ", ".join(map(str, by)) if isinstance(by, list) else by
    why = f": {decision['comment']}" if decision.get("comment") else ""
    return ToolDenied(f"The tool call was rejected by {who}{why}.")
