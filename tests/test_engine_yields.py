"""The engine lets other tasks run between steps, even when nothing else would yield.

A step that never awaits, on a store that answers without awaiting (memory, and SQLite
when the file is not locked), must still leave room at step boundaries, at least every
millisecond, for the lease heartbeat, operators' Pause and Stop, and readers in the
same event loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import anyio
import pytest
from pydantic import BaseModel

from holon import END, START, Context, Workflow, WorkflowRunner
from holon.stores import MemoryStore, SQLiteStore
from holon.stores.base import RunStatus, Store

pytestmark = pytest.mark.anyio

STEPS = 2_000


class Count(BaseModel):
    n: int = 0


@pytest.fixture(params=["memory", "sqlite"])
def inline_store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "memory":
        return MemoryStore()
    return SQLiteStore(f"sqlite:///{tmp_path / 'holon.db'}")


async def test_pause_lands_while_steps_that_never_yield_are_running(inline_store: Store) -> None:
    first_step = anyio.Event()

    def spin(ctx: Context[None, Count]) -> Literal["Spin", END]:  # type: ignore[valid-type]
        first_step.set()
        n = ctx.State.n + 1
        ctx.SetState(n=n)
        return "Spin" if n < STEPS else END

    spinner = Workflow("Spinner").State(Count).Flow({START: lambda ctx: "Spin", "Spin": spin})
    async with WorkflowRunner(spinner, store=inline_store) as runner:
        handle = await runner.Run()
        with anyio.fail_after(10):
            await first_step.wait()
        await handle.Pause(by="ops")
        record = await handle.WaitUntil("paused", timeout=10)
    await inline_store.close()

    assert record.status == RunStatus.PAUSED, (
        f"the run ended {record.status.value} after {record.body.state['n']} steps: the "
        "pause request never got a turn while the steps ran"
    )
    assert 1 <= record.body.state["n"] < STEPS
