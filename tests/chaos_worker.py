"""A worker process for the seeded fault suite (`test_fault_schedule.py`).

    python -m tests.chaos_worker --url redis://... --prefix P --sink FILE --owner NAME

Executes runs of the `chaos` workflow from the store until it is killed, and says
`{"event": "ready"}` on its stdout once it serves.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import anyio

from holon import WorkflowRunner
from holon.stores.redis import RedisStore
from tests.fault_schedule import Sink, chaos

LEASE_TTL = 0.5
"""Short, so the runs of a killed or frozen worker are taken over within a second."""


async def main(args: argparse.Namespace) -> int:
    store = RedisStore(args.url, key_prefix=args.prefix)
    workflow = chaos(Sink(Path(args.sink)), os.getpid())
    async with WorkflowRunner(workflow, store, lease_ttl=LEASE_TTL, owner=args.owner):
        print(json.dumps({"event": "ready", "pid": os.getpid()}), flush=True)
        await anyio.sleep_forever()  # sleep-ok: serves until the test kills it
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos_worker")
    parser.add_argument("--url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--sink", required=True)
    parser.add_argument("--owner", required=True)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(anyio.run(main, parse(sys.argv[1:])))
