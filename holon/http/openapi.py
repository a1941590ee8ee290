"""The route table's entries (`Endpoint`) and the OpenAPI 3.1 document made from them.

Each endpoint says its method, path, summary, body model and answers once; the router
and `/api/v1/openapi.json` are both made from that, so the document cannot drift from
what the app serves.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["Endpoint", "Query", "openapi_document", "routes"]

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Query:
    name: str
    description: str
    type: str = "string"


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    query: Sequence[Query] = ()
    answers: dict[int, str] = field(default_factory=dict)
    """Status -> what it means, besides 401 and 429 (every endpoint may answer those)."""
    stream: bool = False
    """Answers with server-sent events."""
    public: bool = False
    """Needs no bearer token (webhooks check their own signature)."""


def routes(endpoints: Sequence[Endpoint]) -> list[Route]:
    return [Route(e.path, e.handler, methods=[e.method]) for e in endpoints]


_PROBLEM = {"$ref": "#/components/schemas/Problem"}
_PROBLEM_SCHEMA = {
    "type": "object",
    "description": "An error (RFC 9457); `errors` names each field at fault by its path.",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"path": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
    "required": ["status", "detail"],
}


def openapi_document(endpoints: Sequence[Endpoint], *, title: str, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `endpoints`."""
    models = sorted({e.body for e in endpoints if e.body is not None}, key=lambda m: m.__name__)
    _, defs = models_json_schema(
        [(m, "validation") for m in models], ref_template="#/components/schemas/{model}"
    )
    schemas: dict[str, Any] = {**defs.get("$defs", {}), "Problem": _PROBLEM_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        template = re.sub(r"\{(\w+):\w+\}", r"{\1}", endpoint.path)
        paths.setdefault(template, {})[endpoint.method.lower()] = _operation(endpoint)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def _operation(endpoint: Endpoint) -> dict[str, Any]:
    name = endpoint.handler.__name__.strip("_")
    operation: dict[str, Any] = {
        "operationId": f"{endpoint.method.lower()}_{name}",
        "summary": endpoint.summary,
        "tags": [endpoint.tag],
    }
    parameters = [
        {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
        for p in _path_parameters(endpoint.path)
    ]
    parameters += [
        {"name": q.name, "in": "query", "description": q.description, "schema": {"type": q.type}}
        for q in endpoint.query
    ]
    if parameters:
        operation["parameters"] = parameters
    if endpoint.body is not None:
        operation["requestBody"] = {
            "required": False,
            "content": {
                "application/json": {
                    "schema": {"$ref": f"#/components/schemas/{endpoint.body.__name__}"}
                }
            },
        }
    content_type = "text/event-stream" if endpoint.stream else "application/json"
    responses: dict[str, Any] = {
        "200": {"description": "OK", "content": {content_type: {"schema": {}}}}
    }
    answers = {**endpoint.answers}
    if not endpoint.public:
        answers.setdefault(401, "no valid token")
    answers.setdefault(429, "over the caller's rate")
    for status, text in sorted(answers.items()):
        if status < 300:
            responses[str(status)] = {
                "description": text,
                "content": {content_type: {"schema": {}}},
            }
        else:
            responses[str(status)] = {
                "description": text,
                "content": {"application/problem+json": {"schema": _PROBLEM}},
            }
    operation["responses"] = responses
    if endpoint.public:
        operation["security"] = []
    return operation


def _path_parameters(path: str) -> list[str]:
    names = []
    for part in path.split("/"):
        if part.startswith("{") and part.endswith("}"):
            names.append(part[1:-1].split(":")[0])
    return names
