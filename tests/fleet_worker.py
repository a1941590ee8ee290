"""A worker process for the fleet tests: `python -m tests.fleet_worker APP STORE NAME TTL
[POISON_AFTER]` runs `holon.worker.serve` on APP (`module:attr`), as `holon worker` does,
with a short lease so that take-overs happen within a test."""

from __future__ import annotations

import logging
import os
import sys

import anyio

from holon import Worker
from holon.worker.serve import load_app, serve


def main() -> None:
    app, store, name, ttl = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    poison_after = int(sys.argv[5]) if len(sys.argv) > 5 else 5
    os.environ["HOLON_TEST_WORKER"] = name
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    worker = Worker(
        load_app(app),
        store,
        name=name,
        concurrency=20,
        lease_ttl=ttl,
        poll_interval=0.05,
        drain_deadline=10,
        version_grace=ttl,
        poison_after=poison_after,
    )
    anyio.run(serve, worker)


if __name__ == "__main__":
    main()
