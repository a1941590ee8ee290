"""A separate process for `test_steward_processes.py`: one registers, one discovers.

    serve  --db FILE   register `tests.steward_app:GREETER` in the catalogue, then
                       execute its runs until a line arrives on stdin (or it closes).
    start  --db FILE   without importing the workflow's code: list the catalogue,
                       start a run of `greeter` by name and wait for its result.

Each prints JSON lines on stdout: `{"event": "registered", ...}`, `{"event":
"listed", ...}`, `{"event": "result", ...}`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import anyio
import anyio.to_thread

from holon import Steward
from holon.stores import SQLiteStore

POLL = 0.05
"""Seconds between looks at the store for work or results written by the other process."""


def say(**message: Any) -> None:
    print(json.dumps(message), flush=True)


async def serve(db: str) -> None:
    from tests.steward_app import GREETER

    async with Steward(SQLiteStore(f"sqlite:///{db}")) as steward:
        info = await steward.Register(GREETER, owner="greetings-team", tags=["demo"])
        say(event="registered", version=info.version, pid=os.getpid())
        async with await steward.Runner("greeter", poll_interval=POLL, lease_ttl=2.0):
            await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)


async def start(db: str) -> None:
    async with Steward(SQLiteStore(f"sqlite:///{db}")) as steward:
        listed = await steward.List()
        say(
            event="listed",
            workflows=[
                {
                    "name": i.name,
                    "version": i.version,
                    "owner": i.owner,
                    "tags": i.tags,
                    "input_schema": i.input_schema,
                    "steps": [s.name for s in i.graph.steps],
                }
                for i in listed
            ],
        )
        runner = await steward.Runner("greeter", poll_interval=POLL)
        async with runner:
            handle = await runner.Run({"name": "Ada"})
            result = await handle.Result(timeout=20)
        say(
            event="result",
            value=result,
            run_id=handle.run_id,
            pid=os.getpid(),
            executes=runner.execute,
            imported_the_code="tests.steward_app" in sys.modules,
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["serve", "start"])
    parser.add_argument("--db", required=True)
    args = parser.parse_args()
    anyio.run(serve if args.command == "serve" else start, args.db)


if __name__ == "__main__":
    main()
