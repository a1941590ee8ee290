"""A fleet of `holon worker` processes on one store (SQLite file, Redis server): runs complete
and every step's effect is applied once although one worker is SIGKILLed mid-step and
another SIGSTOPped past its leases; a stalled worker's late commits are refused and show
in the timeline; a rolling deploy never runs a step on older code than its run's."""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from holon import RunStatus, WorkflowRunner
from holon.stores import open_store
from holon.stores.base import Store
from tests import fleet_app
from tests.fleet_app import STEPS, fleet, logged, make_sink
from tests.processes import Child, child
from tests.redis_support import RedisProcess, have_redis_server

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

LEASE_TTL = 1.5
"""Short, so that take-overs happen within the test (the default is 10 s)."""

RUNS = 200


@contextmanager
def store_url(kind: str, tmp_path: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path}/fleet.db"
        return
    if not have_redis_server():
        pytest.skip("redis-server is not installed")
    server = RedisProcess(tmp_path / "redis").start()
    try:
        yield server.url
    finally:
        server.stop()


@asynccontextmanager
async def opened(url: str) -> AsyncIterator[Store]:
    store = open_store(url)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


HOLON = str(Path(sys.executable).parent / "holon")
"""The `holon` program installed beside this Python (its console script)."""


@asynccontextmanager
async def workers(
    tmp_path: Path, url: str, sink: Path, app: str, names: list[str], *options: str
) -> AsyncIterator[dict[str, Child]]:
    """`holon worker APP` processes on `url`, one per name, with a short lease so that
    take-overs happen within a test; yields once each is on the store's list of live
    executors."""
    async with AsyncExitStack() as stack:
        started = {
            name: await stack.enter_async_context(
                child(
                    tmp_path,
                    name,
                    HOLON,
                    "--store",
                    url,
                    "worker",
                    app,
                    "--name",
                    name,
                    "--concurrency",
                    "20",
                    "--lease-ttl",
                    str(LEASE_TTL),
                    "--poll-interval",
                    "0.05",
                    "--drain-deadline",
                    "10",
                    "--version-grace",
                    str(LEASE_TTL),
                    *options,
                    env={**os.environ, "HOLON_TEST_SINK": str(sink), "HOLON_TEST_WORKER": name},
                )
            )
            for name in names
        }
        async with opened(url) as store:
            await until(lambda: live_names(store), lambda live: set(names) <= live, "workers up")
        yield started


async def live_names(store: Store) -> set[str]:
    import time

    return {w["name"] for w in await store.workers(time.time())}


async def until(
    read: Callable[[], Any], done: Callable[[Any], bool], what: str, timeout: float = 120
) -> Any:
    """Poll another process's writes (nothing signals them here) until `done`."""
    with anyio.move_on_after(timeout):
        while True:
            value = await read()
            if done(value):
                return value
            await anyio.sleep(0.05)  # sleep-ok: polling what other processes write
    pytest.fail(f"no {what} within {timeout} s")


async def applied(sink: Path) -> int:
    return len(fleet_app.applied(sink))


def write_lock_free(url: str) -> bool:
    """Whether an SQLite store's file can be written now (True for other stores): a
    process stopped inside a write transaction would stop every other writer too."""
    if not url.startswith("sqlite:///"):
        return True
    db = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=1)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        db.close()


async def stall(worker: Child, url: str) -> None:
    """SIGSTOP `worker` at a moment it holds no write transaction on the store's file."""
    process = worker.process
    for _ in range(50):
        process.send_signal(signal.SIGSTOP)
        if write_lock_free(url):
            return
        process.send_signal(signal.SIGCONT)
        await anyio.sleep(0.01)  # sleep-ok: let it finish its transaction, then again
    pytest.fail(f"{worker.name} always held the file's write lock")


async def stop_all(fleet_children: dict[str, Child]) -> None:
    for worker in fleet_children.values():
        if worker.process.returncode is None:
            worker.process.send_signal(signal.SIGTERM)
    for name, worker in fleet_children.items():
        code = await worker.finish()
        assert code in (0, -signal.SIGKILL), f"{name}: {worker.diagnosis()}"


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_three_workers_one_killed_one_stalled_every_effect_once(
    kind: str, tmp_path: Path
) -> None:
    sink = tmp_path / "sink"
    make_sink(sink)
    with store_url(kind, tmp_path) as url:
        async with (
            workers(tmp_path, url, sink, "tests.fleet_app:fleet", ["w0", "w1", "w2"]) as (
                fleet_children
            ),
            opened(url) as store,
        ):
            async with WorkflowRunner(fleet, store, execute=False) as steer:
                run_ids = [(await steer.Run()).run_id for _ in range(RUNS)]
            total = RUNS * STEPS
            await until(lambda: applied(sink), lambda n: n >= total // 5, "progress")
            await fleet_children["w0"].kill()  # SIGKILL, mid-step: its steps run elsewhere
            await until(lambda: applied(sink), lambda n: n >= 2 * total // 5, "progress")
            await stall(fleet_children["w1"], url)
            before = await applied(sink)
            # the others go on, and take w1's runs over once its leases have run out
            await until(lambda: applied(sink), lambda n: n >= before + 100, "progress")
            await anyio.sleep(LEASE_TTL * 2)  # sleep-ok: the stall must outlast the leases
            fleet_children["w1"].process.send_signal(signal.SIGCONT)
            counts = await until(
                lambda: store.count_runs(workflow="fleet"),
                lambda c: c.get(RunStatus.COMPLETED, 0) == RUNS,
                "all runs completed",
            )
            assert counts == {RunStatus.COMPLETED: RUNS}
            for run_id in run_ids:
                record = await store.load_run(run_id)
                assert record is not None and record.status == RunStatus.COMPLETED
            # the stalled worker woke with steps in flight: their checkpoints came too
            # late and were turned away, which the runs' timelines show
            await until(
                lambda: refusals(store, run_ids),
                lambda found: any(
                    e.kind == "commit_refused" and e.data["owner"] == "w1" for e in found
                ),
                "a refused commit of the stalled worker in a timeline",
            )
            await stop_all(fleet_children)
    keys = fleet_app.applied(sink)
    expected = {f"{r}:Work:{i}" for r in run_ids for i in range(1, STEPS + 1)}
    assert sorted(keys) == sorted(expected)  # every step's effect applied, once
    attempts = logged(sink, "attempts")
    assert set(attempts) == expected
    assert len(attempts) > len(expected), "the SIGKILL and the stall re-ran no step"


def codes_by_run(sink: Path) -> dict[str, list[tuple[str, str]]]:
    """The code version each logged step of each run ran on: run id -> [(key, code)]."""
    runs: dict[str, list[tuple[str, str]]] = {}
    for line in logged(sink, "versions"):
        key, code = line.split(" ")
        runs.setdefault(key.split(":")[0], []).append((key, code))
    return runs


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_a_rolling_deploy_never_runs_a_step_on_older_code(kind: str, tmp_path: Path) -> None:
    from tests.fleet_app import deploy_v1, deploy_v2

    sink = tmp_path / "sink"
    make_sink(sink)
    with store_url(kind, tmp_path) as url:
        async with (
            workers(tmp_path, url, sink, "tests.fleet_app:deploy_v1", ["old1", "old2"]) as (old),
            opened(url) as store,
        ):
            async with workers(tmp_path, url, sink, "tests.fleet_app:deploy_v2", ["new1"]) as new:
                # version 2 is registered last: the newest. Both kinds of run are queued
                # with old and new workers side by side.
                async with WorkflowRunner(deploy_v1, store, execute=False) as v1:
                    started_v1 = [(await v1.Run()).run_id for _ in range(40)]
                async with WorkflowRunner(deploy_v2, store, execute=False) as v2:
                    started_v2 = [(await v2.Run()).run_id for _ in range(40)]
                await until(lambda: applied(sink), lambda n: n >= 60, "progress")
                await stop_all(old)  # the old workers drain: their runs go on at version 2
                await until(
                    lambda: store.count_runs(workflow="deploy"),
                    lambda c: c.get(RunStatus.COMPLETED, 0) == 80,
                    "every run completed",
                )
                await stop_all(new)
            moved = 0
            for run_id in started_v1 + started_v2:
                record = await store.load_run(run_id)
                assert record is not None and record.status == RunStatus.COMPLETED
                moved += record.current_version == "2" and run_id in started_v1
    codes = codes_by_run(sink)
    for run_id in started_v2:
        assert {code for _, code in codes[run_id]} == {"2"}, run_id
    for run_id in started_v1:
        ordered = [
            code for _, code in sorted(codes[run_id], key=lambda kc: int(kc[0].split(":")[-1]))
        ]
        assert ordered == sorted(ordered), f"{run_id} went back to older code: {ordered}"
    assert moved > 0  # runs of version 1 moved forward when their workers drained


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_an_execute_run_waits_for_its_own_version_and_never_fails(
    kind: str, tmp_path: Path
) -> None:
    from tests.fleet_app import journal_v1

    sink = tmp_path / "sink"
    make_sink(sink)
    with store_url(kind, tmp_path) as url:
        async with opened(url) as store:
            async with workers(tmp_path, url, sink, "tests.fleet_app:journal_v1", ["old"]) as old:
                async with WorkflowRunner(journal_v1, store, execute=False) as v1:
                    run_ids = [(await v1.Run()).run_id for _ in range(10)]
                await until(lambda: aio_len(logged(sink, "versions")), lambda n: n >= 5, "progress")
                async with workers(
                    tmp_path, url, sink, "tests.fleet_app:journal_v2", ["new"]
                ) as new:
                    await stop_all(old)  # no version-1 worker is left
                    # the new worker may not take them: they pause with the reason
                    paused = await until(
                        lambda: store.count_runs(workflow="journal"),
                        lambda c: (
                            c.get(RunStatus.PAUSED, 0) + c.get(RunStatus.COMPLETED, 0) == 10
                            and c.get(RunStatus.PAUSED, 0) > 0
                        ),
                        "runs paused for their version",
                    )
                    assert RunStatus.FAILED not in paused
                    for run_id in run_ids:
                        record = await store.load_run(run_id)
                        assert record is not None
                        if record.status == RunStatus.PAUSED:
                            assert record.body.needs_version == "1"
                    # a version-1 worker comes back: they go on, and finish, on version 1
                    async with workers(
                        tmp_path, url, sink, "tests.fleet_app:journal_v1", ["back"]
                    ) as back:
                        await until(
                            lambda: store.count_runs(workflow="journal"),
                            lambda c: c.get(RunStatus.COMPLETED, 0) == 10,
                            "every run completed",
                        )
                        await stop_all(back)
                    await stop_all(new)
            for run_id in run_ids:
                record = await store.load_run(run_id)
                assert record is not None and record.status == RunStatus.COMPLETED
                assert record.current_version == "1"
    assert {code for runs in codes_by_run(sink).values() for _, code in runs} == {"1"}


async def refusals(store: Store, run_ids: list[str]) -> list[Any]:
    return [
        event
        for run_id in run_ids
        for event in await store.timeline(run_id)
        if event.kind in ("commit_refused", "lease_lost")
    ]


async def aio_len(items: list[Any]) -> int:
    return len(items)


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_a_timer_fires_once_across_three_workers(kind: str, tmp_path: Path) -> None:
    from tests.fleet_app import timers

    sink = tmp_path / "sink"
    make_sink(sink)
    with store_url(kind, tmp_path) as url:
        async with (
            workers(tmp_path, url, sink, "tests.fleet_app:timers", ["t0", "t1", "t2"]) as children,
            opened(url) as store,
        ):
            async with WorkflowRunner(timers, store, execute=False) as steer:
                run_ids = [(await steer.Run()).run_id for _ in range(30)]
            await until(
                lambda: store.count_runs(workflow="timers"),
                lambda c: c.get(RunStatus.COMPLETED, 0) == 30,
                "every timer fired",
            )
            for run_id in run_ids:
                kinds = [e.kind for e in await store.timeline(run_id)]
                assert kinds.count("timer_fired") == 1, kinds
            await stop_all(children)
    attempts = logged(sink, "attempts")
    assert sorted(attempts) == sorted(f"{r}:After:1" for r in run_ids)  # each woke once


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_a_poison_step_fails_its_run_and_spares_the_others(kind: str, tmp_path: Path) -> None:
    from tests.fleet_app import poison

    sink = tmp_path / "sink"
    make_sink(sink)
    with store_url(kind, tmp_path) as url:
        async with opened(url) as store:
            async with WorkflowRunner(poison, store, execute=False) as steer:
                bad = (await steer.Run()).run_id
            async with WorkflowRunner(fleet, store, execute=False) as steer:
                good = [(await steer.Run()).run_id for _ in range(5)]
            deaths = 0
            async with workers(tmp_path, url, sink, "tests.fleet_app:fleet", ["steady"]) as (
                steady
            ):
                # A supervisor restarting the poison run's worker (as a container platform
                # would): each one takes the run over once the lease of the last one has
                # run out, and dies in its step.
                for attempt in range(4):
                    async with workers(
                        tmp_path,
                        url,
                        sink,
                        "tests.fleet_app:poison",
                        [f"p{attempt}"],
                        "--poison-after",
                        "3",
                    ) as children:
                        (worker,) = children.values()
                        if not await died_or_failed(worker, store, bad):
                            await stop_all(children)  # it failed the run and lived on
                            break
                        deaths += 1
                await until(
                    lambda: store.count_runs(workflow="fleet"),
                    lambda c: c.get(RunStatus.COMPLETED, 0) == 5,
                    "the other runs completed",
                )
                await stop_all(steady)
            record = await store.load_run(bad)
            assert record is not None and record.status == RunStatus.FAILED
            error = record.body.error
            assert error is not None and error.type == "PoisonRun"
            assert error.message == "poison: executor died 3 times in Die"
            assert deaths == 3
            for run_id in good:
                kept = await store.load_run(run_id)
                assert kept is not None and kept.status == RunStatus.COMPLETED
    assert len(logged(sink, "attempts")) >= 3 + 5 * STEPS


async def died_or_failed(worker: Child, store: Store, run_id: str) -> bool:
    """Wait until `worker` dies (True; it must be by SIGKILL) or run `run_id` fails."""
    with anyio.move_on_after(60):
        while worker.process.returncode is None:
            record = await store.load_run(run_id)
            if record is not None and record.status == RunStatus.FAILED:
                return False
            await anyio.sleep(0.05)  # sleep-ok: polling a child and the store
        assert worker.process.returncode == -signal.SIGKILL, worker.diagnosis()
        return True
    pytest.fail(f"{worker.name} neither died nor failed the run: {worker.diagnosis()}")
