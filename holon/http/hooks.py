"""`POST /hooks/{path}`: signed deliveries that start runs or reach waiting ones.

A delivery carries `X-Holon-Timestamp`, `X-Holon-Signature` (see `holon.http.signing`)
and `X-Holon-Delivery`, an id the sender keeps for the delivery across its retries.
The signature must hold with the route's secret (or the app's webhook secret) and the
timestamp be within the tolerance of now (401 otherwise). The delivery id makes a
delivery idempotent: a start's run id is made from it, and an event's id is it, so a
delivery sent twice starts one run or is recorded once.

Routes come from `Steward.Webhook(...)` in this process, then from the catalogue's
declarative `trigger: {type: webhook, path: ...}` entries.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from holon.control.catalogue import entries
from holon.control.webhooks import WebhookRoute, webhook_path
from holon.errors import HolonError
from holon.http.guard import limit
from holon.http.openapi import Endpoint
from holon.http.problems import HttpProblem
from holon.http.service import Service
from holon.http.signing import SignatureError, verify

__all__ = ["ENDPOINTS", "WebhookSettings", "find_route"]


@dataclass(frozen=True)
class WebhookSettings:
    secret: str | None
    """The key of routes that have none of their own (None: such routes refuse all)."""
    tolerance: float = 300.0
    """Seconds a delivery's timestamp may be away from now."""


async def find_route(service: Service, path: str) -> WebhookRoute | None:
    declared = {r.path: r for r in service.steward.webhooks}
    if path in declared:
        return declared[path]
    latest: dict[str, Any] = {}
    for info in sorted(await entries(service.store), key=lambda i: i.registered_at):
        latest[info.name] = info
    for info in latest.values():
        for trigger in info.triggers:
            if trigger.get("type") != "webhook" or "path" not in trigger:
                continue
            try:
                if webhook_path(trigger["path"]) == path:
                    return WebhookRoute(info.name, path, source=trigger.get("source"))
            except HolonError:
                continue
    return None


async def deliver(request: Request) -> Response:
    service: Service = request.app.state.service
    settings: WebhookSettings = request.app.state.webhooks
    path = str(request.path_params["path"]).strip("/")
    limit(request, f"webhook {path!r}")
    route = await find_route(service, path)
    if route is None:
        raise HttpProblem(404, f"no webhook at /hooks/{path}")
    secret = route.secret or settings.secret
    if secret is None:
        raise HttpProblem(
            401,
            f"webhook /hooks/{path} has no secret to check signatures with (HOLON_WEBHOOK_SECRET)",
        )
    body = await request.body()
    try:
        verify(
            secret,
            request.headers.get("x-holon-timestamp"),
            request.headers.get("x-holon-signature"),
            body,
            now=service.clock.now(),
            tolerance=settings.tolerance,
        )
    except SignatureError as exc:
        raise HttpProblem(401, f"webhook /hooks/{path}: {exc.message}") from None
    delivery = request.headers.get("x-holon-delivery", "").strip()
    if not delivery:
        raise HttpProblem(
            422,
            "X-Holon-Delivery is required: an id kept across retries of one delivery",
            errors=[{"path": "X-Holon-Delivery", "message": "required"}],
        )
    try:
        payload = json.loads(body) if body.strip() else None
    except ValueError as exc:
        raise HttpProblem(400, f"the delivery is not JSON: {exc}") from None
    runner = await service.runner(route.workflow)
    if route.event is not None:
        reached = await runner.Send(route.event, payload, event_id=delivery)
        for run_id in reached:
            service.kick(run_id)
        if reached or not route.start:
            return JSONResponse({"delivered_to": reached})
    run_id = "hook-" + hashlib.sha256(f"{path}\n{delivery}".encode()).hexdigest()[:32]
    duplicate = await service.store.load_run(run_id) is not None
    await runner.Run(payload, run_id=run_id, started_by=f"webhook:{path}")
    if not duplicate:
        service.kick(run_id)
    return JSONResponse({"run_id": run_id, "duplicate": duplicate}, status_code=202)


ENDPOINTS = [
    Endpoint(
        "POST",
        "/hooks/{path:path}",
        deliver,
        "A signed webhook delivery: starts a run, or reaches the runs waiting on its event",
        "webhooks",
        answers={
            202: "run started (or, duplicate: true, started by an earlier delivery)",
            401: "bad or stale signature",
            404: "no webhook at this path",
            422: "no delivery id, or the payload does not fit the workflow's input",
        },
        public=True,
    )
]
