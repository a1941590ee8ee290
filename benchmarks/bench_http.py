"""The HTTP API under load on loopback: SSE watchers plus a steady rate of API calls.

    .venv/bin/python benchmarks/bench_http.py [--watchers 200] [--rate 1000] [--seconds 10]

The server is a separate process (`--serve`, started by this script): `create_app`
over a SQLite store with a worker, served by uvicorn, no rate limit. This process seeds
`--watchers` runs that wait for an approval, opens one SSE stream on each, then calls
the API at `--rate` calls a second for `--seconds` seconds (open loop: a call is sent
at its time whether or not earlier ones answered, over 32 keep-alive connections,
after one second of warm-up), alternating `GET /api/v1/runs/{id}`
and `GET /api/v1/runs/{id}/timeline` over the waiting runs. It reports the calls that
failed, the watchers whose stream broke, the rate reached, and p50 / p99 latency.

The reference, measured in the same run against the same server process at the same
rate: `GET /bench/ping`, a bare Starlette endpoint answering a fixed JSON object with no
token, store or holon code. Latencies are given as ratios against it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx

TOKEN = "bench-token-0123456789"
_CONNECTIONS = 32
"""Keep-alive connections the calls share."""


def serve(db: str) -> None:
    """The server process: prints its port, then serves until killed."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    from holon import Steward, Worker
    from holon.http import Auth, Identity, create_app
    from holon.http.openapi import Endpoint
    from holon.http.serve import listening_socket, uvicorn_server
    from tests.http_support import SHOP

    async def ping(request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def register() -> None:
        async with Steward(f"sqlite:///{db}") as steward:
            await steward.Register(SHOP)

    asyncio.run(register())
    steward = Steward(f"sqlite:///{db}")
    app = create_app(
        steward,
        auth=Auth.from_tokens({TOKEN: Identity("bench", frozenset({"admin"}))}),
        worker=Worker([SHOP], store=steward.store),
        rate=None,
        extra=[Endpoint("GET", "/bench/ping", ping, "reference", "bench", public=True)],
    )
    listening = listening_socket()
    print(listening.getsockname()[1], flush=True)
    # As uvicorn runs an app from the command line: uvloop and httptools when installed.
    uvicorn_server(app).run([listening])


async def _until_waiting(client: httpx.AsyncClient, run_id: str, auth: Any) -> None:
    """Follow the run's events until it waits (the worker executes it in the server)."""
    async with client.stream("GET", f"/api/v1/runs/{run_id}/events", headers=auth) as stream:
        async for line in stream.aiter_lines():
            if line == "event: waiting":
                return


async def _watch(client: httpx.AsyncClient, run_id: str, broken: list[str]) -> None:
    try:
        async with client.stream(
            "GET", f"/api/v1/runs/{run_id}/events", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as stream:
            if stream.status_code != 200:
                broken.append(f"{run_id}: HTTP {stream.status_code}")
                return
            async for _ in stream.aiter_lines():
                pass
    except (httpx.HTTPError, anyio.BrokenResourceError) as exc:
        broken.append(f"{run_id}: {type(exc).__name__}")


class _Connection:
    """One HTTP/1.1 keep-alive connection that sends GETs and reads whole answers: a
    load generator lean enough that the client is not what is measured (httpx costs
    several times the server's own work per call)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str, token: str | None) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n{auth}\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _load(
    port: int, paths: list[str], rate: float, seconds: float, token: str | None
) -> tuple[list[float], list[str], float]:
    """Calls at `rate` a second for `seconds` (open loop: each is due at its time, and
    its latency counts from then, waiting for a free connection included)."""
    latencies: list[float] = []
    errors: list[str] = []
    total = int(rate * seconds)
    due: asyncio.Queue[tuple[str, float] | None] = asyncio.Queue()

    async def connection() -> None:
        link = _Connection(port)
        try:
            while (item := await due.get()) is not None:
                path, at = item
                try:
                    status = await link.get(path, token)
                    if status != 200:
                        errors.append(f"{path}: HTTP {status}")
                except (OSError, asyncio.IncompleteReadError) as exc:
                    errors.append(f"{path}: {type(exc).__name__}")
                    link.close()
                    link = _Connection(port)
                latencies.append(time.perf_counter() - at)
        finally:
            link.close()

    workers = [asyncio.create_task(connection()) for _ in range(_CONNECTIONS)]
    start = time.perf_counter()
    for index in range(total):
        at = start + index / rate
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        due.put_nowait((paths[index % len(paths)], at))
    for _ in workers:
        due.put_nowait(None)
    await asyncio.gather(*workers)
    return latencies, errors, total / (time.perf_counter() - start)


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) * 1000, p99 * 1000


async def bench(watchers: int, rate: float, seconds: float) -> None:
    folder = tempfile.mkdtemp(prefix="bench-http-")
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(Path(folder) / "holon.db")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        auth = {"Authorization": f"Bearer {TOKEN}"}
        limits = httpx.Limits(
            max_connections=watchers + 100, max_keepalive_connections=watchers + 100
        )
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=30
        ) as client:
            run_ids = []
            for index in range(watchers):
                started = await client.post(
                    "/api/v1/workflows/shop/runs",
                    json={"input": {"item": f"i{index}"}},
                    headers=auth,
                )
                run_ids.append(started.json()["run_id"])
            for run_id in run_ids:
                await _until_waiting(client, run_id, auth)
            broken: list[str] = []
            async with anyio.create_task_group() as group:
                for run_id in run_ids:
                    group.start_soon(_watch, client, run_id, broken)
                await _load(port, ["/bench/ping"], rate, 1.0, None)  # warm-up, not counted
                reference, reference_errors, reference_rate = await _load(
                    port, ["/bench/ping"], rate, seconds, None
                )
                paths = [
                    p
                    for run_id in run_ids
                    for p in (f"/api/v1/runs/{run_id}", f"/api/v1/runs/{run_id}/timeline")
                ]
                latencies, errors, reached = await _load(port, paths, rate, seconds, TOKEN)
                group.cancel_scope.cancel()
        ref50, ref99 = _percentiles(reference)
        p50, p99 = _percentiles(latencies)
        print(f"cpus: {os.cpu_count()}; {watchers} SSE watchers open during both phases")
        print(
            f"reference GET /bench/ping: {len(reference)} calls at {reference_rate:.0f}/s, "
            f"{len(reference_errors)} errors, p50 {ref50:.2f} ms, p99 {ref99:.2f} ms"
        )
        print(
            f"holon GET run/timeline: {len(latencies)} calls at {reached:.0f}/s, "
            f"{len(errors)} errors, p50 {p50:.2f} ms ({p50 / ref50:.2f}x), "
            f"p99 {p99:.2f} ms ({p99 / ref99:.2f}x)"
        )
        print(f"watchers broken: {len(broken)}{': ' + ', '.join(broken[:5]) if broken else ''}")
        if errors:
            print("first errors:", errors[:5])
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watchers", type=int, default=200)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--serve", metavar="DB", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    asyncio.run(bench(args.watchers, args.rate, args.seconds))


if __name__ == "__main__":
    main()
