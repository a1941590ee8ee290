"""Private `redis-server` processes for tests: started on free loopback ports, stopped by
pid, their directories removed. Also a three-master Cluster, and key cleanup by prefix."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import redis

__all__ = [
    "CuttingProxy",
    "RedisProcess",
    "delete_prefix",
    "free_port",
    "have_redis_server",
    "redis_answers",
    "running_cluster",
]


def have_redis_server() -> bool:
    return shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cluster_port() -> int:
    """A free port below 55535 whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        port = free_port()
        if port > 55535:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Cluster node")


def redis_answers(url: str) -> bool:
    """True when a Redis server answers at the URL's host and port (even one that wants a
    password)."""
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or 6379), timeout=0.5
        ) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


@dataclass
class RedisProcess:
    """One redis-server on 127.0.0.1:`port`, its data in `directory`."""

    directory: Path
    port: int = field(default_factory=free_port)
    options: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--daemonize",
                "no",
                *self.options,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        try:
            self.wait_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Poll until the server answers (there is no event to wait on), bounded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited: {(self.directory / 'redis.log').read_text()[-2000:]}"
                )
            if redis_answers(self.url):
                return
            time.sleep(0.02)  # sleep-ok: polling an external process's port
        raise RuntimeError(f"redis-server on port {self.port} did not answer in {timeout}s")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Stop the server by its pid (SIGKILL by default: a crash)."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, sig)
            self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


@contextlib.contextmanager
def running_cluster(directory: Path, masters: int = 3) -> Iterator[list[RedisProcess]]:
    """A Redis Cluster of `masters` primaries on loopback ports, torn down by pid."""
    nodes = [
        RedisProcess(
            directory / f"node{i}",
            port=cluster_port(),
            options=(
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
                "--appendonly",
                "no",
            ),
        )
        for i in range(masters)
    ]
    try:
        for node in nodes:
            node.start()
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        deadline = time.monotonic() + 20
        for node in nodes:
            client = redis.Redis(port=node.port)
            try:
                while True:
                    info = client.execute_command("CLUSTER INFO")  # type: ignore[no-untyped-call]
                    if isinstance(info, dict):
                        info = f"cluster_state:{info.get('cluster_state')}"
                    text = info.decode() if isinstance(info, bytes) else str(info)
                    if "cluster_state:ok" in text:
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError("the test Cluster did not reach state ok")
                    time.sleep(0.05)  # sleep-ok: polling an external process's state
            finally:
                client.close()
        yield nodes
    finally:
        for node in nodes:
            node.kill()


def delete_prefix(url: str, prefix: str) -> None:
    """Delete every key under `prefix` (tests only: a store never scans)."""
    client: redis.Redis | redis.RedisCluster
    if url.startswith("redis+cluster://"):
        client = redis.RedisCluster.from_url(url.replace("redis+cluster://", "redis://", 1))
    else:
        client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for key in keys:
            client.delete(key)
    finally:
        client.close()
        if isinstance(client, redis.RedisCluster):
            # redis-py 8's close() leaves the nodes' connections open.
            for node in client.get_nodes():
                if node.redis_connection is not None:
                    node.redis_connection.connection_pool.disconnect()


class CuttingProxy:
    """Forwards loopback TCP to a Redis port; when armed, drops the next reply from the
    server and cuts that connection, so the client never learns its command ran. A
    connection whose server side ends (the server died) is closed on the client side
    too, as the server's own would be."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.armed = False
        self.cuts = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.close()
            return
        self._writers += [client_w, server_w]

        async def upstream() -> None:
            while data := await client_r.read(65536):
                server_w.write(data)
                await server_w.drain()
            server_w.close()

        async def downstream() -> None:
            while data := await server_r.read(65536):
                if self.armed:
                    self.armed = False
                    self.cuts += 1
                    client_w.transport.abort()
                    server_w.close()
                    return
                client_w.write(data)
                await client_w.drain()
            client_w.close()

        try:
            await asyncio.gather(upstream(), downstream())
        except (ConnectionError, OSError):
            pass
        finally:
            client_w.close()
            server_w.close()
