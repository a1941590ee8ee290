"""One run of N steps on the memory store, for counting instructions per step.

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python benchmarks/steps_memory.py 3000

The run is the core benchmark's (`bench_core.py`): one `Tick` step that sets its state
and goes back to itself N times. Instructions per step are those of a 3,000-step run
less those of a 1,000-step run, over 2,000: what starting Python and holon costs cancels
out, and a shared machine's load does not blur the count as it blurs the time.
"""

from __future__ import annotations

import sys

import anyio
from bench_core import Counter, Loop, tick

from holon import START, Workflow, WorkflowRunner
from holon.stores import MemoryStore

Ticks = Workflow("ticks").Input(Loop).State(Counter).Flow({START: lambda ctx: "Tick", "Tick": tick})


async def main(steps: int) -> None:
    async with WorkflowRunner(Ticks, MemoryStore()) as runner:
        handle = await runner.Run({"steps": steps})
        await handle.Result()


if __name__ == "__main__":
    anyio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
