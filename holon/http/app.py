"""`create_app`: the ASGI app of the HTTP API, webhooks and dashboard, over one store.

```py
app = create_app(steward, auth=Auth.from_file("tokens.yaml"), worker=True)
# uvicorn module:app, or holon.http.serve(app)
```
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import anyio
from anyio.abc import TaskStatus
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import Response

from holon.control.observed import ObservedStore, Observer
from holon.control.steward import Steward
from holon.control.telemetry import RunSpans
from holon.definition.builder import Workflow
from holon.errors import HolonError
from holon.http.auth import Auth
from holon.http.dashboard import dashboard_routes
from holon.http.guard import BodyLimit, RateLimiter
from holon.http.hooks import ENDPOINTS as HOOK_ENDPOINTS
from holon.http.hooks import WebhookSettings
from holon.http.notify import Notifier
from holon.http.openapi import Endpoint, openapi_document, routes
from holon.http.problems import HttpProblem, from_error, problem
from holon.http.runs import ENDPOINTS as RUN_ENDPOINTS
from holon.http.service import Service
from holon.http.workflows import ENDPOINTS as WORKFLOW_ENDPOINTS
from holon.worker.worker import Worker

__all__ = ["create_app", "endpoints"]

logger = logging.getLogger("holon.http")


def endpoints() -> list[Endpoint]:
    """Every endpoint of the API, in the order the router tries them."""
    return [*WORKFLOW_ENDPOINTS, *RUN_ENDPOINTS, *HOOK_ENDPOINTS]


def create_app(
    steward: Steward,
    *,
    auth: Auth | None = None,
    worker: Worker | bool = False,
    max_body: int = 1 << 20,
    rate: float | None = 100.0,
    burst: int = 200,
    poll_interval: float = 1.0,
    session_secret: str | None = None,
    webhook_secret: str | None = None,
    webhook_tolerance: float = 300.0,
    notifier: Notifier | None = None,
    telemetry: bool = False,
    register: Sequence[Workflow] = (),
    extra: Sequence[Endpoint] = (),
) -> Starlette:
    """The API over `steward`'s store and catalogue.

    Args:
        steward: the catalogue and store; workflows registered with it in this process
            are the ones a `worker` executes.
        auth: tokens and permissions; by default from `HOLON_AUTH_FILE` or
            `HOLON_AUTH`, else one random admin token, kept in `app.state.admin_token`
            (`holon.http.serve` prints it once).
        worker: True executes the steward's workflows in this process (a `Worker`
            made when the app starts, stopped with it); a `Worker` to use that one.
        max_body: the largest request body, in bytes (413 past it).
        rate: requests a second each caller may make (429 past it), None for no limit.
        burst: how many requests a caller may make at once before `rate` applies.
        poll_interval: seconds between looks at runs changed by other processes (an
            event stream shows a write of this process at once, another's within this).
        session_secret: signs the dashboard's session cookies (default: random, so
            sessions end when the process does).
        webhook_secret: the key webhook deliveries are signed with, for routes without
            their own (default: `HOLON_WEBHOOK_SECRET`).
        webhook_tolerance: seconds a delivery's timestamp may be away from now.
        notifier: sends notices when runs need someone (`holon.http.notify`); it sees
            the writes of this process: its worker's and its operators'.
        telemetry: OpenTelemetry spans for the runs and steps this process's worker
            executes (`holon.control.telemetry`; needs `holon[otel]`).
        register: workflows to register with the steward when the app starts (and so
            to execute, with `worker=True`).
        extra: more endpoints, tried before the API's own.
    """
    admin_token: str | None = None
    if auth is None:
        auth = Auth.from_env()
    if auth is None:
        auth, admin_token = Auth.generate()
    observers: list[Observer] = []
    if notifier is not None:
        notifier.store = steward.store
        observers.append(notifier.observe)
    if telemetry:
        observers.append(RunSpans().observe)
    store = ObservedStore(steward.store, observers).store if observers else steward.store
    given_worker = worker if isinstance(worker, Worker) else None
    service = Service(steward, auth, store=store, worker=given_worker, poll_interval=poll_interval)
    table = [*extra, *endpoints()]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await steward.store.open()
        for workflow in register:
            await steward.Register(workflow)
        chosen_worker = given_worker or (Worker(steward, store=store) if worker else None)
        service.worker = chosen_worker
        async with anyio.create_task_group() as group:
            notices = anyio.CancelScope()
            if notifier is not None:
                await group.start(_run_notifier, notifier, notices)
            if chosen_worker is not None:
                await group.start(_run_worker, chosen_worker)
            try:
                yield
            finally:
                await service.close()
                if chosen_worker is not None:
                    chosen_worker.stop()
                notices.cancel()

    app = Starlette(
        routes=[*routes(table), *dashboard_routes()],
        middleware=[
            Middleware(BodyLimit, max_bytes=max_body),
            Middleware(
                SessionMiddleware,
                secret_key=session_secret or secrets.token_urlsafe(32),
                session_cookie="holon_session",
                same_site="strict",
                https_only=False,
            ),
        ],
        exception_handlers={
            HttpProblem: _problem,
            HolonError: _holon_error,
            HTTPException: _http_exception,
        },
        lifespan=lifespan,
    )
    app.state.auth = auth
    app.state.service = service
    app.state.admin_token = admin_token
    app.state.limiter = RateLimiter(rate, burst) if rate is not None else None
    app.state.webhooks = WebhookSettings(
        webhook_secret or os.environ.get("HOLON_WEBHOOK_SECRET") or None, webhook_tolerance
    )
    app.state.openapi = openapi_document(
        table, title="holon", version=importlib.metadata.version("holon")
    )
    return app


async def _run_worker(
    worker: Worker, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    async with worker:
        task_status.started()
        await worker.run()


async def _run_notifier(
    notifier: Notifier,
    scope: anyio.CancelScope,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    with scope:
        await notifier.run(task_status=task_status)


async def _problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HttpProblem)
    return problem(exc.status, exc.detail, exc.errors, exc.headers)


async def _holon_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HolonError)
    response = from_error(exc)
    if response.status_code >= 500:
        logger.error("%s %s failed: %s", request.method, request.url.path, exc)
    return response


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return problem(exc.status_code, exc.detail, headers=dict(exc.headers or {}))
