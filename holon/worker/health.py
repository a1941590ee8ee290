"""Liveness and readiness of a worker over HTTP, for container orchestrators.

`GET /livez` answers 200 while the process serves; `GET /readyz` answers 200 while the
worker is connected and claiming runs, 503 before that and while it drains (so that a
rolling deploy sends no new work to a worker on its way out; a worker claims its own
work, so readiness is for operators and dashboards as much as for the orchestrator).

Two fixed endpoints with no body to read: a few lines on a TCP listener rather than a web
framework in every worker's dependencies.
"""

from __future__ import annotations

import logging

import anyio
from anyio.abc import SocketStream, TaskStatus

from holon.worker.worker import Worker

__all__ = ["serve_health"]

logger = logging.getLogger("holon.worker")

_MAX_REQUEST = 8192
"""The most bytes read of a request's head."""


async def serve_health(
    worker: Worker,
    port: int,
    host: str = "0.0.0.0",
    *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Answer health probes on `host:port` until cancelled; reports the port bound
    (`port` 0 picks a free one) through `task_status`."""
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    bound = listener.extra(anyio.abc.SocketAttribute.local_port)
    logger.info("health probes on port %d: /livez, /readyz", bound)
    task_status.started(bound)
    async with listener:
        await listener.serve(lambda stream: _answer(worker, stream))


async def _answer(worker: Worker, stream: SocketStream) -> None:
    async with stream:
        request = b""
        with anyio.move_on_after(5):
            while b"\r\n\r\n" not in request and len(request) < _MAX_REQUEST:
                try:
                    request += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return
        line = request.split(b"\r\n", 1)[0].decode("latin-1")
        method, _, rest = line.partition(" ")
        path = rest.partition(" ")[0]
        if method not in ("GET", "HEAD"):
            status, text = "405 Method Not Allowed", "only GET\n"
        elif path == "/livez":
            status, text = "200 OK", "alive\n"
        elif path == "/readyz":
            if worker.ready:
                status, text = "200 OK", f"ready: {worker.running_runs} runs executing\n"
            else:
                status, text = "503 Service Unavailable", "not ready: starting or draining\n"
        else:
            status, text = "404 Not Found", "try /livez or /readyz\n"
        body = b"" if method == "HEAD" else text.encode()
        head = (
            f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(text.encode())}\r\nConnection: close\r\n\r\n"
        )
        try:
            await stream.send(head.encode() + body)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return
