"""A separate process for `test_waits_processes.py`: each command is one process's life.

    start   --db FILE --run-id ID --workflow approval|timer --now T
            start the run (as "sam") and exit once it waits; prints the wait.
    approve --db FILE --run-id ID --now T --by WHO --digest HEX
            approve the waiting run and print its result.
    look    --db FILE --run-id ID --workflow timer --now T
            look for due runs once and print the run's status.
    resume  --db FILE --run-id ID --workflow timer --now T
            start a runner, which picks up due runs at once, and print the result.

Time is a `ManualClock` set to `--now`, so a timer "fires after an hour" by starting
the next process an hour later on the clock, without anyone sleeping. Messages are one
JSON object per line on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import anyio

from holon import (
    END,
    START,
    Context,
    HumanApproval,
    ManualClock,
    Next,
    NotAnApprover,
    Sleep,
    Wait,
    Workflow,
    WorkflowRunner,
)
from holon.stores import SQLiteStore

RESULT_TIMEOUT = 20.0


def emit(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


def draft(ctx: Context[Any, Any]) -> str:
    ctx.SetState({"draft": "Q3 price list", "lines": 12})
    return "Gate"


def gate(ctx: Context[Any, Any]) -> Wait:
    payload = {"draft": ctx.State["draft"], "lines": ctx.State["lines"]}
    approval = HumanApproval(
        approvers=["editor"], question="Publish?", payload=payload, forbid_self_approval=True
    )
    return Wait(approval, "Publish")


def publish(ctx: Context[Any, Any]) -> Next:
    return Next(END, output={"published": ctx.State["draft"], "by": ctx.Decision["by"]})


Approval = Workflow("ProcessApproval").Flow(
    {START: lambda ctx: "Draft", "Draft": draft, "Gate": gate, "Publish": publish}
)


def wake(ctx: Context[Any, Any]) -> Next:
    return Next(END, output={"fired_at": ctx.Decision["fired_at"]})


Timer = Workflow("ProcessTimer").Flow(
    {
        START: lambda ctx: "Nap",
        "Nap": lambda ctx: Wait(Sleep(3600), "Wake"),
        "Wake": wake,
    }
)

WORKFLOWS = {"approval": Approval, "timer": Timer}


async def main(args: argparse.Namespace) -> int:
    store = SQLiteStore(f"sqlite:///{args.db}")
    clock = ManualClock(args.now)
    workflow = WORKFLOWS[args.workflow]
    async with WorkflowRunner(workflow, store=store, clock=clock, lease_ttl=5) as runner:
        if args.command == "start":
            handle = await runner.Run(run_id=args.run_id, started_by="sam")
            await handle.WaitUntil("waiting", timeout=RESULT_TIMEOUT)
            info = await handle.Waiting()
            assert info is not None
            emit(
                {
                    "event": "waiting",
                    "wait_id": info.wait_id,
                    "payload": info.payload,
                    "digest": info.digest,
                    "deadline": info.deadline,
                }
            )
            return 0
        handle = await runner.Get(args.run_id)
        if args.command == "look":
            await runner.recover_now()
            emit({"event": "status", "status": (await handle.Status()).value})
            return 0
        if args.command == "approve":
            try:
                await handle.Approve(by="sam", digest=args.digest)
            except NotAnApprover as exc:
                emit({"event": "refused", "by": exc.by, "error": type(exc).__name__})
            await handle.Approve(by=args.by, digest=args.digest, comment="from another process")
        emit({"event": "result", "value": await handle.Result(timeout=RESULT_TIMEOUT)})
    await store.close()
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.waits_worker")
    parser.add_argument("command", choices=["start", "approve", "look", "resume"])
    parser.add_argument("--db", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--workflow", default="approval", choices=sorted(WORKFLOWS))
    parser.add_argument("--now", type=float, required=True)
    parser.add_argument("--by", default="")
    parser.add_argument("--digest", default=None)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(anyio.run(main, parse(sys.argv[1:])))
