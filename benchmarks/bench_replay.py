"""Replay cost of the imperative model: resuming an `.Execute()` run with 1,000
recorded steps.

    .venv/bin/python benchmarks/bench_replay.py [--steps 1000] [--repeat 5]

A run executes 1,000 `ctx.Task` calls and then waits for an approval, so 1,000 results
are journaled. The approval is then given and the resume is timed until the run has
completed: one lease acquisition, one read of the whole record (all 1,000 results, by
one `load_run`, or on Redis in the lease's own pipeline, the grant carrying it), the
replay of 1,000 recorded tasks (none runs again), and the completing checkpoint. The
record reads during the resume are counted (`load_run` calls, and a grant's record).

Stores: memory, SQLite (synchronous=FULL) and, when a server answers at `REDIS_URL`
(default redis://127.0.0.1:6379/15) and the Redis store is installed, Redis under a
throw-away key prefix that is deleted afterwards.

Target (exit status 1 when missed): the resume takes < 50 ms on SQLite and Redis, with
one store read.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from holon import ExecuteContext, HumanApproval, RunStatus, Workflow, WorkflowRunner
from holon.stores import MemoryStore, SQLiteStore
from holon.stores.base import RunRecord, Store

TARGET_MS = 50.0


def double(n: int) -> int:
    return 2 * n


def make_workflow(steps: int) -> Workflow:
    async def body(ctx: ExecuteContext[Any, Any]) -> int:
        total = 0
        for i in range(steps):
            total += await ctx.Task(double, i)
        await ctx.WaitFor(HumanApproval(approvers=["ops"]))
        return total

    return Workflow("replay-bench").Execute(body)


class CountingLoads:
    """Counts `load_run` calls on a store (everything else passes through)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.loads = 0
        original: Callable[[str], Any] = store.load_run

        async def load_run(run_id: str) -> RunRecord | None:
            self.loads += 1
            result: RunRecord | None = await original(run_id)
            return result

        store.load_run = load_run  # type: ignore[method-assign]


@asynccontextmanager
async def stores(directory: Path) -> AsyncIterator[list[tuple[str, Store]]]:
    found: list[tuple[str, Store]] = [
        ("memory", MemoryStore()),
        ("sqlite", SQLiteStore(f"sqlite:///{directory / 'replay.db'}")),
    ]
    redis_store = await _redis_store()
    if redis_store is not None:
        found.append(("redis", redis_store))
    try:
        yield found
    finally:
        if redis_store is not None:
            await _drop_redis_prefix(redis_store)


async def _redis_store() -> Store | None:
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
    try:
        from holon.stores import open_store

        store = open_store(url, key_prefix=f"bench-{uuid.uuid4().hex[:8]}:")
        await store.open()
    except Exception as exc:  # no server, or no Redis store installed
        print(f"(Redis skipped: {exc})")
        return None
    return store


async def _drop_redis_prefix(store: Store) -> None:
    drop = getattr(store, "drop_prefix", None)
    if drop is not None:
        await drop()
    await store.close()


async def resume_ms(name: str, store: Store, steps: int) -> tuple[float, int]:
    wf = make_workflow(steps)
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run(run_id=f"{name}-{uuid.uuid4().hex[:8]}")
        await handle.WaitUntil(RunStatus.WAITING, timeout=120)
        assert len((await handle.Record()).results) == steps
    # Approve from a runner that executes nothing, so the resume below is all we time.
    async with WorkflowRunner(wf, store, execute=False) as steering:
        await (await steering.Get(handle.run_id)).Approve(by="ops")
    async with WorkflowRunner(wf, store, execute=False) as executor:
        counter = CountingLoads(store)
        started = time.perf_counter()
        grant = await store.acquire_lease(handle.run_id, "bench", 30, time.time())
        assert grant is not None
        await executor.engine.execute(grant)
        elapsed = (time.perf_counter() - started) * 1000
        record = await store.load_run(handle.run_id)
        assert record is not None and record.status == RunStatus.COMPLETED
        assert record.body.output == steps * (steps - 1)
    return elapsed, counter.loads + (grant.record is not None)


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Replay cost of .Execute() runs")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    failed = False
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        async with stores(Path(tmp)) as candidates:
            print(
                f"resume of an .Execute() run with {args.steps} recorded steps "
                f"(median of {args.repeat})"
            )
            print(
                f"{'store':<8} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'reads':>6}  target"
            )
            for name, store in candidates:
                await store.open()
                times, reads = [], []
                for _ in range(args.repeat):
                    ms, loads = await resume_ms(name, store, args.steps)
                    times.append(ms)
                    reads.append(loads - 1)  # the check after the resume is not part of it
                median = statistics.median(times)
                ok = median < TARGET_MS or name == "memory"
                failed |= not ok
                print(
                    f"{name:<8} {median:>10.1f} {min(times):>8.1f} {max(times):>8.1f} "
                    f"{max(reads):>6}  {'ok' if ok else 'MISSED'} (< {TARGET_MS:.0f} ms)"
                )
                if name != "redis":
                    await store.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(anyio.run(main, sys.argv[1:]))
