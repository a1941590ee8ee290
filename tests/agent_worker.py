"""A separate process for the durable agent fault tests (`test_agents_pydantic_ai.py`).

    python -m tests.agent_worker start  --store URL --prefix P --run-id ID --log F --sink F \
        --hang-in WHERE
    python -m tests.agent_worker resume --store URL --prefix P --run-id ID --log F --sink F

`start` starts the run and parks where `--hang-in` says (announcing `inside` on stdout)
until the test kills it with SIGKILL; `resume` picks the run up once its lease expires
and prints `{"event": "result", "value": ...}`.
"""

from __future__ import annotations

import argparse
import json

import anyio

from holon import WorkflowRunner
from holon.stores import open_store
from tests.agent_support import workflow

LEASE_TTL = 0.5
"""Short, so the successor claims the killed process's run within a fraction of a second."""


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["start", "resume"])
    parser.add_argument("--store", required=True)
    parser.add_argument("--prefix", default="")
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--sink", required=True)
    parser.add_argument("--hang-in", default=None)
    args = parser.parse_args()
    store = open_store(args.store, key_prefix=args.prefix)
    wf = workflow(args.log, args.sink, hang_in=args.hang_in)
    async with WorkflowRunner(wf, store, lease_ttl=LEASE_TTL) as runner:
        if args.command == "start":
            await runner.Run(run_id=args.run_id)
            await anyio.sleep_forever()  # sleep-ok: parked in the step until killed
        handle = await runner.Get(args.run_id)
        value = await handle.Result(timeout=20)
        print(json.dumps({"event": "result", "value": value}), flush=True)
    await store.close()


if __name__ == "__main__":
    anyio.run(main)
