"""The seeded fault suite: worker processes on a private `redis-server`, reached through a
proxy that can cut replies, while a seed's schedule (`tests/fault_schedule.py`) SIGKILLs
and SIGSTOPs workers, SIGKILLs Redis (`appendfsync always`) and restarts it, and cuts
replies, at points measured in the steps applied so far.

Whatever the schedule, every run completes, each step's effect is applied once at the
sink keyed by `ctx.IdempotencyKey`, and each step's completion is recorded once, in a
timeline without gaps.

CI runs the fixed seeds below; each prints its schedule. Replay one, or try a new one:

    HOLON_FAULT_SEED=7 scripts/test tests/test_fault_schedule.py
    HOLON_FAULT_SEED=random scripts/test tests/test_fault_schedule.py

(`random` draws a seed and prints it: a failure names the seed that replays it.)
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import pytest

from holon import WorkflowRunner
from holon.stores.base import RunStatus
from holon.stores.redis import RedisStore
from tests.fault_schedule import RUNS, STEPS, WORKERS, Fault, Sink, chaos, schedule
from tests.processes import Child, child
from tests.redis_support import CuttingProxy, RedisProcess, have_redis_server

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

if not have_redis_server():  # pragma: no cover
    pytest.skip("redis-server is not installed", allow_module_level=True)

FIXED_SEEDS = [1, 2, 3, 4, 5]
SEED_ENV = "HOLON_FAULT_SEED"
DEADLINE = 90.0
STALL = 3.0
"""Seconds without progress after which frozen workers are thawed early."""


def seeds() -> list[int]:
    """The fixed seeds, and the one `HOLON_FAULT_SEED` names (`random`: a new one)."""
    chosen = os.environ.get(SEED_ENV, "").strip()
    if not chosen:
        return FIXED_SEEDS
    seed = random.SystemRandom().randrange(2**32) if chosen == "random" else int(chosen)
    return [*FIXED_SEEDS, seed] if seed not in FIXED_SEEDS else FIXED_SEEDS


class Cluster:
    """The workers, the Redis server and the proxy of one seeded run, and the faults
    applied to them."""

    def __init__(self, tmp_path: Path, stack: AsyncExitStack, server: RedisProcess) -> None:
        self.tmp_path = tmp_path
        self.stack = stack
        self.server = server
        self.proxy = CuttingProxy(server.port)
        self.sink = Sink(tmp_path / "sink.db")
        self.live: list[Child] = []
        self.names: dict[int, str] = {}
        self.frozen: list[tuple[Child, int]] = []
        self.started = 0
        self.store = RedisStore(server.url, key_prefix="chaos:")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.proxy.port}/0"

    async def spawn(self) -> None:
        self.started += 1
        name = f"worker{self.started}"
        worker = await self.stack.enter_async_context(
            child(
                self.tmp_path,
                name,
                "-m",
                "tests.chaos_worker",
                "--url",
                self.url,
                "--prefix",
                "chaos:",
                "--sink",
                str(self.sink.path),
                "--owner",
                name,
            )
        )
        await worker.expect("ready", lambda m: m.get("event") == "ready")
        self.live.append(worker)
        self.names[id(worker)] = name

    def running(self) -> list[Child]:
        frozen = {id(c) for c, _ in self.frozen}
        return [c for c in self.live if id(c) not in frozen]

    async def busy(self, among: list[Child]) -> list[Child]:
        """The workers among `among` that hold runs now (all of them when none does): a
        fault on an idle worker would test nothing."""
        owners: set[str] = set()
        try:
            page = await self.store.list_runs(status=RunStatus.RUNNING, limit=1000)
            for summary in page.items:
                record = await self.store.load_run(summary.run_id)
                if record is not None and record.lease is not None:
                    owners.add(record.lease.owner)
        except Exception:  # Redis is restarting: any worker will do
            return among
        holding = [c for c in among if self.names[id(c)] in owners]
        return holding or among

    async def strike(self, fault: Fault) -> None:
        if fault.kind == "kill_worker":
            candidates = await self.busy(self.live)
            victim = candidates[fault.worker % len(candidates)]
            self.frozen = [(c, u) for c, u in self.frozen if c is not victim]
            await victim.kill()
            self.live.remove(victim)
            await self.spawn()  # a new worker (a new owner) takes its place
        elif fault.kind == "freeze_worker":
            running = self.running()
            if len(running) == 1:  # keep one worker going: thaw the longest frozen first
                self.thaw(self.frozen[0][0])
                running = self.running()
            candidates = await self.busy(running)
            victim = candidates[fault.worker % len(candidates)]
            victim.process.send_signal(signal.SIGSTOP)
            self.frozen.append((victim, fault.until))
        elif fault.kind == "restart_redis":
            self.server.kill()
            self.server.start()  # from its append-only file, fsynced at every write
        else:
            self.proxy.armed = True

    def thaw(self, worker: Child) -> None:
        worker.process.send_signal(signal.SIGCONT)
        self.frozen = [(c, u) for c, u in self.frozen if c is not worker]

    def thaw_due(self, progress: int) -> None:
        for worker, until in list(self.frozen):
            if progress >= until:
                self.thaw(worker)

    def diagnosis(self) -> str:
        return "\n".join(c.diagnosis() for c in self.live)


@asynccontextmanager
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    server = RedisProcess(
        tmp_path / "redis", options=("--appendonly", "yes", "--appendfsync", "always")
    ).start()
    try:
        async with AsyncExitStack() as stack:
            made = Cluster(tmp_path, stack, server)
            await made.proxy.start()
            await made.store.open()
            made.sink.create()
            try:
                yield made
            finally:
                for worker, _ in made.frozen:
                    worker.process.send_signal(signal.SIGCONT)
                await made.proxy.close()
                await made.store.close()
    finally:
        server.kill()


@pytest.mark.parametrize("seed", seeds(), ids=lambda seed: f"seed={seed}")
async def test_a_seeded_fault_schedule_loses_and_doubles_nothing(
    seed: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    faults = schedule(seed)
    plan = "; ".join(map(str, faults))
    with capsys.disabled():
        print(f"\nfault schedule seed={seed} ({SEED_ENV}={seed} replays it): {plan}")
    async with cluster(tmp_path) as chaos_cluster:
        store = chaos_cluster.store
        async with anyio.create_task_group() as group:  # the workers first, all ready
            for _ in range(WORKERS):
                group.start_soon(chaos_cluster.spawn)
        async with WorkflowRunner(chaos(chaos_cluster.sink, 0), store, execute=False) as r:
            ids = [(await r.Run(run_id=f"run{i:02}")).run_id for i in range(RUNS)]
        pending = list(faults)
        struck: list[Fault] = []
        last, moved = -1, time.monotonic()
        with anyio.move_on_after(DEADLINE):
            while True:
                progress = chaos_cluster.sink.progress()
                if progress != last:
                    last, moved = progress, time.monotonic()
                elif chaos_cluster.frozen and time.monotonic() - moved > STALL:
                    # A worker frozen inside the sink's write lock holds up the others.
                    for worker, _ in list(chaos_cluster.frozen):
                        chaos_cluster.thaw(worker)
                chaos_cluster.thaw_due(progress)
                while pending and progress >= pending[0].at:
                    fault = pending.pop(0)
                    await chaos_cluster.strike(fault)
                    struck.append(fault)
                if not pending and not chaos_cluster.frozen:
                    counts = await _counts(store)
                    if counts == {RunStatus.COMPLETED: RUNS}:
                        break
                await anyio.sleep(0.02)  # sleep-ok: polling the sink and store, bounded
        counts = await _counts(store)
        assert counts == {RunStatus.COMPLETED: RUNS}, (
            f"seed={seed} ({plan}): runs by status {counts} after {DEADLINE} s; struck "
            f"{[str(f) for f in struck]}\n{chaos_cluster.diagnosis()}"
        )
        assert struck == faults, f"seed={seed}: not every fault struck"
        cuts = sum(f.kind == "cut_reply" for f in faults)
        assert chaos_cluster.proxy.cuts == cuts, f"seed={seed}: a reply was not cut"
        attempts = chaos_cluster.sink.attempts()
        with capsys.disabled():
            print(f"seed={seed}: {len(attempts)} step attempts for {RUNS * STEPS} steps")
        expected = {f"{run_id}:S{i}:1": f"{run_id}/S{i}" for run_id in ids for i in range(STEPS)}
        assert chaos_cluster.sink.applied() == expected, f"seed={seed}: effects differ"
        for run_id in ids:
            record = await store.load_run(run_id)
            assert record is not None and record.body.state == {"n": STEPS}, (seed, run_id)
            timeline = await store.timeline(run_id)
            completed = [e.step for e in timeline if e.kind == "step_completed"]
            assert completed == ["__start__", *(f"S{i}" for i in range(STEPS))], (
                f"seed={seed}: {run_id} recorded {completed}"
            )
            assert [e.seq for e in timeline] == list(range(1, len(timeline) + 1)), seed


async def _counts(store: RedisStore) -> dict[RunStatus, int]:
    try:
        return await store.count_runs(workflow="chaos")
    except Exception:  # the server is restarting: ask again on the next poll
        return {}


def test_a_seed_replays_its_schedule() -> None:
    assert schedule(7) == schedule(7)
    assert schedule(7) != schedule(8)
    for seed in FIXED_SEEDS:
        faults = schedule(seed)
        assert {f.kind for f in faults} == {
            "kill_worker",
            "freeze_worker",
            "restart_redis",
            "cut_reply",
        }
        assert [f.at for f in faults] == sorted(f.at for f in faults)
        assert all(f.until > f.at for f in faults if f.kind == "freeze_worker")
