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
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from holon.definition.conditions import (
    Event,
    HumanApproval,
    HumanInput,
    Sleep,
    Until,
    WaitCondition,
)

__all__ = [
    "Child",
    "END",
    "START",
    "End",
    "Event",
    "HumanApproval",
    "HumanInput",
    "Marker",
    "Next",
    "Parallel",
    "Sleep",
    "Until",
    "Wait",
    "WaitCondition",
]


class Marker(enum.StrEnum):
    """The two ends of a flow. They are strings, so they can sit in `Literal[...]`."""

    START = "__start__"
    END = "__end__"


START: Final = Marker.START
"""The key of the flow's entry step: `{START: lambda ctx: "First", ...}`."""

END: Final = Marker.END
"""Returned by a step to finish the run."""

End = Literal[Marker.END]
"""The return annotation of a step that may end the run, alone or with the steps it
may go to: `def release(ctx) -> Literal["Notify"] | End`. (`Literal[END]` is not valid
typing: `END` is a name, `Marker.END` the value.) The builder reads it like the rest."""


@dataclass(frozen=True)
class Next:
    """Go to `step`, recording `output` as this step's result in `ctx.StepResults`.

    `Next(END, output=value)` finishes the run with `value` as its result.
    """

    step: str
    output: Any = None


@dataclass(frozen=True)
class Wait:
    """Halt the run durably until `condition` is met, then go to `next`.

    Args:
        condition: what to wait for, e.g. `HumanApproval(approvers=["ops-lead"])`.
        next: the step to run once the condition is met.
        on_reject: the step to run when an approver rejects; without it the run ends
            `rejected`.
        on_timeout: the step to run when the condition's `timeout` passes; without it
            the run ends `expired`.
    """

    condition: WaitCondition
    next: str
    on_reject: str | None = None
    on_timeout: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.condition, WaitCondition):
            raise TypeError(
                f"Wait(condition, next) takes a condition such as HumanApproval(...), "
                f"Event(...) or Sleep(...), got {self.condition!r}"
            )


class Named(Protocol):
    """Anything with a `name`: a `Workflow` (directives cannot import the builder)."""

    @property
    def name(self) -> str: ...


@dataclass(frozen=True)
class Child:
    """Start `workflow` as a child run with `input`, wait for it to end, then go to
    `next`.

    The child is a run of its own, durable like any other (its own record, timeline
    and handle); the parent waits for it holding nothing, like any `Wait`. When the
    child completes, its output is the parent step's result (`ctx.StepResults[step]`)
    and `ctx.Decision` describes it (`{"run_id", "workflow", "status", "output",
    "error"}`). A child that ends otherwise (failed, stopped, rejected, expired) goes
    to `on_failure` when given, else fails the parent. Stopping the parent stops the
    child.

    Args:
        workflow: a `Workflow`, or the name of one the executing process serves.
        input: the child's input, validated against its Input model.
        next: the step after the child completed.
        on_failure: the step after the child ended other than completed.
        name: in a `Parallel` of children, the name of its result.

    `Parallel([Child(a, x), Child(b, y)], "Join")` starts several children at once and
    goes to `Join` when all of them completed (their `next` is not needed there);
    `Join` reads each output under the child's name. One that ends otherwise fails the
    parent with `ChildFailed` once all have ended.
    """

    workflow: Named | str
    input: Any
    next: str = ""
    on_failure: str | None = None
    name: str | None = None
    """In a `Parallel` of children: the name its output is recorded under in
    `ctx.StepResults` (by default the child workflow's name, then `name#2`, ...)."""

    def __post_init__(self) -> None:
        name = self.workflow if isinstance(self.workflow, str) else self.workflow.name
        if not isinstance(name, str) or not name:
            raise TypeError(f"Child(workflow, ...) takes a Workflow or its name, got {name!r}")

    @property
    def workflow_name(self) -> str:
        return self.workflow if isinstance(self.workflow, str) else self.workflow.name


@dataclass(frozen=True)
class Parallel:
    """Run `branches` concurrently, then go to `join`.

    Branches are step names from the flow or callables taking `ctx`. A branch returns
    its result (any JSON value), which `join` reads from `ctx.StepResults[name]`.
    Each branch's result is checkpointed as it finishes, so after a crash only the
    unfinished branches run again.
    """

    branches: Sequence[str | Callable[..., Any] | Child]
    join: str

    def __post_init__(self) -> None:
        if isinstance(self.branches, str) or not self.branches:
            raise TypeError(
                f"Parallel(branches=...) takes a non-empty list of step names or callables, "
                f"got {self.branches!r}"
            )
