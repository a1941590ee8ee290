"""The workflow endpoints: the catalogue, and registering declarative documents.

`POST /api/v1/workflows` takes a declarative document as JSON (or YAML text with a
YAML content type), in holon's own shape or in the reference REST shape, whose steps
say `type: agent` with an `agent_id` (or `type: task` with a `task_id`) and whose
`team_id` is the owner. Only admins register workflows; the agents and tasks a
document names must be registered with the app's steward.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from holon.http.auth import ADMIN
from holon.http.guard import caller
from holon.http.openapi import Endpoint, Query
from holon.http.problems import HttpProblem
from holon.http.service import Service

__all__ = ["ENDPOINTS", "from_rest_shape"]


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


async def list_workflows(request: Request) -> Response:
    await caller(request)
    tag = request.query_params.get("tag")
    infos = await _service(request).steward.List(tag)
    return JSONResponse({"items": [i.model_dump(mode="json") for i in infos]})


async def describe_workflow(request: Request) -> Response:
    await caller(request)
    name = str(request.path_params["name"])
    version = request.query_params.get("version")
    return JSONResponse(await _service(request).steward.Describe(name, version))


async def register_workflow(request: Request) -> Response:
    identity = await caller(request)
    if not identity.admin:
        raise HttpProblem(403, f"only the {ADMIN!r} role registers workflows")
    document = from_rest_shape(await _document(request))
    info = await _service(request).steward.Load(document)
    return JSONResponse(info.model_dump(mode="json"), status_code=201)


async def _document(request: Request) -> dict[str, Any]:
    raw = await request.body()
    kind = request.headers.get("content-type", "application/json")
    try:
        document = yaml.safe_load(raw) if "yaml" in kind else json.loads(raw or b"null")
    except (ValueError, yaml.YAMLError) as exc:
        raise HttpProblem(400, f"the body is not a JSON or YAML document: {exc}") from None
    if not isinstance(document, dict):
        raise HttpProblem(
            422,
            "a workflow document is a mapping with name and steps",
            errors=[{"path": "(body)", "message": "expected a mapping"}],
        )
    return document


def from_rest_shape(document: dict[str, Any]) -> dict[str, Any]:
    """The document in holon's declarative shape: `team_id` becomes `owner`, a step's
    `type: agent` + `agent_id` becomes `agent:` (and `type: task` + `task_id`,
    `task:`). A document already in holon's shape is returned as it is."""
    converted = dict(document)
    if "team_id" in converted:
        converted["owner"] = converted.pop("team_id")
    steps = converted.get("steps")
    if isinstance(steps, list):
        converted["steps"] = [_step(step, index) for index, step in enumerate(steps)]
    return converted


def _step(step: Any, index: int) -> Any:
    if not isinstance(step, dict) or "type" not in step:
        return step
    converted = dict(step)
    kind = converted.pop("type")
    if kind not in ("agent", "task"):
        raise HttpProblem(
            422,
            f"steps.{index}.type: {kind!r} is not a step type; types: agent, task",
            errors=[{"path": f"steps.{index}.type", "message": "one of agent, task"}],
        )
    reference = converted.pop(f"{kind}_id", None)
    if reference is not None:
        converted[kind] = reference
    return converted


async def openapi(request: Request) -> Response:
    return JSONResponse(request.app.state.openapi)


ENDPOINTS = [
    Endpoint(
        "GET",
        "/api/v1/workflows",
        list_workflows,
        "The latest version of every workflow, with run counts",
        "workflows",
        query=[Query("tag", "only workflows with this tag")],
    ),
    Endpoint(
        "POST",
        "/api/v1/workflows",
        register_workflow,
        "Register a declarative workflow (holon's shape or the REST shape)",
        "workflows",
        answers={201: "registered", 403: "admins only", 422: "the document does not compile"},
    ),
    Endpoint(
        "GET",
        "/api/v1/workflows/{name}",
        describe_workflow,
        "One workflow: schemas, graph, Mermaid, triggers, versions, run counts",
        "workflows",
        query=[Query("version", "a version (default: the latest)")],
        answers={404: "no such workflow"},
    ),
    Endpoint(
        "GET",
        "/api/v1/openapi.json",
        openapi,
        "This document",
        "meta",
        public=True,
    ),
]
