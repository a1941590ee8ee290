"""A separate process for `test_children_processes.py`: each command is one process's
life, on the store given by --store (a SQLite file or a Redis URL) and --prefix.

    start   --run-id ID   start the parent, whose step starts two children in Parallel;
                          the slow child's step blocks on its first attempt (the test
                          SIGKILLs this process there).
    finish  --run-id ID   executes the workflows: takes the slow child over once its
                          lease expired, completes it, and prints the parent's result.
    hold    --run-id ID   start a parent whose two children (in Parallel) wait for an
                          approval; exits once all three wait.
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
    Parallel,
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
Quick = Workflow("quick-child").Flow({START: lambda ctx: Next(END, output="quick")})
Parent = Workflow("crash-parent").Flow(
    {
        START: lambda ctx: Parallel(
            [Child(Slow, {"items": 3}, name="slow"), Child(Quick, None, name="quick")], "Use"
        ),
        "Use": lambda ctx: Next(
            END, output={"slow": ctx.StepResults["slow"], "quick": ctx.StepResults["quick"]}
        ),
    }
)
Holder = Workflow("holding-parent").Flow(
    {
        START: lambda ctx: Parallel(
            [Child(Gated, None, name="a"), Child(Gated, None, name="b")], "Done"
        ),
        "Done": lambda ctx: END,
    }
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
    base = f"{run_id}/{START.value}#1"
    if args.command == "start":
        async with WorkflowRunner(Parent, store, lease_ttl=LEASE_TTL) as runner:
            await runner.Run(run_id=run_id)
            await anyio.sleep_forever()
    elif args.command == "finish":
        async with (
            WorkflowRunner(Slow, store, lease_ttl=LEASE_TTL) as children,
            WorkflowRunner(Quick, store, lease_ttl=LEASE_TTL),
            WorkflowRunner(Parent, store, lease_ttl=LEASE_TTL) as parents,
        ):
            child = await children.Get(f"{base}/slow")
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
            for name in ("a", "b"):
                child = await children.Get(f"{base}/{name}")
                await child.WaitUntil(RunStatus.WAITING, timeout=RESULT_TIMEOUT)
            emit({"event": "waiting"})
    else:
        async with WorkflowRunner(Holder, store, execute=False) as runner:
            parent = await runner.Get(run_id)
            status = await parent.Stop(by="ops")
            children = [(await (await runner.Get(f"{base}/{n}")).Status()).value for n in "ab"]
            emit({"event": "stopped", "parent": status.value, "children": children})
    await store.close()


if __name__ == "__main__":
    anyio.run(main)
