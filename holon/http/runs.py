"""The run endpoints: start, find, read and steer runs, one at a time or in bulk.

Each endpoint authenticates the caller, checks its permission for the run's workflow,
and calls the same verb a `RunHandle` offers in code, as the caller's identity.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from holon.control.bulk import BULK_VERBS, RunFilter, apply_bulk
from holon.http.bodies import (
    AnswerBody,
    BulkBody,
    DecisionBody,
    EventBody,
    ForkBody,
    RerunBody,
    ResumeBody,
    RetryBody,
    StartBody,
    WorkflowStartBody,
)
from holon.http.guard import caller, read_body
from holon.http.openapi import Endpoint, Query
from holon.http.problems import HttpProblem
from holon.http.service import Service, run_view, wait_view
from holon.http.sse import run_events
from holon.stores.base import NewEvent, RunStatus

__all__ = ["ENDPOINTS"]

_MAX_PAGE = 500


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def _run_id(request: Request) -> str:
    return str(request.path_params["run_id"])


def _int(request: Request, name: str, default: int, low: int = 0, high: int = _MAX_PAGE) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise HttpProblem(
            422,
            f"{name}: expected a whole number from {low} to {high}, got {raw!r}",
            errors=[{"path": name, "message": f"a whole number from {low} to {high}"}],
        )
    return int(raw)


def _status(raw: str | None) -> RunStatus | None:
    if raw is None:
        return None
    try:
        return RunStatus(raw)
    except ValueError:
        known = ", ".join(s.value for s in RunStatus)
        raise HttpProblem(
            422,
            f"status: {raw!r} is not a run status; statuses: {known}",
            errors=[{"path": "status", "message": f"one of {known}"}],
        ) from None


async def _answer(service: Service, run_id: str) -> JSONResponse:
    return JSONResponse(run_view(await service.record(run_id)))


# -- starting --------------------------------------------------------------------------


async def start_run(request: Request) -> Response:
    identity = await caller(request)
    body = await read_body(request, StartBody)
    name = str(request.path_params["name"])
    record, created = await _service(request).start(
        identity, name, body.input, run_id=body.run_id, version=body.version
    )
    return JSONResponse(run_view(record), status_code=201 if created else 200)


async def start_workflow(request: Request) -> Response:
    identity = await caller(request)
    body = await read_body(request, WorkflowStartBody)
    name = str(request.path_params["name"])
    record, _ = await _service(request).start(identity, name, body.input)
    return JSONResponse(run_view(record), status_code=201)


# -- reading ---------------------------------------------------------------------------


async def list_runs(request: Request) -> Response:
    await caller(request)
    service = _service(request)
    page = await service.list_runs(
        _status(request.query_params.get("status")),
        request.query_params.get("workflow"),
        _int(request, "limit", 50, low=1),
        request.query_params.get("cursor"),
    )
    counts = await service.store.count_runs(workflow=request.query_params.get("workflow"))
    return JSONResponse(
        {
            "items": [s.model_dump(mode="json") for s in page.items],
            "next_cursor": page.next_cursor,
            "counts": {status.value: n for status, n in counts.items()},
        }
    )


async def get_run(request: Request) -> Response:
    await caller(request)
    return await _answer(_service(request), _run_id(request))


async def timeline(request: Request) -> Response:
    await caller(request)
    service = _service(request)
    run_id = _run_id(request)
    await service.exists(run_id)
    after = _int(request, "after", 0, high=2**62)
    limit = _int(request, "limit", 100, low=1)
    events = await service.store.timeline(run_id, after, limit + 1)
    more = len(events) > limit
    events = events[:limit]
    return JSONResponse(
        {
            "items": [e.model_dump(mode="json") for e in events],
            "next_after": events[-1].seq if more else None,
        }
    )


async def approvals(request: Request) -> Response:
    identity = await caller(request)
    page = await _service(request).pending(
        identity,
        limit=_int(request, "limit", 100, low=1),
        cursor=request.query_params.get("cursor"),
    )
    return JSONResponse(
        {"items": [wait_view(i) for i in page.items], "next_cursor": page.next_cursor}
    )


async def whoami(request: Request) -> Response:
    return JSONResponse((await caller(request)).public())


# -- steering --------------------------------------------------------------------------


async def approve(request: Request) -> Response:
    return await _decide(request, "approve")


async def reject(request: Request) -> Response:
    return await _decide(request, "reject")


async def _decide(request: Request, verdict: str) -> Response:
    identity = await caller(request)
    body = await read_body(request, DecisionBody)
    service = _service(request)
    run_id = _run_id(request)
    await service.steerable(identity, "approve", run_id)
    handle = service.handle(run_id)
    decide = handle.Approve if verdict == "approve" else handle.Reject
    await decide(
        identity.name,
        body.comment,
        body.digest,
        roles=sorted(identity.roles),
        wait_id=body.wait_id,
    )
    return await _answer(service, run_id)


async def answer(request: Request) -> Response:
    identity = await caller(request)
    body = await read_body(request, AnswerBody)
    service = _service(request)
    run_id = _run_id(request)
    await service.steerable(identity, "approve", run_id)
    await service.handle(run_id).Answer(
        body.value, identity.name, body.comment, wait_id=body.wait_id
    )
    return await _answer(service, run_id)


async def send_event(request: Request) -> Response:
    identity = await caller(request)
    body = await read_body(request, EventBody)
    service = _service(request)
    run_id = _run_id(request)
    await service.steerable(identity, "steer", run_id)
    await service.handle(run_id).Send(body.name, body.payload, body.event_id)
    # Who sent it is recorded beside the delivery (an event itself names no person).
    await service.store.append_timeline(
        run_id,
        [
            NewEvent(
                kind="event_sent",
                at=service.clock.now(),
                data={"by": identity.name, "name": body.name, "event_id": body.event_id},
            )
        ],
    )
    return await _answer(service, run_id)


async def pause(request: Request) -> Response:
    identity = await caller(request)
    service = _service(request)
    run_id = _run_id(request)
    await service.steerable(identity, "steer", run_id)
    await service.handle(run_id).Pause(by=identity.name)
    return await _answer(service, run_id)


async def resume(request: Request) -> Response:
    identity = await caller(request)
    body = await read_body(request, ResumeBody)
    service = _service(request)
    run_id = _run_id(request)
    await service.steerable(identity, "steer", run_id)
    await service.handle(run_id).Resume(goto=body.goto, state=body.state, by=identity.name)
    return await _answer(service, run_id)


async def stop(request: Request) -> Response:
    identity = await caller(request)
    service = _service(request)
    run_id = _run_id(request)
    await service.steerable(identity, "steer", run_id)
    await service.handle(run_id).Stop(by=identity.name, timeout=service.lease_ttl)
    return await _answer(service, run_id)


# -- surgery ---------------------------------------------------------------------------


async def retry(request: Request) -> Response:
    identity = await caller(request)
    body = await read_body(request, RetryBody)
    service = _service(request)
    run_id = _run_id(request)
    await service.steerable(identity, "steer", run_id)
    await service.handle(run_id).Retry(goto=body.goto, state=body.state, by=identity.name)
    return await _answer(service, run_id)


async def rerun(request: Request) -> Response:
    identity = await caller(request)
    body = await read_body(request, RerunBody)
    service = _service(request)
    run_id = _run_id(request)
    await service.steerable(identity, "steer", run_id)
    report = await service.handle(run_id).Rerun(body.step, body.seq)
    return JSONResponse({**_plain(report), "same": report.same})


async def replay(request: Request) -> Response:
    identity = await caller(request)
    service = _service(request)
    run_id = _run_id(request)
    await service.steerable(identity, "steer", run_id)
    report = await service.handle(run_id).Replay(by=identity.name)
    return JSONResponse({**_plain(report), "diverged": report.diverged})


async def fork(request: Request) -> Response:
    identity = await caller(request)
    body = await read_body(request, ForkBody)
    service = _service(request)
    run_id = _run_id(request)
    record = await service.steerable(identity, "steer", run_id)
    await service.check(identity, "start", record.workflow)
    forked = await service.handle(run_id).Fork(body.at, body.state, by=identity.name)
    service.kick(forked.run_id)
    return JSONResponse(run_view(await service.record(forked.run_id)), status_code=201)


def _plain(report: Any) -> dict[str, Any]:
    """A report dataclass as JSON data."""
    return json.loads(json.dumps(dataclasses.asdict(report), default=str))  # type: ignore[no-any-return]


# -- bulk ------------------------------------------------------------------------------


async def bulk(request: Request) -> Response:
    identity = await caller(request)
    body = await read_body(request, BulkBody)
    verb = str(request.path_params["verb"])
    if verb not in BULK_VERBS:
        raise HttpProblem(404, f"no bulk verb {verb!r}; verbs: {list(BULK_VERBS)}")
    service = _service(request)
    if body.workflow is not None:
        await service.check(identity, "steer", body.workflow)
    elif service.auth.rules and not identity.admin:
        raise HttpProblem(
            403,
            "bulk verbs over every workflow are for admins; name a workflow",
            errors=[{"path": "workflow", "message": "required for this identity"}],
        )
    runs = RunFilter(
        workflow=body.workflow,
        status=_status(body.status),
        version=body.version,
        started_after=body.started_after,
        started_before=body.started_before,
    )
    report = await apply_bulk(service, verb, runs, by=identity.name)
    for outcome in report.outcomes:
        if outcome.outcome == "done" and outcome.status == RunStatus.QUEUED.value:
            service.kick(outcome.run_id)
    return JSONResponse(
        {"verb": verb, "counts": report.counts, "outcomes": _plain(report)["outcomes"]}
    )


_RUN = "/api/v1/runs/{run_id}"
_STEER = {404: "no such run", 403: "may not steer this run", 409: "not in a state for it"}

ENDPOINTS = [
    Endpoint(
        "POST",
        "/api/v1/workflows/{name}/runs",
        start_run,
        "Start a run (idempotent on run_id)",
        "runs",
        body=StartBody,
        answers={
            201: "started",
            404: "no such workflow",
            403: "may not start it",
            409: "the run id is taken by another run",
            413: "input too large",
            422: "the input does not fit",
        },
    ),
    Endpoint(
        "POST",
        "/api/v1/workflows/{name}/start",
        start_workflow,
        "Start a run (the reference REST shape)",
        "runs",
        body=WorkflowStartBody,
        answers={
            201: "started",
            404: "no such workflow",
            403: "may not start it",
            422: "bad input",
        },
    ),
    Endpoint(
        "GET",
        "/api/v1/runs",
        list_runs,
        "List runs, newest first, with counts by status",
        "runs",
        query=[
            Query("status", "only runs in this status"),
            Query("workflow", "only runs of this workflow"),
            Query("limit", "at most this many (1-500)", "integer"),
            Query("cursor", "next_cursor of the previous page"),
        ],
        answers={422: "bad filter"},
    ),
    # Before the run's own routes, which would take `bulk` for a run id.
    Endpoint(
        "POST",
        "/api/v1/runs/bulk/{verb}",
        bulk,
        "Apply stop, pause, resume or retry to every run a filter matches",
        "steer",
        body=BulkBody,
        answers={404: "no such verb", 403: "may not steer these runs", 422: "bad filter"},
    ),
    Endpoint("GET", _RUN, get_run, "One run", "runs", answers={404: "no such run"}),
    Endpoint(
        "GET",
        f"{_RUN}/timeline",
        timeline,
        "The run's timeline, a page at a time",
        "runs",
        query=[
            Query("after", "events after this sequence number", "integer"),
            Query("limit", "at most this many (1-500)", "integer"),
        ],
        answers={404: "no such run"},
    ),
    Endpoint(
        "GET",
        f"{_RUN}/events",
        run_events,
        "The timeline live, as server-sent events (resumes after Last-Event-ID)",
        "runs",
        query=[
            Query("after", "start after this sequence number", "integer"),
            Query("named", "0: leave each message's `event` field out"),
        ],
        answers={404: "no such run"},
        stream=True,
    ),
    Endpoint(
        "POST", f"{_RUN}/approve", approve, "Approve", "steer", body=DecisionBody, answers=_STEER
    ),
    Endpoint(
        "POST", f"{_RUN}/reject", reject, "Reject", "steer", body=DecisionBody, answers=_STEER
    ),
    Endpoint(
        "POST",
        f"{_RUN}/answer",
        answer,
        "Answer a question",
        "steer",
        body=AnswerBody,
        answers={**_STEER, 422: "answer refused"},
    ),
    Endpoint(
        "POST",
        f"{_RUN}/events",
        send_event,
        "Send an event",
        "steer",
        body=EventBody,
        answers=_STEER,
    ),
    Endpoint("POST", f"{_RUN}/pause", pause, "Pause", "steer", answers=_STEER),
    Endpoint(
        "POST",
        f"{_RUN}/resume",
        resume,
        "Resume (goto, state patch)",
        "steer",
        body=ResumeBody,
        answers={**_STEER, 422: "unknown step or bad state"},
    ),
    Endpoint("POST", f"{_RUN}/stop", stop, "Stop", "steer", answers=_STEER),
    Endpoint(
        "POST",
        f"{_RUN}/retry",
        retry,
        "Retry a failed, stopped or expired run from its last checkpoint",
        "surgery",
        body=RetryBody,
        answers={**_STEER, 422: "unknown step or bad state"},
    ),
    Endpoint(
        "POST",
        f"{_RUN}/rerun",
        rerun,
        "Run one step again in a sandbox and compare (the run is untouched)",
        "surgery",
        body=RerunBody,
        answers={**_STEER, 422: "unknown step"},
    ),
    Endpoint(
        "POST",
        f"{_RUN}/replay",
        replay,
        "Replay the whole run in a sandbox; report the first divergence",
        "surgery",
        answers=_STEER,
    ),
    Endpoint(
        "POST",
        f"{_RUN}/fork",
        fork,
        "Start a new run from a checkpoint of this one",
        "surgery",
        body=ForkBody,
        answers={201: "the new run", **_STEER, 422: "no such checkpoint or bad state"},
    ),
    Endpoint(
        "GET",
        "/api/v1/approvals",
        approvals,
        "The approvals the caller can act on now",
        "runs",
        query=[Query("limit", "at most this many", "integer"), Query("cursor", "next page")],
    ),
    Endpoint("GET", "/api/v1/whoami", whoami, "The caller's identity and roles", "auth"),
]
