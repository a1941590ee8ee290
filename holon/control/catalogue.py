"""The catalogue entry of a workflow version: what other processes learn of it.

An entry is JSON in the store (`Store.put_definition`), so a process that does not have
the workflow's code — the CLI, the HTTP API, a dashboard — can list it, show its
schemas and graph, and start runs of it by name.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from holon.definition.builder import Workflow
from holon.definition.directives import START
from holon.errors import WorkflowDefinitionError
from holon.stores.base import Store

__all__ = [
    "GraphStep",
    "WorkflowGraph",
    "WorkflowInfo",
    "entries",
    "ensure_entry",
    "entry_for",
    "record_entry",
    "served_agents",
    "version_order",
]

logger = logging.getLogger("holon.steward")


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


async def entries(store: Store) -> list[WorkflowInfo]:
    """Every version of every workflow in the store's catalogue (entries that do not
    parse are left out, with a warning)."""
    found = []
    for document in await store.definitions():
        try:
            found.append(WorkflowInfo.model_validate(document))
        except PydanticValidationError as exc:
            logger.warning("skipping a catalogue entry that does not parse: %s", exc)
    return found


async def record_entry(store: Store, info: WorkflowInfo) -> WorkflowInfo:
    """Put `info` in the catalogue, keeping the time its version was first registered.

    Raises `WorkflowDefinitionError` when this name and version are in the catalogue
    with another graph or other schemas: a changed workflow needs a new version.
    """
    same_name = [i for i in await entries(store) if i.name == info.name]
    existing = next((i for i in same_name if i.version == info.version), None)
    if existing is not None:
        _check_shape(existing, info)
        info = info.model_copy(update={"registered_at": existing.registered_at})
    elif same_name:
        # A new version is newer than every one registered before it, even when the
        # clock says otherwise (a test's clock that stands still, clocks of two machines
        # a little apart): versions are ordered by these times.
        latest = max(i.registered_at for i in same_name)
        if info.registered_at <= latest:
            info = info.model_copy(update={"registered_at": latest + 0.001})
    await store.put_definition(info.name, info.version, info.stored())
    return info


async def ensure_entry(store: Store, workflow: Workflow, now: float) -> list[WorkflowInfo]:
    """Put `workflow`'s version in the catalogue unless it is there already (as
    registered by a Steward: with its owner, tags, or declarative document); returns the
    catalogue."""
    catalogue = await entries(store)
    if any((i.name, i.version) == (workflow.name, workflow.version) for i in catalogue):
        return catalogue
    await record_entry(store, entry_for(workflow, owner=None, tags=[], registered_at=now))
    return await entries(store)


def _check_shape(existing: WorkflowInfo, info: WorkflowInfo) -> None:
    if existing.shape != info.shape:
        raise WorkflowDefinitionError(
            f"workflow {info.name!r} version {info.version!r} is already registered "
            "with another graph or other schemas; a changed workflow needs a new "
            "version (leave `version=` out to get a fingerprint)",
            workflow=info.name,
        )


def version_order(catalogue: list[WorkflowInfo], name: str) -> list[str]:
    """The versions of `name` in `catalogue`, oldest first: in the order they were first
    registered (the newest is a name's latest)."""
    versions = sorted(
        (i for i in catalogue if i.name == name), key=lambda i: (i.registered_at, i.version)
    )
    return [i.version for i in versions]


async def served_agents(store: Store, now: float) -> dict[str, list[str]]:
    """Agent name -> the live executors that can run it, from the store's list of live
    executors (each announces the agents its runs can open): how a process learns of
    agents registered in others."""
    served: dict[str, list[str]] = {}
    for worker in await store.workers(now):
        for agent in worker.get("agents") or []:
            served.setdefault(agent, []).append(worker["name"])
    return {name: sorted(workers) for name, workers in sorted(served.items())}
