"""What a step returns: the next step's name, `END`, or one of the directives below.

```python
START: lambda ctx: "Clone"                                    # a step name
"Clone": clone                                                # returns "Build"
"Build": lambda ctx: Parallel(["Linux", "Mac"], "Test")      # fan out, then join
"Test": lambda ctx: Next("Deploy", output={"passed": 12})     # go on, recording an output
"Deploy": lambda ctx: Wait(HumanApproval(approvers=["ops"]), "Release")
"Release": lambda ctx: END
```
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "END",
    "START",
    "HumanApproval",
    "Marker",
    "Next",
    "Parallel",
    "Wait",
    "WaitCondition",
]


class Marker(enum.StrEnum):
    """The two ends of a flow. They are strings, so they can sit in `Literal[...]`."""

    START = "__start__"
    END = "__end__"


START = Marker.START
"""The key of the flow's entry step: `{START: lambda ctx: "First", ...}`."""

END = Marker.END
"""Returned by a step to finish the run."""


@dataclass(frozen=True)
class Next:
    """Go to `step`, recording `output` as this step's result in `ctx.StepResults`.

    `Next(END, output=value)` finishes the run with `value` as its result.
    """

    step: str
    output: Any = None


class WaitCondition:
    """What a `Wait` waits for. Each condition knows how to describe itself as JSON."""

    kind: str = "condition"

    def spec(self) -> dict[str, Any]:
        """The JSON description stored in the run's wait record."""
        raise NotImplementedError


@dataclass(frozen=True)
class HumanApproval(WaitCondition):
    """Wait until `min_approvals` distinct listed approvers approve; one rejection closes it.

    Args:
        approvers: identities allowed to decide.
        min_approvals: how many distinct approvals open the gate.
        question: what the approvers are asked, shown to them.
        payload: JSON shown to the approvers alongside the question.
    """

    approvers: Sequence[str]
    min_approvals: int = 1
    question: str | None = None
    payload: Any = None
    kind: str = field(default="approval", init=False)

    def __post_init__(self) -> None:
        if isinstance(self.approvers, str) or not all(
            isinstance(a, str) and a for a in self.approvers
        ):
            raise TypeError(
                f"HumanApproval(approvers=...) takes a list of identity strings, "
                f"got {self.approvers!r}"
            )
        if not self.approvers:
            raise ValueError("HumanApproval(approvers=...) needs at least one approver")
        if not 1 <= self.min_approvals <= len(self.approvers):
            raise ValueError(
                f"HumanApproval(min_approvals={self.min_approvals}) must be between 1 and "
                f"the number of approvers ({len(self.approvers)})"
            )

    def spec(self) -> dict[str, Any]:
        return {
            "approvers": list(self.approvers),
            "min_approvals": self.min_approvals,
            "question": self.question,
            "payload": self.payload,
        }


@dataclass(frozen=True)
class Wait:
    """Halt the run durably until `condition` is met, then go to `next`.

    Args:
        condition: what to wait for, e.g. `HumanApproval(approvers=["ops-lead"])`.
        next: the step to run once the condition is met.
        on_reject: the step to run when an approver rejects; without it the run ends
            `rejected`.
    """

    condition: WaitCondition
    next: str
    on_reject: str | None = None


@dataclass(frozen=True)
class Parallel:
    """Run `branches` concurrently, then go to `join`.

    Branches are step names from the flow or callables taking `ctx`. A branch returns
    its result (any JSON value), which `join` reads from `ctx.StepResults[name]`.
    Each branch's result is checkpointed as it finishes, so after a crash only the
    unfinished branches run again.
    """

    branches: Sequence[str | Callable[..., Any]]
    join: str

    def __post_init__(self) -> None:
        if isinstance(self.branches, str) or not self.branches:
            raise TypeError(
                f"Parallel(branches=...) takes a non-empty list of step names or callables, "
                f"got {self.branches!r}"
            )
