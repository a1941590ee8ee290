"""A runner under load: it drains a queue larger than one claim batch at once, renews
the leases of all the runs it executes in one heartbeat loop, and lets operators in
between steps on every store."""

from __future__ import annotations

from typing import Any, Literal

import anyio
import pytest
from pydantic import BaseModel

from holon import END, START, Context, ManualClock, Workflow, WorkflowRunner, step
from holon.runtime.executor import CLAIM_BATCH
from holon.stores import MemoryStore
from holon.stores.base import Control, RunStatus, Store

pytestmark = pytest.mark.anyio


class Count(BaseModel):
    n: int = 0


async def test_a_queue_larger_than_a_claim_batch_is_drained_without_waiting_to_poll(
    store: Store,
) -> None:
    runs = CLAIM_BATCH * 2 + 7
    finished = 0
    all_finished = anyio.Event()

    async def done(ctx: Context[None, None]) -> Literal[END]:  # type: ignore[valid-type]
        nonlocal finished
        finished += 1
        if finished == runs:
            all_finished.set()
        return END

    wf = Workflow("Queued").Flow({START: lambda ctx: "Done", "Done": done})
    async with WorkflowRunner(wf, store, execute=False) as submitter:
        for _ in range(runs):
            await submitter.Run()
    # The clock never moves: a runner that waited for its next poll between batches
    # would finish only the first batch.
    async with WorkflowRunner(wf, store, clock=ManualClock(), poll_interval=3600):
        with anyio.move_on_after(30):
            await all_finished.wait()
        assert finished == runs, f"{finished} of {runs} ran"
    page = await store.list_runs(status=RunStatus.COMPLETED, workflow="Queued", limit=runs)
    assert len(page.items) == runs


class CountingRenewals(MemoryStore):
    """A memory store that tells when `expected` lease renewals have been made."""

    def __init__(self, expected: int) -> None:
        super().__init__()
        self.expected = expected
        self.renewed: list[str] = []
        self.all_renewed = anyio.Event()

    async def renew_lease(self, run_id: str, token: int, ttl: float, now: float) -> Control | None:
        control = await super().renew_lease(run_id, token, ttl, now)
        self.renewed.append(run_id)
        if len(self.renewed) == self.expected:
            self.all_renewed.set()
        return control


async def test_one_heartbeat_round_renews_every_executing_run() -> None:
    runs = 25
    store = CountingRenewals(expected=runs)
    clock = ManualClock()
    entered = 0
    all_entered = anyio.Event()
    release = anyio.Event()

    async def hold(ctx: Context[None, None]) -> Literal[END]:  # type: ignore[valid-type]
        nonlocal entered
        entered += 1
        if entered == runs:
            all_entered.set()
        await release.wait()
        return END

    wf = Workflow("Held").Flow({START: hold})
    async with WorkflowRunner(wf, store, clock=clock, lease_ttl=30) as runner:
        handles = [await runner.Run() for _ in range(runs)]
        with anyio.fail_after(10):
            await all_entered.wait()
        before = {h.run_id: (await store.load_run(h.run_id)) for h in handles}
        clock.advance(10)  # a third of the lease: one heartbeat round
        with anyio.fail_after(10):
            await store.all_renewed.wait()
        assert sorted(store.renewed) == sorted(h.run_id for h in handles)
        for handle in handles:
            old = before[handle.run_id]
            new = await store.load_run(handle.run_id)
            assert old is not None and old.lease is not None
            assert new is not None and new.lease is not None
            assert new.lease.expires_at == old.lease.expires_at + 10
        release.set()
        for handle in handles:
            assert (await handle.WaitUntil("completed", timeout=10)).status == RunStatus.COMPLETED


async def test_a_pause_lands_between_steps_on_every_store(store: Store) -> None:
    first_step = anyio.Event()

    def spin(ctx: Context[None, Count]) -> Any:
        first_step.set()
        ctx.SetState(n=ctx.State.n + 1)
        return "Spin" if ctx.State.n < 100_000 else END

    # Called on the event loop, never yielding: the engine must make room itself.
    spinner = (
        Workflow("Spinner")
        .State(Count)
        .Flow({START: lambda ctx: "Spin", "Spin": step(spin, thread=False)})
    )
    async with WorkflowRunner(spinner, store) as runner:
        handle = await runner.Run()
        with anyio.fail_after(10):
            await first_step.wait()
        await handle.Pause(by="ops")
        record = await handle.WaitUntil("paused", timeout=30)
    assert record.status == RunStatus.PAUSED
    assert 1 <= record.body.state["n"] < 100_000
