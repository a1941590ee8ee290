"""A fleet of worker processes on one Redis: steps per second with 1, 2 and 4 workers,
and how soon a run whose worker is SIGKILLed goes on elsewhere.

    .venv/bin/python benchmarks/bench_workers.py [--runs 1000] [--steps 20] [--fleets 1,2,4]

Everything runs against a private `redis-server` on a free loopback port. Workers are
real processes running `holon.worker.serve` on the workflows of `fleet_app.py`, as
`holon worker fleet_app:workflows` would. Prints a Markdown report.

* **Throughput**: a runner that executes nothing queues `--runs` runs of `--steps`
  steps; then N worker processes start together, and the clock runs from the moment the
  first of them began to claim runs (its start on the store's list of live executors:
  the processes' import and connection are left out) until the last run has completed
  (claiming, executing and finishing every run). Beside it, in the
  same run, the rate of 50 bare `EVALSHA` clients in this process (the reference of
  `bench_redis.py`), and the machine's CPU count: on a machine with fewer cores than
  worker processes plus the Redis server, more workers share the same cores.
* **Take-over**: two workers with the default lease TTL and poll interval; a run holds
  a step in the first; the first is SIGKILLed; the time from the kill until the second
  records `recovered` on the run (the target: the lease TTL plus at most one second), and
  from the moment the run's lease ran out (its last renewal plus the TTL) until then.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench_redis import PrivateRedis, bare_concurrent, delete_prefix

from holon import WorkflowRunner
from holon.stores.base import RunStatus
from holon.stores.redis import RedisStore

HERE = Path(__file__).resolve().parent
LEASE_TTL = 10.0
"""The default lease TTL of a worker, which the take-over is measured against."""

WORKER = """
import anyio, sys
from holon import Worker
from holon.worker.serve import load_app, serve
url, prefix, name, ttl = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
from holon.stores.redis import RedisStore
worker = Worker(load_app("fleet_app:workflows"), RedisStore(url, key_prefix=prefix),
                name=name, concurrency=1000, lease_ttl=ttl)
anyio.run(serve, worker)
"""


def start_worker(
    url: str, prefix: str, name: str, ttl: float = LEASE_TTL
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, url, prefix, name, str(ttl)],
        cwd=HERE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


async def throughput(url: str, runs: int, steps: int, fleet: int) -> float:
    """Steps per second of `fleet` worker processes executing `runs` runs."""
    sys.path.insert(0, str(HERE))
    from fleet_app import Loop

    prefix = f"holon-fleet:{uuid.uuid4().hex[:8]}:"
    store = RedisStore(url, key_prefix=prefix)
    await store.open()
    async with WorkflowRunner(Loop, store, execute=False) as submitter:
        for _ in range(runs):
            await submitter.Run({"steps": steps})
    workers = [start_worker(url, prefix, f"w{i}") for i in range(fleet)]
    try:
        while (await store.count_runs(workflow="loop")).get(RunStatus.COMPLETED, 0) < runs:
            await asyncio.sleep(0.02)
        finished = time.time()
        # From the moment the first worker began to claim (a worker process takes a
        # second or so to import and connect, which is left out).
        started = min(float(w["started_at"]) for w in await store.workers(finished))
        return runs * (steps + 1) / (finished - started)
    finally:
        stop(workers)
        await store.close()
        await delete_prefix(url, prefix)


async def takeover(url: str) -> tuple[float, float]:
    """Seconds from SIGKILL of a run's worker to `recovered` on it in another, and from
    the end of its lease to then."""
    sys.path.insert(0, str(HERE))
    from fleet_app import Hold

    prefix = f"holon-fleet:{uuid.uuid4().hex[:8]}:"
    store = RedisStore(url, key_prefix=prefix)
    await store.open()
    first = start_worker(url, prefix, "first")
    second: subprocess.Popen[bytes] | None = None
    try:
        async with WorkflowRunner(Hold, store, execute=False) as submitter:
            run_id = (await submitter.Run()).run_id
        while True:  # the first worker holds the run's step
            record = await store.load_run(run_id)
            if record is not None and record.lease is not None:
                break
            await asyncio.sleep(0.02)
        second = start_worker(url, prefix, "second")
        while not any(w["name"] == "second" for w in await store.workers(time.time())):
            await asyncio.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        killed = time.time()
        first.wait()
        held = await store.load_run(run_id)
        assert held is not None and held.lease is not None
        while not any(e.kind == "recovered" for e in await store.timeline(run_id)):
            await asyncio.sleep(0.01)
        now = time.time()
        return now - killed, now - held.lease.expires_at
    finally:
        stop([first] + ([second] if second else []))
        await store.close()
        await delete_prefix(url, prefix)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--fleets", default="1,2,4")
    parser.add_argument("--takeovers", type=int, default=3)
    args = parser.parse_args()
    fleets = [int(n) for n in args.fleets.split(",")]
    server = PrivateRedis()
    await server.ready()
    try:
        rows = []
        for fleet in fleets:
            bare = await bare_concurrent(server.url, 50, 2.0)
            rate = await throughput(server.url, args.runs, args.steps, fleet)
            bare = (bare + await bare_concurrent(server.url, 50, 2.0)) / 2
            rows.append((fleet, rate, bare))
        takeovers = [await takeover(server.url) for _ in range(args.takeovers)]
    finally:
        server.stop()
    print(f"{os.cpu_count()} CPUs; {args.runs} runs of {args.steps + 1} steps; Redis on loopback\n")
    print("| worker processes | steps/s | 50 bare clients, round trips/s | ratio |")
    print("| ---: | ---: | ---: | ---: |")
    for fleet, rate, bare in rows:
        print(f"| {fleet} | {rate:,.0f} | {bare:,.0f} | {rate / bare:.2f}x |")
    print(
        f"\nSIGKILL of a run's worker until `recovered` in another (lease TTL {LEASE_TTL:.0f} s):\n"
    )
    print("| kill to recovered | end of its lease to recovered |")
    print("| ---: | ---: |")
    for total, after_lease in takeovers:
        print(f"| {total:.2f} s | {after_lease:.2f} s |")
    worst = max(total for total, _ in takeovers)
    verdict = "met" if worst <= LEASE_TTL + 1 else "NOT met"
    print(f"\nworst: {worst:.2f} s; target: the TTL plus at most 1 s: {verdict}")


if __name__ == "__main__":
    asyncio.run(main())
