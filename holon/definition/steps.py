"""A step of a flow as the builder understood it: its function, its policies, and the
steps its return annotation says it can lead to."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from holon.definition.policies import Retry

__all__ = ["FlowPlan", "StepFunction", "StepSpec"]

StepFunction = Callable[..., Any]


@dataclass(frozen=True)
class StepSpec:
    """One step of a flow as the builder understood it."""

    name: str
    fn: StepFunction
    edges: frozenset[str]
    """Step names (or `END`) the return annotation says this step can go to."""
    edges_complete: bool
    """False when the annotation is missing or admits other targets (`str`, `Next`,
    `Wait`, `Parallel`), so `edges` is a lower bound."""
    retry: Retry | None = None
    timeout: float | None = None
    compensate: StepFunction | None = None
    in_thread: bool = False
    """Called in a worker thread (a synchronous `def` function, or `step(thread=True)`),
    not on the event loop."""


@dataclass(frozen=True, slots=True)
class FlowPlan:
    """What executing a workflow reads at every step, worked out once per workflow
    (`Workflow.plan`); above all, the steps that need no policy machinery."""

    steps: Mapping[str, StepSpec]
    direct: Mapping[str, StepSpec]
    """The steps called once with no deadline: no retry or timeout of their own nor
    from the workflow's defaults (most steps)."""
    state_model: type[BaseModel] | None
    agents: Mapping[str, Any]
    execute_fn: StepFunction | None
