"""A separate process for the fault tests in `test_crash.py`.

The tests start this module as a child process (`python -m tests.crash_worker ...`),
talk to it through its stdout (one JSON object per line) and kill it with SIGKILL at
the moment they choose. Every step attempt appends a JSON line (step, idempotency key,
attempt, pid) to the log file named in the run's input, so the tests can prove which
step ran where, how often, and with which key.

Commands:

    start   --db FILE --workflow NAME --run-id ID --log FILE [--hang-in STEP]
            start the run; with --hang-in, that step announces itself and never
            returns (the test kills the process there). An approval workflow stops
            once the run waits, and the process exits normally.
    resume  --db FILE --workflow NAME --run-id ID
            pick up the run (its previous executor died) and wait for its result.
    approve --db FILE --workflow NAME --run-id ID --by WHO
            approve the run's gate and wait for its result.

Messages on stdout: `{"event": "inside", "step": ..., "key": ...}` when a hanging step
is reached, `{"event": "committed", "events": [[kind, step], ...]}` after every
checkpoint, `{"event": "waiting"}` and `{"event": "result", "value": ...}`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import anyio
from pydantic import BaseModel

from holon import (
    END,
    START,
    Context,
    HumanApproval,
    Next,
    Parallel,
    Retry,
    RunFailed,
    Wait,
    Workflow,
    WorkflowRunner,
    step,
)
from holon.stores import SQLiteStore
from holon.stores.base import Checkpoint, Committed

LEASE_TTL = 0.5
"""Short, so a successor claims a dead process's run within a fraction of a second."""

RESULT_TIMEOUT = 20.0

_hang_in: set[str] = set()
"""Steps that park forever in this process (set from --hang-in; empty when imported)."""


class Job(BaseModel):
    log: str
    """The file every step attempt appends a JSON line to."""


class Tally(BaseModel):
    trail: list[str] = []
    total: int = 0
    base: int = 0
    draft: str | None = None


Ctx = Context[Job, Tally]


def emit(message: dict[str, Any]) -> None:
    """Tell the parent test something: one JSON line on stdout."""
    print(json.dumps(message), flush=True)


async def attempt(ctx: Ctx) -> None:
    """Record this step attempt; if this process must hang here, announce it and park."""
    line = {
        "step": ctx.StepName,
        "key": ctx.IdempotencyKey,
        "attempt": ctx.Attempt,
        "pid": os.getpid(),
        "at": time.time(),
    }
    with open(ctx.Input.log, "a", encoding="utf-8") as log:
        log.write(json.dumps(line) + "\n")
    if ctx.StepName in _hang_in:
        emit({"event": "inside", "step": ctx.StepName, "key": ctx.IdempotencyKey})
        await anyio.sleep_forever()  # sleep-ok: parked mid-step until the test kills us


# -- a linear flow of five steps ------------------------------------------------------


def linear_step(name: str, value: int, after: str) -> Any:
    async def step(ctx: Ctx) -> str:
        await attempt(ctx)
        ctx.SetState(trail=[*ctx.State.trail, name], total=ctx.State.total + value)
        return after

    step.__name__ = step.__qualname__ = f"step_{name}"
    return step


Linear = (
    Workflow("CrashLinear", "Five steps in a row")
    .Input(Job)
    .State(Tally)
    .Flow(
        {
            START: lambda ctx: "S1",
            "S1": linear_step("S1", 1, "S2"),
            "S2": linear_step("S2", 10, "S3"),
            "S3": linear_step("S3", 100, "S4"),
            "S4": linear_step("S4", 1_000, "S5"),
            "S5": linear_step("S5", 10_000, END),
        }
    )
)


# -- a fan-out of two branches ---------------------------------------------------------


async def prep(ctx: Ctx) -> str:
    await attempt(ctx)
    ctx.SetState(base=40)
    return "Fan"


async def fast(ctx: Ctx) -> dict[str, Any]:
    await attempt(ctx)
    return {"branch": "Fast", "value": ctx.State.base + 1}


async def slow(ctx: Ctx) -> dict[str, Any]:
    await attempt(ctx)
    return {"branch": "Slow", "value": ctx.State.base + 2}


async def join(ctx: Ctx) -> Next:
    await attempt(ctx)
    results = {name: ctx.StepResults[name] for name in ("Fast", "Slow")}
    return Next(END, output=results)


Fan = (
    Workflow("CrashFan", "Two branches, then a join")
    .Input(Job)
    .State(Tally)
    .Flow(
        {
            START: lambda ctx: "Prep",
            "Prep": prep,
            "Fan": lambda ctx: Parallel(["Fast", "Slow"], "Join"),
            "Fast": fast,
            "Slow": slow,
            "Join": join,
        }
    )
)


# -- an approval gate ------------------------------------------------------------------


async def draft(ctx: Ctx) -> str:
    await attempt(ctx)
    ctx.SetState(draft="v1")
    return "Gate"


def gate(ctx: Ctx) -> Wait:
    return Wait(HumanApproval(approvers=["editor"], question="Publish v1?"), "Publish")


async def publish(ctx: Ctx) -> Next:
    await attempt(ctx)
    return Next(END, output={"draft": ctx.State.draft, "approved_by": ctx.Decision["by"]})


Approval = (
    Workflow("CrashApproval", "A draft waits for an editor")
    .Input(Job)
    .State(Tally)
    .Flow({START: lambda ctx: "Draft", "Draft": draft, "Gate": gate, "Publish": publish})
)

# -- a retry whose backoff a crash interrupts -------------------------------------------


async def call(ctx: Ctx) -> Next:
    await attempt(ctx)
    if ctx.Attempt == 1:
        raise ConnectionError("refused")
    return Next(END, output={"attempts": ctx.Attempt})


Backoff = (
    Workflow("CrashBackoff", "A step that fails once, then waits out a backoff")
    .Input(Job)
    .State(Tally)
    .Flow(
        {
            START: lambda ctx: "Call",
            "Call": step(call, retry=Retry(attempts=3, initial_delay=1.5, jitter=False)),
        }
    )
)


# -- a saga whose compensation a crash interrupts ----------------------------------------


async def undo(ctx: Ctx, output: Any) -> None:
    """Log the undo as a step `undo:<step>`; hang there when told to."""
    line = {
        "step": f"undo:{ctx.StepName}",
        "key": ctx.IdempotencyKey,
        "output": output,
        "pid": os.getpid(),
    }
    with open(ctx.Input.log, "a", encoding="utf-8") as log:
        log.write(json.dumps(line) + "\n")
    if f"undo:{ctx.StepName}" in _hang_in:
        emit({"event": "inside", "step": f"undo:{ctx.StepName}"})
        await anyio.sleep_forever()  # sleep-ok: parked mid-undo until the test kills us


def booking(name: str, after: str) -> Any:
    async def book(ctx: Ctx) -> Next:
        await attempt(ctx)
        return Next(after, output={"booked": name})

    book.__name__ = book.__qualname__ = f"book_{name}"
    return book


async def fail(ctx: Ctx) -> str:
    await attempt(ctx)
    raise RuntimeError("no car available")


Saga = (
    Workflow("CrashSaga", "Two bookings undone after a failure")
    .Input(Job)
    .State(Tally)
    .Flow(
        {
            START: lambda ctx: "Flight",
            "Flight": step(booking("Flight", "Hotel"), compensate=undo),
            "Hotel": step(booking("Hotel", "Car"), compensate=undo),
            "Car": fail,
        }
    )
)

WORKFLOWS = {
    "linear": Linear,
    "fan": Fan,
    "approval": Approval,
    "backoff": Backoff,
    "saga": Saga,
}


# -- the process -----------------------------------------------------------------------


class ReportingStore(SQLiteStore):
    """The SQLite store, telling the parent about every checkpoint once it is durable."""

    async def commit(
        self, run_id: str, *, expected_seq: int, token: int | None, checkpoint: Checkpoint
    ) -> Committed:
        committed = await super().commit(
            run_id, expected_seq=expected_seq, token=token, checkpoint=checkpoint
        )
        emit(
            {
                "event": "committed",
                "seq": committed.seq,
                "status": checkpoint.status.value,
                "events": [[e.kind, e.step] for e in checkpoint.events],
            }
        )
        return committed


async def main(args: argparse.Namespace) -> int:
    workflow = WORKFLOWS[args.workflow]
    store = ReportingStore(f"sqlite:///{args.db}")
    async with WorkflowRunner(workflow, store=store, lease_ttl=LEASE_TTL) as runner:
        if args.command == "start":
            handle = await runner.Run({"log": args.log}, run_id=args.run_id)
            if workflow is Approval:
                await handle.WaitUntil("waiting", timeout=RESULT_TIMEOUT)
                emit({"event": "waiting"})
                return 0
        else:
            handle = await runner.Get(args.run_id)
            if args.command == "approve":
                await handle.Approve(by=args.by, comment="looks good")
        try:
            result = await handle.Result(timeout=RESULT_TIMEOUT)
        except RunFailed as exc:
            record = await handle.Record()
            emit({"event": "failed", "status": exc.status, "compensated": record.body.compensated})
        else:
            emit({"event": "result", "value": result})
    await store.close()
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.crash_worker")
    parser.add_argument("command", choices=["start", "resume", "approve"])
    parser.add_argument("--db", required=True)
    parser.add_argument("--workflow", required=True, choices=sorted(WORKFLOWS))
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--log", default="")
    parser.add_argument("--hang-in", action="append", default=[])
    parser.add_argument("--by", default="")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse(sys.argv[1:])
    _hang_in.update(arguments.hang_in)
    sys.exit(anyio.run(main, arguments))
