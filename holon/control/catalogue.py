"""The catalogue entry of a workflow version: what other processes learn of it.

An entry is JSON in the store (`Store.put_definition`), so a process that does not have
the workflow's code — the CLI, the HTTP API, a dashboard — can list it, show its
schemas and graph, and start runs of it by name.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from holon.definition.builder import Workflow
from holon.definition.directives import START

__all__ = ["GraphStep", "WorkflowGraph", "WorkflowInfo", "entry_for"]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="ignore")


class GraphStep(_Entry):
    """One step of a flow, as the catalogue shows it."""

    name: str
    edges: list[str] = Field(default_factory=list)
    """Steps (or `__end__`) this step is known to lead to."""
    edges_complete: bool = False
    """False when the step may also lead elsewhere (its return annotation is open)."""
    details: dict[str, Any] = Field(default_factory=dict)
    """What a declarative document says of the step: `agent` or `task`, `retry`,
    `timeout`, `approval`, or the `role` of a step the compiler added."""


class WorkflowGraph(_Entry):
    """The steps of a flow and their known edges (empty for `.Execute()` workflows)."""

    start: str = START.value
    steps: list[GraphStep] = Field(default_factory=list)


class WorkflowInfo(_Entry):
    """A registered version of a workflow."""

    name: str
    version: str
    description: str = ""
    owner: str | None = None
    tags: list[str] = Field(default_factory=list)
    kind: Literal["flow", "execute"] = "flow"
    input_schema: dict[str, Any] | None = None
    """JSON Schema of the input (None: any JSON value)."""
    state_schema: dict[str, Any] | None = None
    """JSON Schema of the state (None: a free-form dict)."""
    graph: WorkflowGraph = Field(default_factory=WorkflowGraph)
    mermaid: str = ""
    triggers: list[dict[str, Any]] = Field(default_factory=list)
    """What starts runs besides a caller: `{"type": "webhook", ...}` or
    `{"type": "schedule", ...}` (declarative workflows)."""
    source: Literal["python", "declarative"] = "python"
    document: dict[str, Any] | None = None
    """The declarative document this version was compiled from."""
    shape: str = ""
    """A digest of graph, schemas and document: a version registered twice must keep it."""
    registered_at: float = 0.0
    """When this version was first registered (the newest is a name's latest)."""
    runs: dict[str, int] = Field(default_factory=dict)
    """Runs of the workflow (every version) by status, counted when read; not stored."""

    def stored(self) -> dict[str, Any]:
        """The JSON document kept in the store."""
        return self.model_dump(mode="json", exclude={"runs"})


def entry_for(
    workflow: Workflow,
    *,
    owner: str | None,
    tags: list[str],
    registered_at: float,
    details: dict[str, dict[str, Any]] | None = None,
    triggers: list[dict[str, Any]] | None = None,
    document: dict[str, Any] | None = None,
) -> WorkflowInfo:
    """The catalogue entry of a built workflow."""
    details = details or {}
    steps = [
        GraphStep(
            name=name,
            edges=sorted(spec.edges),
            edges_complete=spec.edges_complete,
            details=details.get(name, {}),
        )
        for name, spec in workflow.steps.items()
    ]
    input_model, state_model = workflow.input_model, workflow.state_model
    info = WorkflowInfo(
        name=workflow.name,
        version=workflow.version,
        description=workflow.description,
        owner=owner,
        tags=tags,
        kind="execute" if workflow.execute_fn is not None else "flow",
        input_schema=input_model.model_json_schema() if input_model else None,
        state_schema=state_model.model_json_schema() if state_model else None,
        graph=WorkflowGraph(steps=steps),
        mermaid=workflow.Mermaid() if workflow.execute_fn is None else "",
        triggers=triggers or [],
        source="python" if document is None else "declarative",
        document=document,
        registered_at=registered_at,
    )
    execute_fn = workflow.execute_fn
    shape = {
        "kind": info.kind,
        "graph": info.graph.model_dump(mode="json"),
        "input": info.input_schema,
        "state": info.state_schema,
        "document": document,
        "execute": f"{execute_fn.__module__}:{execute_fn.__qualname__}" if execute_fn else None,
    }
    encoded = json.dumps(shape, sort_keys=True).encode()
    return info.model_copy(update={"shape": hashlib.sha256(encoded).hexdigest()[:16]})
