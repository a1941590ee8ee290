"""A run's timeline live, as server-sent events.

Each timeline event is one SSE message: `id` is its sequence number, `event` its kind,
`data` the event as JSON (`?named=0` leaves `event` out, so that a browser's
`EventSource.onmessage` sees every kind). A client that reconnects sends `Last-Event-ID` (browsers'
`EventSource` does so by itself) and gets what it missed, from the store, and nothing
twice. The stream ends with an `end` message once the run has ended and every event up
to its end was sent.

What the run's steps emit (`ctx.Emit`) comes between the timeline events as `emitted`
messages without an `id` (they are not stored, so a reconnect resumes from the last
timeline event); their `data` is the `Emitted` item as JSON.

Writes made in this process wake the stream at once (the store's change signals);
writes by other processes (workers) are seen at the next look, every `poll_interval`.
A comment line every `keepalive` seconds keeps proxies from closing a quiet stream.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from holon.http.guard import caller
from holon.http.problems import HttpProblem
from holon.http.service import Service
from holon.stores.base import Emitted, TimelineEvent

__all__ = ["format_emitted", "format_event", "run_events", "timeline_stream"]

_PAGE = 200
KEEPALIVE = 15.0


def format_emitted(item: Emitted, named: bool = True) -> str:
    """An emitted item as an SSE message: no `id` (it is not stored)."""
    fields = {"run_id": item.run_id, "seq": item.seq, "kind": item.kind, "at": item.at}
    fields.update(step=item.step, data=item.data, emitted=True)
    data = json.dumps(fields, separators=(",", ":"), default=str)
    kind = "event: emitted\n" if named else ""
    return f"{kind}data: {data}\n\n"


def _emitted(feed: MemoryObjectReceiveStream[Emitted]) -> list[Emitted]:
    items: list[Emitted] = []
    while True:
        try:
            items.append(feed.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream):
            return items


def format_event(event: TimelineEvent, named: bool = True) -> str:
    data = json.dumps(event.model_dump(mode="json"), separators=(",", ":"))
    kind = f"event: {event.kind}\n" if named else ""
    return f"id: {event.seq}\n{kind}data: {data}\n\n"


async def timeline_stream(
    service: Service,
    run_id: str,
    after: int,
    keepalive: float = KEEPALIVE,
    named: bool = True,
) -> AsyncIterator[str]:
    """The SSE messages of `run_id`'s timeline after sequence `after`, live."""
    store = service.store
    feed = store.signals.subscribe(run_id)
    try:
        async for message in _stream(service, run_id, after, keepalive, named, feed):
            yield message
    finally:
        store.signals.unsubscribe(run_id, feed)


async def _stream(
    service: Service,
    run_id: str,
    after: int,
    keepalive: float,
    named: bool,
    feed: MemoryObjectReceiveStream[Emitted],
) -> AsyncIterator[str]:
    store = service.store
    seen = after
    quiet_since = anyio.current_time()
    yield "retry: 2000\n\n"
    while True:
        change = store.signals.event(run_id)
        for item in _emitted(feed):
            yield format_emitted(item, named)
        # The cheap read first: a quiet run costs one small read a poll, not a timeline's.
        progress = await store.run_progress(run_id)
        if progress is None:
            yield 'event: end\ndata: {"reason":"deleted"}\n\n'
            return
        if progress.event_seq > seen:
            events = await store.timeline(run_id, seen, _PAGE)
            for event in events:
                seen = event.seq
                yield format_event(event, named)
            if not events:  # trimmed from a capped timeline: nothing more to send
                seen = progress.event_seq
            quiet_since = anyio.current_time()
            continue
        if progress.status.terminal:
            for item in _emitted(feed):
                yield format_emitted(item, named)
            yield f'event: end\ndata: {{"status":"{progress.status.value}"}}\n\n'
            return
        if anyio.current_time() - quiet_since >= keepalive:
            quiet_since = anyio.current_time()
            yield ": keep-alive\n\n"
        await store.signals.wait(change, service.poll_interval)


def _after(request: Request) -> int:
    raw = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
    if not raw.isdigit():
        raise HttpProblem(
            422,
            f"Last-Event-ID / after: expected a sequence number, got {raw!r}",
            errors=[{"path": "after", "message": "a whole number"}],
        )
    return int(raw)


async def run_events(request: Request) -> Response:
    await caller(request)
    service: Service = request.app.state.service
    run_id = str(request.path_params["run_id"])
    await service.exists(run_id)  # 404 before the stream starts
    return StreamingResponse(
        timeline_stream(
            service, run_id, _after(request), named=request.query_params.get("named") != "0"
        ),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
