"""A separate process for `test_children_processes.py`: each command is one process's
life, on the store given by --store (a SQLite file or a Redis URL) and --prefix.

    start   --run-id ID   start the parent; its child's step blocks on its first
                          attempt (the test SIGKILLs this process there).
    finish  --run-id ID   executes both workflows: takes the child over once its lease
                          expired, completes it, and prints the parent's result.
    hold    --run-id ID   start a parent whose child waits for an approval; exits
                          once both wait.
    stop    --run-id ID   stop the parent (executing nothing) and print both statuses.

Messages are one JSON object per line on stdout.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import anyio

from holon import (
    END,
    START,
    Child,
    Context,
    HumanApproval,
    Next,
    RunStatus,
    Wait,
    Workflow,
    WorkflowRunner,
)
from holon.stores import open_store

LEASE_TTL = 1.0
RESULT_TIMEOUT = 20.0


def emit(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


async def slow(ctx: Context[Any, Any]) -> Next:
    emit({"event": "child_running", "attempt": ctx.Attempt, "run_id": ctx.RunId})
    if ctx.Attempt == 1:
        await anyio.sleep_forever()  # killed here
    return Next(END, output={"items": ctx.Input["items"], "attempt": ctx.Attempt})


Slow = Workflow("slow-child").Flow({START: slow})
Gated = Workflow("gated-child").Flow(
    {START: lambda ctx: Wait(HumanApproval(approvers=["ops"]), "Done"), "Done": lambda c: END}
)
Parent = Workflow("crash-parent").Flow(
    {
        START: lambda ctx: Child(Slow, {"items": 3}, "Use"),
        "Use": lambda ctx: Next(END, output={"child": ctx.StepResults[START.value]}),
    }
)
Holder = Workflow("holding-parent").Flow(
    {START: lambda ctx: Child(Gated, None, "Done"), "Done": lambda ctx: END}
)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["start", "finish", "hold", "stop"])
    parser.add_argument("--store", required=True)
    parser.add_argument("--prefix", default="")
    parser.add_argument("--run-id", required=True)
    args = parser.parse_args()
    store = open_store(args.store, key_prefix=args.prefix)
    run_id = args.run_id
    child_id = f"{run_id}/{START.value}#1"
    if args.command == "start":
        async with WorkflowRunner(Parent, store, lease_ttl=LEASE_TTL) as runner:
            await runner.Run(run_id=run_id)
            await anyio.sleep_forever()
    elif args.command == "finish":
        async with (
            WorkflowRunner(Slow, store, lease_ttl=LEASE_TTL) as children,
            WorkflowRunner(Parent, store, lease_ttl=LEASE_TTL) as parents,
        ):
            child = await children.Get(child_id)
            emit({"event": "child_done", "result": await child.Result(timeout=RESULT_TIMEOUT)})
            parent = await parents.Get(run_id)
            emit({"event": "parent_done", "result": await parent.Result(timeout=RESULT_TIMEOUT)})
    elif args.command == "hold":
        async with (
            WorkflowRunner(Gated, store) as children,
            WorkflowRunner(Holder, store) as parents,
        ):
            parent = await parents.Run(run_id=run_id)
            await parent.WaitUntil(RunStatus.WAITING, timeout=RESULT_TIMEOUT)
            child = await children.Get(child_id)
            await child.WaitUntil(RunStatus.WAITING, timeout=RESULT_TIMEOUT)
            emit({"event": "waiting", "child": child_id})
    else:
        async with WorkflowRunner(Holder, store, execute=False) as runner:
            parent = await runner.Get(run_id)
            status = await parent.Stop(by="ops")
            child = await (await runner.Get(child_id)).Status()
            emit({"event": "stopped", "parent": status.value, "child": child.value})
    await store.close()


if __name__ == "__main__":
    anyio.run(main)
