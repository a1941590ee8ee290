"""Workflows the fleet tests run on several worker processes, and the sink that counts
their steps' external effects.

Every step of `fleet` applies one effect at the sink, keyed by `ctx.IdempotencyKey`: the
sink logs each call (an attempt) and applies a key once, the way a payment provider
honours an idempotency key. A step run twice (its worker died before its checkpoint)
shows as two attempts and one effect. The sink is a folder named by `HOLON_TEST_SINK`:
an effect is a file created exclusively (so a key is applied once, whoever tries), an
attempt a line appended to the worker's log. Files, not a database: a worker stopped
with SIGSTOP must hold no lock that stops the others.

`deploy_v1` and `deploy_v2` are two versions of one workflow for the rolling deploy: each
step logs which version's code ran it.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel

from holon import END, START, Next, Sleep, Wait, Workflow

STEPS = 10


def _sink() -> Path:
    return Path(os.environ["HOLON_TEST_SINK"])


def _worker() -> str:
    return os.environ.get("HOLON_TEST_WORKER", "unknown")


def make_sink(folder: Path) -> None:
    (folder / "applied").mkdir(parents=True)


def _log(kind: str, line: str) -> None:
    with open(_sink() / f"{kind}-{_worker()}.log", "a") as log:
        log.write(line + "\n")


def apply(key: str) -> None:
    _log("attempts", key)
    try:
        fd = os.open(_sink() / "applied" / key, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return  # applied before: an idempotency key is honoured once
    os.write(fd, _worker().encode())
    os.close(fd)


def applied(folder: Path) -> list[str]:
    return os.listdir(folder / "applied")


def logged(folder: Path, kind: str) -> list[str]:
    return [
        line
        for log in folder.glob(f"{kind}-*.log")
        for line in log.read_text().splitlines()
        if line
    ]


class Count(BaseModel):
    n: int = 0


async def work(ctx: Any) -> str | Next:
    """One step: apply its effect, work a little, count. Async, so that a worker woken
    from a stall resumes its steps (their timers are due first) before its heartbeat:
    their checkpoints reach the store late and are refused, which the test shows."""
    apply(ctx.IdempotencyKey)
    await anyio.sleep(0.01)  # sleep-ok: the step's work, long enough to be killed in
    n = ctx.State.n + 1
    ctx.SetState(n=n)
    return Next(END, output=n) if n >= STEPS else "Work"


fleet = Workflow("fleet", version="1").State(Count).Flow({START: lambda ctx: "Work", "Work": work})


def _versioned(code: str) -> Workflow:
    async def step(ctx: Any) -> str | Next:
        _log("versions", f"{ctx.IdempotencyKey} {code}")
        apply(ctx.IdempotencyKey)
        await anyio.sleep(0.01)  # sleep-ok: the step's work
        n = ctx.State.n + 1
        ctx.SetState(n=n)
        return Next(END, output=code) if n >= 5 else "Step"

    return (
        Workflow("deploy", version=code)
        .State(Count)
        .Flow({START: lambda ctx: "Step", "Step": step})
    )


deploy_v1 = _versioned("1")
deploy_v2 = _versioned("2")


def _imperative(code: str) -> Workflow:
    """An `.Execute()` workflow of ten tasks of 0.8 s (long enough for a deploy to start
    a new worker meanwhile, on a loaded machine); version 2 declares no
    migration from 1, so a version-1 run may only ever run on version 1's code."""

    async def task(i: int, key_code: str) -> int:
        _log("versions", f"{key_code} {code}")
        await anyio.sleep(0.8)  # sleep-ok: the task's work, long enough for a deploy
        return i

    async def body(ctx: Any) -> str:
        for i in range(10):
            await ctx.Task(task, i, f"{ctx.RunId}:{i}")
        return code

    return Workflow("journal", version=code).Execute(body)


journal_v1 = _imperative("1")
journal_v2 = _imperative("2")


async def _after_timer(ctx: Any) -> Next:
    apply(ctx.IdempotencyKey)
    return Next(END, output="woke")


timers = Workflow("timers", version="1").Flow(
    {
        START: lambda ctx: Wait(Sleep(0.5), "After"),
        "After": _after_timer,
    }
)


def _die(ctx: Any) -> str:
    """A step that takes its process down, every time it is tried."""
    _log("attempts", ctx.IdempotencyKey)
    os.kill(os.getpid(), signal.SIGKILL)
    return END  # never reached


poison = Workflow("poison", version="1").Flow({START: lambda ctx: "Die", "Die": _die})
