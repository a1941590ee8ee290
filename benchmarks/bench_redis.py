"""The Redis store's cost per step, against a bare `EVALSHA` round trip measured in the
same run, and the memory 100,000 runs waiting for approval take.

    .venv/bin/python benchmarks/bench_redis.py [--url redis://127.0.0.1:6379/15] [--quick]
        [--worker-gc] [--rounds 5]

Everything runs against a private `redis-server` on a free loopback port (started and
stopped by this script) unless `--url` names a server; keys go under a unique prefix and
are deleted afterwards. Prints a Markdown report.

Measured:

* bare round trip: `EVALSHA` of a script that returns 1, from redis-py's asyncio
  client; one client in a loop, and 50 concurrent clients;
* one run executed sequentially: per-step time of a workflow whose step loops, through
  the engine (`WorkflowRunner`), and of the store's commit alone;
* 1,000 concurrent runs on one worker process: steps per second through the engine
  while all 1,000 runs are in flight (a queue of 1,000 runs of 101 steps drained by one
  worker, counted from the moment the last run takes its first step until the first
  run ends); the whole drain of 1,000 runs of 21 steps, their claiming, starting and
  finishing included; and the store's commit alone (group commit shares pipelines
  between runs);
* 100,000 runs waiting for approval: `used_memory` per run from `INFO memory`, and the
  time to read one page of them.

`--worker-gc` runs everything (the bare clients too) with the garbage collector set up
as a process dedicated to executing runs sets it with `holon.configure_worker_gc()`:
everything loaded at start frozen out of collections and young collections made rarer.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import redis.asyncio as aioredis
from pydantic import BaseModel

from holon import (
    END,
    START,
    HumanApproval,
    Wait,
    Workflow,
    WorkflowRunner,
    configure_worker_gc,
)
from holon.stores.base import Checkpoint, NewEvent, RunRecord, RunStatus
from holon.stores.redis import RedisStore
from holon.stores.redis_codec import dump_body

BARE = "return 1"


class Counter(BaseModel):
    n: int = 0


class InFlight:
    """Counts a drain's `Tick` steps while every one of its runs is in flight: from the
    moment the last run takes its first `Tick` until the first run finishes. In that
    window the worker has all its runs at once, none starting or ending."""

    def __init__(self, runs: int) -> None:
        self.runs = runs
        self.started = 0
        self.steps = 0
        self.opened: tuple[float, int] | None = None
        self.closed: tuple[float, int] | None = None

    def step(self, n: int) -> None:
        self.steps += 1
        if n == 0:
            self.started += 1
            if self.started == self.runs:
                self.opened = (time.perf_counter(), self.steps)

    def finishing(self) -> None:
        if self.closed is None and self.opened is not None:
            self.closed = (time.perf_counter(), self.steps)

    @property
    def rate(self) -> float:
        """Steps per second in the window (0 when no run finished after all started)."""
        if self.opened is None or self.closed is None or self.closed[0] <= self.opened[0]:
            return 0.0
        return (self.closed[1] - self.opened[1]) / (self.closed[0] - self.opened[0])


def looping_workflow(
    steps: int, finished: Callable[[], None] = lambda: None, window: InFlight | None = None
) -> Workflow:
    """A run of `steps` steps; `finished` is called in its last step (so the benchmark
    waits on that instead of polling the runs' records); `window` counts the steps."""

    def tick(ctx: Any) -> str:
        n = ctx.State.n
        if window is not None:
            window.step(n)
        if n >= steps:
            if window is not None:
                window.finishing()
            finished()
            return END
        ctx.SetState(n=n + 1)
        return "Tick"

    return Workflow("bench").State(Counter).Flow({START: lambda ctx: "Tick", "Tick": tick})


def approval_workflow() -> Workflow:
    return Workflow("approve").Flow(
        {
            START: lambda ctx: Wait(HumanApproval(approvers=["ops-lead"]), "Release"),
            "Release": lambda ctx: END,
        }
    )


# -- a private server ------------------------------------------------------------------


class PrivateRedis:
    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="holon-bench-"))
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"

    async def ready(self) -> None:
        client = aioredis.Redis.from_url(self.url)
        try:
            for _ in range(200):
                try:
                    await client.ping()
                    return
                except Exception:
                    await anyio.sleep(0.02)
            raise RuntimeError("redis-server did not start")
        finally:
            await client.aclose()

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


# -- measurements ----------------------------------------------------------------------


async def timed(fn: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    await fn()
    return time.perf_counter() - start


async def bare_single(url: str, n: int) -> float:
    """Microseconds per bare EVALSHA round trip, one client."""
    client = aioredis.Redis.from_url(url)
    try:
        sha = await client.script_load(BARE)
        for _ in range(200):
            await client.evalsha(sha, 0)
        start = time.perf_counter()
        for _ in range(n):
            await client.evalsha(sha, 0)
        return (time.perf_counter() - start) / n * 1e6
    finally:
        await client.aclose()


async def bare_concurrent(url: str, clients: int, seconds: float) -> float:
    """Bare EVALSHA round trips per second from `clients` concurrent loops."""
    client = aioredis.Redis.from_url(url, max_connections=clients + 5)
    try:
        sha = await client.script_load(BARE)
        done = 0
        stop = time.perf_counter() + seconds

        async def loop() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                await client.evalsha(sha, 0)
                done += 1

        start = time.perf_counter()
        async with anyio.create_task_group() as group:
            for _ in range(clients):
                group.start_soon(loop)
        return done / (time.perf_counter() - start)
    finally:
        await client.aclose()


def new_record(run_id: str, workflow: str = "bench") -> RunRecord:
    from holon.stores.base import Cursor, RunBody

    return RunRecord(
        run_id=run_id,
        workflow=workflow,
        version="v1",
        status=RunStatus.QUEUED,
        input=None,
        body=RunBody(cursor=Cursor(step="Tick"), state={"n": 0}),
        created_at=time.time(),
        updated_at=time.time(),
    )


def step_checkpoint(n: int) -> Checkpoint:
    from holon.stores.base import Cursor, RunBody

    return Checkpoint(
        status=RunStatus.RUNNING,
        body=RunBody(cursor=Cursor(step="Tick"), state={"n": n + 1}, counts={"Tick": n + 1}),
        at=time.time(),
        events=[
            NewEvent(kind="step_completed", at=time.time(), step="Tick", data={"attempt": 1}),
            NewEvent(kind="step_started", at=time.time(), step="Tick"),
        ],
    )


async def store_commit_loop(store: RedisStore, run_id: str, steps: int) -> None:
    """One run committing `steps` checkpoints in a row, as the engine does per step."""
    await store.create_run(new_record(run_id), [NewEvent(kind="started", at=time.time())])
    grant = await store.acquire_lease(run_id, "bench", 60, time.time())
    assert grant is not None
    for n in range(steps):
        await store.commit(run_id, expected_seq=n, token=grant.token, checkpoint=step_checkpoint(n))


async def sequential(url: str, prefix: str, steps: int) -> tuple[float, float]:
    """Microseconds per step of one run: (through the engine, the store's commit alone)."""
    store = RedisStore(url, key_prefix=prefix)
    await store.open()
    try:
        await store_commit_loop(store, "warm", 100)
        start = time.perf_counter()
        await store_commit_loop(store, "seq-store", steps)
        store_us = (time.perf_counter() - start) / steps * 1e6
        done = [anyio.Event()]
        async with WorkflowRunner(looping_workflow(steps, lambda: done[0].set()), store) as runner:
            await runner.Run(run_id="seq-warm")
            await done[0].wait()
            done[0] = anyio.Event()
            start = time.perf_counter()
            await runner.Run(run_id="seq-engine")
            await done[0].wait()
            engine_us = (time.perf_counter() - start) / (steps + 1) * 1e6
        return engine_us, store_us
    finally:
        await store.close()


async def drain_queue(store: RedisStore, runs: int, steps: int) -> tuple[float, float, float]:
    """Queue `runs` runs of `steps` + 1 steps with a runner that does not execute, then
    let one worker (a runner that does) claim and execute them all concurrently.
    Returns the worker's wall-clock and CPU seconds, from its start until the last run
    has finished, and its steps per second while all the runs were in flight (see
    `InFlight`)."""
    finished = 0
    all_done = anyio.Event()

    def one_done() -> None:
        nonlocal finished
        finished += 1
        if finished == runs:
            all_done.set()

    window = InFlight(runs)
    workflow = looping_workflow(steps, one_done, window)
    async with (
        WorkflowRunner(workflow, store, execute=False) as submitter,
        anyio.create_task_group() as group,
    ):
        for _ in range(runs):
            group.start_soon(submitter.Run)
    started, cpu = time.perf_counter(), time.process_time()
    async with WorkflowRunner(workflow, store, lease_ttl=60):
        await all_done.wait()
        return time.perf_counter() - started, time.process_time() - cpu, window.rate


async def concurrent(
    url: str, prefix: str, runs: int, steps: int, long_steps: int
) -> tuple[float, float, float, float]:
    """Steps per second of `runs` concurrent runs in one process: (through the engine
    while all the runs are in flight, in a drain of runs of `long_steps` + 1 steps;
    through the engine for a whole drain of runs of `steps` + 1 steps; the store's
    commit alone; writes per pipeline in the store-alone case)."""
    store = RedisStore(url, key_prefix=prefix)
    await store.open()
    try:
        tokens: dict[str, int] = {}

        async def start(run_id: str) -> None:
            await store.create_run(new_record(run_id), [NewEvent(kind="started", at=time.time())])
            grant = await store.acquire_lease(run_id, "bench", 600, time.time())
            assert grant is not None
            tokens[run_id] = grant.token

        async def steps_of(run_id: str) -> None:
            for n in range(steps):
                await store.commit(
                    run_id, expected_seq=n, token=tokens[run_id], checkpoint=step_checkpoint(n)
                )

        ids = [f"{uuid.uuid4().hex}" for _ in range(runs)]
        async with anyio.create_task_group() as group:
            for run_id in ids:
                group.start_soon(start, run_id)
        pipelines_before = store.pipelines
        start_time = time.perf_counter()
        async with anyio.create_task_group() as group:
            for run_id in ids:
                group.start_soon(steps_of, run_id)
        store_rate = runs * steps / (time.perf_counter() - start_time)
        per_pipeline = runs * steps / max(1, store.pipelines - pipelines_before)

        seconds, _, _ = await drain_queue(store, runs, steps)
        engine_rate = runs * (steps + 1) / seconds
        # Runs long enough that all of them are in flight for most of the drain: the
        # claims that start them take a while, and short runs end before the last
        # ones start.
        _, _, in_flight = await drain_queue(store, runs, long_steps)
        return in_flight, engine_rate, store_rate, per_pipeline
    finally:
        await store.close()


async def waiting_runs(url: str, prefix: str, count: int) -> dict[str, float]:
    """Memory per run waiting for approval, and the time to list a page of them."""
    store = RedisStore(url, key_prefix=prefix)
    await store.open()
    raw = aioredis.Redis.from_url(url)
    try:
        # One real run through the engine gives the exact records a waiting run has.
        async with WorkflowRunner(approval_workflow(), store) as runner:
            handle = await runner.Run(run_id="template")
            await handle.WaitUntil(RunStatus.WAITING, timeout=30)
        template = await store.load_run("template")
        assert template is not None and template.status == RunStatus.WAITING
        events = await store.timeline("template")
        wait_keys = ["approver:ops-lead"]
        before = int((await raw.info("memory"))["used_memory"])

        async def make(i: int) -> None:
            run_id = uuid.uuid4().hex  # the engine's default run ids
            record = template.model_copy(
                update={"run_id": run_id, "status": RunStatus.QUEUED, "seq": 0, "event_seq": 0}
            )
            await store.create_run(record, [_event(events[0])])
            await store.commit(
                run_id,
                expected_seq=0,
                token=None,
                checkpoint=Checkpoint(
                    status=RunStatus.WAITING,
                    body=template.body,
                    at=time.time(),
                    events=[_event(e) for e in events[1:]],
                    wait_keys=wait_keys,
                ),
            )

        start = time.perf_counter()
        batch = 1000
        for first in range(0, count, batch):
            async with anyio.create_task_group() as group:
                for i in range(first, min(count, first + batch)):
                    group.start_soon(make, i)
        made_s = time.perf_counter() - start
        after = int((await raw.info("memory"))["used_memory"])
        start = time.perf_counter()
        page = await store.list_runs(status=RunStatus.WAITING, limit=100)
        first_page_ms = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        pages = 1
        cursor = page.next_cursor
        while cursor is not None and pages < 50:
            page = await store.list_runs(status=RunStatus.WAITING, limit=100, cursor=cursor)
            cursor = page.next_cursor
            pages += 1
        later_pages_ms = (time.perf_counter() - start) * 1e3 / (pages - 1)
        approvals = await store.find_waiting("approver:ops-lead", limit=100)
        counts = await store.count_runs()
        body_bytes = len(dump_body(template.body))
        sample = store.run_key((await store.list_runs(limit=1)).items[0].run_id)
        sizes = {}
        for suffix, name in (("", "hash"), (":b", "body"), (":t", "timeline")):
            sizes[name] = float(await raw.memory_usage(sample + suffix) or 0)
        return {
            "runs": count,
            "bytes_per_run": (after - before) / count,
            "body_bytes": body_bytes,
            **{f"key_{k}": v for k, v in sizes.items()},
            "events_per_run": len(events),
            "made_s": made_s,
            "first_page_ms": first_page_ms,
            "later_pages_ms": later_pages_ms,
            "approvals_page": len(approvals.items),
            "waiting_counted": counts.get(RunStatus.WAITING, 0),
        }
    finally:
        await raw.aclose()
        await store.close()


def _event(e: Any) -> NewEvent:
    return NewEvent(kind=e.kind, at=e.at, step=e.step, data=e.data)


async def delete_prefix(url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        batch: list[Any] = []
        async for key in client.scan_iter(match=f"{prefix}*", count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                await client.delete(*batch)
                batch = []
        if batch:
            await client.delete(*batch)
    finally:
        await client.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a Redis to use instead of a private redis-server")
    parser.add_argument("--quick", action="store_true", help="smaller counts, for a smoke run")
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="rounds to take the medians of (more on a machine whose speed drifts)",
    )
    parser.add_argument(
        "--worker-gc",
        action="store_true",
        help="freeze what is loaded and collect garbage less often, as a worker may",
    )
    args = parser.parse_args()
    if args.worker_gc:
        configure_worker_gc()
    server = None
    if args.url:
        url = args.url
    else:
        server = PrivateRedis()
        await server.ready()
        url = server.url
    prefix = f"holon-bench:{uuid.uuid4().hex[:8]}:"
    quick = args.quick
    rounds = 1 if quick else max(1, args.rounds)
    steps = 5 if quick else 20
    rows: list[dict[str, float]] = []
    try:
        # Each round measures the bare round trip right next to what is compared with it,
        # so that a busy machine slows both sides of a ratio alike; the report gives the
        # median of the rounds' ratios.
        for r in range(rounds):
            single = await bare_single(url, 2_000 if quick else 5_000)
            engine_us, store_us = await sequential(url, f"{prefix}s{r}:", 300 if quick else 1_000)
            single = (single + await bare_single(url, 2_000 if quick else 5_000)) / 2
            bare50 = await bare_concurrent(url, 50, 1.0 if quick else 2.0)
            in_flight, engine_rate, store_rate, per_pipeline = await concurrent(
                url, f"{prefix}c{r}:", 1_000, steps, steps if quick else 100
            )
            bare50 = (bare50 + await bare_concurrent(url, 50, 1.0 if quick else 2.0)) / 2
            rows.append(
                {
                    "single": single,
                    "engine_us": engine_us,
                    "store_us": store_us,
                    "bare50": bare50,
                    "in_flight": in_flight,
                    "engine_rate": engine_rate,
                    "store_rate": store_rate,
                    "per_pipeline": per_pipeline,
                }
            )
            await delete_prefix(url, prefix)
        waiting = await waiting_runs(url, prefix + "w:", 5_000 if quick else 100_000)
    finally:
        await delete_prefix(url, prefix)
        if server is not None:
            server.stop()
    print(
        "| round | bare RTT | engine µs/step | commit µs/step | bare, 50 clients | "
        "1,000 runs in flight, engine | whole drain, engine | 1,000 runs, commits alone "
        "| writes per pipeline |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n, row in enumerate(rows, start=1):
        print(
            f"| {n} | {row['single']:.0f} µs | {row['engine_us']:.0f} "
            f"({row['engine_us'] / row['single']:.2f}) | {row['store_us']:.0f} "
            f"({row['store_us'] / row['single']:.2f}) | {row['bare50']:,.0f} /s | "
            f"{row['in_flight']:,.0f} /s ({row['in_flight'] / row['bare50']:.2f}x) | "
            f"{row['engine_rate']:,.0f} /s ({row['engine_rate'] / row['bare50']:.2f}x) | "
            f"{row['store_rate']:,.0f} /s ({row['store_rate'] / row['bare50']:.2f}x) | "
            f"{row['per_pipeline']:.0f} |"
        )
    print()
    single_us = statistics.median(r["single"] for r in rows)
    bare50 = statistics.median(r["bare50"] for r in rows)
    engine_us = statistics.median(r["engine_us"] for r in rows)
    store_us = statistics.median(r["store_us"] for r in rows)
    in_flight = statistics.median(r["in_flight"] for r in rows)
    engine_rate = statistics.median(r["engine_rate"] for r in rows)
    store_rate = statistics.median(r["store_rate"] for r in rows)
    per_pipeline = statistics.median(r["per_pipeline"] for r in rows)
    engine_rtts = statistics.median(r["engine_us"] / r["single"] for r in rows)
    store_rtts = statistics.median(r["store_us"] / r["single"] for r in rows)
    in_flight_x = statistics.median(r["in_flight"] / r["bare50"] for r in rows)
    engine_x = statistics.median(r["engine_rate"] / r["bare50"] for r in rows)
    store_x = statistics.median(r["store_rate"] / r["bare50"] for r in rows)
    info = f"{sys.version.split()[0]}, hiredis" if _has_hiredis() else sys.version.split()[0]
    collector = f"worker GC {gc.get_threshold()}" if args.worker_gc else "default GC"
    print(f"Python {info}, {collector}; Redis at {'a private redis-server' if server else url}\n")
    print("Medians of the rounds (ratios are each round's, then the median):\n")
    print("| measure | value | target |")
    print("| --- | --- | --- |")
    print(f"| bare EVALSHA round trip, one client | {single_us:.0f} µs | |")
    print(f"| bare EVALSHA, 50 concurrent clients | {bare50:,.0f} /s | |")
    print(
        f"| one run, sequential: per step through the engine | {engine_us:.0f} µs "
        f"({engine_rtts:.2f} round trips) | ≤ 2 round trips |"
    )
    print(
        f"| one run, sequential: per step, store commit alone | {store_us:.0f} µs "
        f"({store_rtts:.2f} round trips) | ≤ 2 round trips |"
    )
    print(
        f"| 1,000 concurrent runs, one process: steps through the engine while all 1,000 "
        f"are in flight | {in_flight:,.0f} /s ({in_flight_x:.2f}x the 50 bare clients) "
        "| ≥ 1x |"
    )
    print(
        f"| 1,000 runs of {steps + 1} steps drained by one process, claiming, starting and "
        f"finishing each run included | {engine_rate:,.0f} /s ({engine_x:.2f}x the 50 bare "
        "clients) | |"
    )
    print(
        f"| 1,000 concurrent runs, one process: store commits alone | {store_rate:,.0f} /s "
        f"({store_x:.2f}x the 50 bare clients; {per_pipeline:.0f} writes per "
        "pipeline) | ≥ 1x |"
    )
    print(
        f"| {waiting['runs']:,.0f} runs waiting for approval: memory per run | "
        f"{waiting['bytes_per_run']:,.0f} B | < 2 KB |"
    )
    print(
        f"| listing them, 100 per page | first page {waiting['first_page_ms']:.1f} ms, "
        f"later pages {waiting['later_pages_ms']:.1f} ms each | paged |"
    )
    print(
        f"\nOne waiting run's keys (`MEMORY USAGE`): hash {waiting['key_hash']:.0f} B, body "
        f"{waiting['key_body']:.0f} B ({waiting['body_bytes']:.0f} B of JSON), timeline "
        f"{waiting['key_timeline']:.0f} B ({waiting['events_per_run']:.0f} events); the rest "
        "is its entries in the status and wait-key indexes and the keyspace's own table."
    )
    print(
        f"\n(made the waiting runs in {waiting['made_s']:.1f} s; count_runs saw "
        f"{waiting['waiting_counted']:,.0f} waiting; find_waiting returned a page of "
        f"{waiting['approvals_page']:.0f})"
    )


def _has_hiredis() -> bool:
    try:
        import hiredis  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    asyncio.run(main())
