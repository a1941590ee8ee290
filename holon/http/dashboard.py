"""The dashboard at `/dashboard`: server-rendered pages over the same service as the API.

Signing in takes a token; the session cookie (signed, `SameSite=Strict`, HTTP-only)
keeps the token's SHA-256 digest, never the token, and a random CSRF token that every
write must echo (`X-CSRF-Token`, sent by the page's script). The buttons call the API
endpoints themselves, so the dashboard can do nothing the API does not allow to the
same identity.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from holon.control.sandbox import is_sandbox
from holon.errors import HolonError
from holon.http.auth import Auth, Identity, hash_token
from holon.http.graph import graph_svg
from holon.http.guard import caller
from holon.http.pages import approvals_page, frame, login_page, run_page, runs_page
from holon.http.problems import HttpProblem
from holon.http.service import Service
from holon.runtime.waits import describe
from holon.stores.base import RunStatus

__all__ = ["dashboard_routes"]

_STATIC = Path(__file__).parent / "static"
_SHOWN = 500


def _signed_in(request: Request) -> Identity | None:
    auth: Auth = request.app.state.auth
    digest = request.session.get("token_sha256")
    return auth.knows_digest(digest) if isinstance(digest, str) else None


_HEADERS = {
    # Scripts and styles from this app only, no framing: an injected tag runs nothing.
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _html(text: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status_code, headers=_HEADERS)


def _page(request: Request, title: str, body: str, identity: Identity) -> HTMLResponse:
    return _html(frame(title, body, identity, request.session.get("csrf")))


def _to_login() -> RedirectResponse:
    return RedirectResponse("/dashboard/login", status_code=303)


async def login_form(request: Request) -> Response:
    return _html(login_page())


async def login(request: Request) -> Response:
    form = await request.form()
    token = form.get("token")
    auth: Auth = request.app.state.auth
    identity = auth.identify(token) if isinstance(token, str) and token else None
    if identity is None:
        return _html(login_page("That token is not valid."), status_code=401)
    request.session.clear()
    request.session["token_sha256"] = hash_token(str(token))
    request.session["csrf"] = secrets.token_urlsafe(24)
    return RedirectResponse("/dashboard", status_code=303)


async def logout(request: Request) -> Response:
    await caller(request)  # checks the CSRF token of the session
    request.session.clear()
    return _to_login()


async def runs(request: Request) -> Response:
    identity = _signed_in(request)
    if identity is None:
        return _to_login()
    service: Service = request.app.state.service
    status = request.query_params.get("status") or None
    workflow = request.query_params.get("workflow") or None
    try:
        chosen = RunStatus(status) if status else None
    except ValueError:
        raise HttpProblem(422, f"status: {status!r} is not a run status") from None
    page = await service.list_runs(chosen, workflow, 50, request.query_params.get("cursor"))
    counts = await service.store.count_runs(workflow=workflow)
    workflows = [i.name for i in await service.steward.List()]
    body = runs_page(
        page.items,
        {s.value: n for s, n in counts.items()},
        workflows,
        status,
        workflow,
        page.next_cursor,
    )
    return _page(request, "Runs", body, identity)


async def run(request: Request) -> Response:
    identity = _signed_in(request)
    if identity is None:
        return _to_login()
    service: Service = request.app.state.service
    record = await service.record(str(request.path_params["run_id"]))
    steps: list[str] = []
    graph = "<p>No graph: the workflow is not in the catalogue.</p>"
    try:
        info = await service.steward.Get(record.workflow, record.current_version)
    except HolonError:
        info = None
    if info is not None and info.kind == "flow":
        steps = [s.name for s in info.graph.steps if not s.name.startswith("__")]
        wait = record.body.wait
        current = record.body.cursor.step if record.body.cursor else None
        graph = graph_svg(
            info.graph,
            done=set(record.body.counts),
            current=None if wait is not None else current,
            waiting=wait.step if wait is not None else None,
        )
    # The page shows the timeline so far (to the last _SHOWN events); its script streams
    # the rest from there.
    progress_seq = record.event_seq
    events = await service.store.timeline(record.run_id, max(0, progress_seq - _SHOWN), _SHOWN)
    body = run_page(record, describe(record), graph, steps, events, is_sandbox(record))
    return _page(request, f"Run {record.run_id}", body, identity)


async def approvals(request: Request) -> Response:
    identity = _signed_in(request)
    if identity is None:
        return _to_login()
    service: Service = request.app.state.service
    page = await service.pending(identity)
    return _page(request, "Approvals", approvals_page(page.items), identity)


async def home(request: Request) -> Response:
    return RedirectResponse("/dashboard", status_code=307)


def dashboard_routes() -> list[BaseRoute]:
    return [
        Route("/", home, methods=["GET"]),
        Route("/dashboard", runs, methods=["GET"]),
        Route("/dashboard/login", login_form, methods=["GET"]),
        Route("/dashboard/login", login, methods=["POST"]),
        Route("/dashboard/logout", logout, methods=["POST"]),
        Route("/dashboard/approvals", approvals, methods=["GET"]),
        Route("/dashboard/runs/{run_id}", run, methods=["GET"]),
        Mount("/dashboard/static", StaticFiles(directory=_STATIC), name="dashboard-static"),
    ]
