"""The workflows `bench_workers.py` runs on a fleet of worker processes.

`Loop` takes `steps` steps of one async step that counts in the run's state (every step
a checkpoint); `Hold` sleeps in its one step for a long time (the run a benchmark kills
its worker under). Worker processes import this module by name: `fleet_app:workflows`.
"""

from __future__ import annotations

from typing import Any

import anyio
from pydantic import BaseModel

from holon import END, START, Workflow


class Length(BaseModel):
    steps: int


class Count(BaseModel):
    n: int = 0


async def tick(ctx: Any) -> str:
    n = ctx.State.n + 1
    ctx.SetState(n=n)
    return END if n >= ctx.Input.steps else "Tick"


async def hold(ctx: Any) -> str:
    await anyio.sleep(3600)
    return END


Loop = (
    Workflow("loop", version="1")
    .Input(Length)
    .State(Count)
    .Flow({START: lambda ctx: "Tick", "Tick": tick})
)
Hold = Workflow("hold", version="1").Flow({START: hold})

workflows = [Loop, Hold]
