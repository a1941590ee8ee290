"""One worker draining a queue of runs on Redis: the scenario of `bench_redis.py`'s
"1,000 runs, engine", alone, for profiling and for counting instructions.

    .venv/bin/python benchmarks/drain_redis.py [--url redis://127.0.0.1:6379/15]
        [--runs 1000] [--steps 20] [--rounds 3]

A runner that does not execute queues `--runs` runs of the looping workflow of
`bench_redis.py` (`--steps` + 1 steps each); then one worker claims and executes them
all, and the script prints the steps per second and the worker's CPU use. Keys go under
a throw-away prefix, deleted after each round.

Wall-clock rates on a shared machine vary from run to run; instructions do not. The
instructions one step costs are counted with valgrind, from two drains that differ only
in the number of runs (the difference leaves out start-up and imports):

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python benchmarks/drain_redis.py --runs 100 --rounds 1
    (the same with --runs 300)

    instructions per step = (total at 300 - total at 100) / (200 * (steps + 1))

The count includes queueing the runs (about a tenth of it); `bench_redis.py` times only
the worker.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid

from bench_redis import delete_prefix, drain_queue

from holon.stores.redis import RedisStore


async def drain(url: str, runs: int, steps: int) -> None:
    prefix = f"holon-drain:{uuid.uuid4().hex[:8]}:"
    store = RedisStore(url, key_prefix=prefix)
    await store.open()
    try:
        elapsed, cpu, in_flight = await drain_queue(store, runs, steps)
        total = runs * (steps + 1)
        print(
            f"{total / elapsed:,.0f} steps/s, {elapsed / total * 1e6:.1f} µs a step, "
            f"worker CPU {cpu / elapsed:.0%} busy; {in_flight:,.0f} steps/s while all "
            "the runs were in flight",
            flush=True,
        )
    finally:
        await store.close()
        await delete_prefix(url, prefix)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for _ in range(args.rounds):
        await drain(args.url, args.runs, args.steps)


if __name__ == "__main__":
    asyncio.run(main())
