"""Serving the app with uvicorn: what `holon serve APP` does.

```py
from holon.http import serve
await serve(steward, port=8080, worker=True)     # until SIGINT / SIGTERM
```
"""

from __future__ import annotations

import socket
import sys
from typing import Any, TextIO

import uvicorn
from starlette.applications import Starlette

from holon.control.steward import Steward
from holon.definition.builder import Workflow
from holon.http.app import create_app
from holon.runtime.log_context import install_log_context
from holon.stores.base import Store
from holon.worker.serve import load_app

__all__ = ["listening_socket", "run_app", "serve", "uvicorn_server"]


def listening_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A TCP socket bound to `host:port` (0: a free port) and listening, to hand to
    `uvicorn_server(app).serve([sock])`: connections wait in its backlog until the
    server accepts them, so a caller knows the port before the server is up.

    Made with `IPPROTO_TCP` named: asyncio turns Nagle's algorithm off (TCP_NODELAY) only
    on connections of such sockets; without it every small response waits ~40 ms for
    the peer's delayed ACK."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def uvicorn_server(app: Starlette, host: str = "127.0.0.1", port: int = 8080) -> uvicorn.Server:
    """A uvicorn server for `app`, on the asyncio loop already running; its open
    event streams are cut after 5 seconds when it shuts down."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    return uvicorn.Server(config)


def _announce(app: Starlette, url: str, out: TextIO | None) -> None:
    stream = out or sys.stderr
    token = app.state.admin_token
    if token is not None:
        print(
            "No tokens are configured (HOLON_AUTH_FILE or HOLON_AUTH); this admin token "
            f"works until the server stops, and is not shown again:\n    {token}",
            file=stream,
            flush=True,
        )
    print(f"holon: serving on {url} (dashboard: {url}/dashboard)", file=stream, flush=True)


async def serve(
    target: Steward | Starlette,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    out: TextIO | None = None,
    **app_options: Any,
) -> None:
    """Serve a steward's API (made with `create_app(steward, **app_options)`), or an
    app already made, on the running event loop until SIGINT or SIGTERM. A token made
    because none was configured is printed once, to `out` (default: standard error).
    Log records get the run id and step of the run being executed."""
    install_log_context()
    app = target if isinstance(target, Starlette) else create_app(target, **app_options)
    sock = listening_socket(host, port)
    _announce(app, f"http://{host}:{sock.getsockname()[1]}", out)
    await uvicorn_server(app, host, port).serve([sock])


def run_app(
    spec: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    store: Store | str | None = None,
    worker: bool = True,
    out: TextIO | None = None,
    **app_options: Any,
) -> None:
    """What `holon serve APP` does: import `module:attr` (a `Steward`, a `Workflow` or
    a list of them, as for `holon worker`), serve its API with uvicorn (uvloop and
    httptools when installed) until SIGINT or SIGTERM, executing its workflows here
    unless `worker=False`. Workflows given without a steward are registered in a
    steward over `store` (default: `HOLON_STORE`, else the SQLite default)."""
    target = load_app(spec)
    if isinstance(target, Steward):
        steward, workflows = target, []
    else:
        steward = Steward(store)
        workflows = [target] if isinstance(target, Workflow) else list(target)
    install_log_context()
    app = create_app(steward, worker=worker, register=workflows, **app_options)
    sock = listening_socket(host, port)
    _announce(app, f"http://{host}:{sock.getsockname()[1]}", out)
    uvicorn_server(app, host, port).run([sock])
