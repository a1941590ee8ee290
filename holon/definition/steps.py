"""A step of a flow as the builder understood it: its function, its policies, and the
steps its return annotation says it can lead to."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from holon.definition.policies import Retry
from holon.limits import Limits
from holon.sealing import Keyring

__all__ = ["DEFAULT_RULES", "DataRules", "FlowPlan", "StepFunction", "StepSpec"]

StepFunction = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class DataRules:
    """What a workflow's runs accept and how they keep their data: the size limits and
    the secrets. One object, made with the plan, that every step's `ctx` holds."""

    limits: Limits = Limits()  # noqa: RUF009 - frozen, shared on purpose
    """The size limits of the workflow's runs (`.Limits()`)."""
    keyring: Keyring | None = None
    """The keys that seal the runs' secrets (`.Secrets()`, else `HOLON_SECRET_KEYS`)."""
    sealed_state: bool = False
    """The State model has secret fields: state is opened to be read, sealed to be kept."""
    redacted_state: frozenset[str] | None = None
    """State fields whose values the timeline redacts (secret or named like one); None
    without a State model (then every patch's keys are looked at)."""


DEFAULT_RULES = DataRules()


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
    external: bool = False
    """Marked `step(external=True)`: a replay answers it from its recording."""


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
    rules: DataRules = DEFAULT_RULES
    """What the runs accept and how they keep it (size limits, secrets)."""
