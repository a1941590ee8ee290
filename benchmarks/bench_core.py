"""Per-step overhead of the core on the memory and SQLite stores.

    .venv/bin/python benchmarks/bench_core.py

A single run of one looping step (`Tick` goes back to itself until it has run N times,
updating the state each time) is timed from `Run()` to `Result()`, so the fixed costs
of a run are spread over many steps. Every step is a real checkpoint: the step's
result, its state patch, the next cursor and three timeline events in one transaction.

The yardstick is a bare SQLite `BEGIN IMMEDIATE; INSERT; COMMIT` on a file in the same
directory, same journal mode (WAL) and same `synchronous` setting, measured in the same
process, interleaved with the holon runs so both see the same disk and the same load.

Targets (the exit status is 1 when one is missed):

* SQLite: a step costs at most 2x one bare INSERT + COMMIT at the same `synchronous`;
* memory store: at least 20,000 steps/s.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import anyio
from pydantic import BaseModel

from holon import END, START, Context, Workflow, WorkflowRunner
from holon.stores import MemoryStore, SQLiteStore
from holon.stores.base import Store

SQLITE_RATIO_TARGET = 2.0
MEMORY_STEPS_PER_S_TARGET = 20_000
SETTINGS = ("FULL", "NORMAL")


class Loop(BaseModel):
    steps: int


class Counter(BaseModel):
    ticks: int = 0


async def tick(ctx: Context[Loop, Counter]) -> Literal["Tick", END]:  # type: ignore[valid-type]
    ticks = ctx.State.ticks + 1
    ctx.SetState(ticks=ticks)
    return "Tick" if ticks < ctx.Input.steps else END


Ticker = (
    Workflow("Ticker", "One step that runs again and again")
    .Input(Loop)
    .State(Counter)
    .Flow({START: lambda ctx: "Tick", "Tick": tick})
)


# -- measurements ------------------------------------------------------------------------


def bare_commit_us(path: Path, synchronous: str, commits: int) -> float:
    """Microseconds per `BEGIN IMMEDIATE; INSERT; COMMIT` of a small row."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("CREATE TABLE IF NOT EXISTS bare (id INTEGER PRIMARY KEY, payload TEXT)")
        payload = '{"ticks": 1}'
        for _ in range(20):  # warm the page cache and the WAL
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO bare (payload) VALUES (?)", (payload,))
            conn.execute("COMMIT")
        started = time.perf_counter()
        for _ in range(commits):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO bare (payload) VALUES (?)", (payload,))
            conn.execute("COMMIT")
        return (time.perf_counter() - started) / commits * 1e6
    finally:
        conn.close()


async def holon_step_us(store: Store, steps: int) -> float:
    """Microseconds per step of one run of `steps` steps, from `Run()` to `Result()`."""
    async with WorkflowRunner(Ticker, store=store) as runner:
        started = time.perf_counter()
        handle = await runner.Run({"steps": steps})
        result = await handle.Result()
    elapsed = time.perf_counter() - started
    await store.close()
    if result != {"ticks": steps}:
        raise SystemExit(f"the benchmark run ended with {result!r}, not {{'ticks': {steps}}}")
    return elapsed / steps * 1e6


@dataclass
class Row:
    store: str
    synchronous: str
    steps: int
    us_per_step: float
    bare_us: float | None = None

    @property
    def steps_per_s(self) -> float:
        return 1e6 / self.us_per_step

    @property
    def ratio(self) -> float | None:
        return None if self.bare_us is None else self.us_per_step / self.bare_us

    @property
    def target(self) -> str:
        if self.ratio is not None:
            return f"<= {SQLITE_RATIO_TARGET:g}x bare"
        return f">= {MEMORY_STEPS_PER_S_TARGET:,} steps/s"

    @property
    def met(self) -> bool:
        if self.ratio is not None:
            return self.ratio <= SQLITE_RATIO_TARGET
        return self.steps_per_s >= MEMORY_STEPS_PER_S_TARGET


async def measure(args: argparse.Namespace, workdir: Path) -> list[Row]:
    rows: list[Row] = []
    for synchronous in SETTINGS:
        bare: list[float] = []
        steps: list[float] = []
        for repeat in range(args.repeat):
            # Interleaved, so a change in the disk's mood hits both columns alike.
            bare_path = workdir / f"bare-{synchronous}-{repeat}.db"
            bare.append(bare_commit_us(bare_path, synchronous, args.bare_commits))
            url = f"sqlite:///{workdir / f'holon-{synchronous}-{repeat}.db'}"
            store = SQLiteStore(f"{url}?synchronous={synchronous}")
            steps.append(await holon_step_us(store, args.sqlite_steps))
        rows.append(
            Row(
                store="sqlite",
                synchronous=synchronous,
                steps=args.sqlite_steps,
                us_per_step=statistics.median(steps),
                bare_us=statistics.median(bare),
            )
        )
    memory = [await holon_step_us(MemoryStore(), args.memory_steps) for _ in range(args.repeat)]
    rows.append(
        Row(
            store="memory",
            synchronous="-",
            steps=args.memory_steps,
            us_per_step=statistics.median(memory),
        )
    )
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        "| store | synchronous | steps/run | µs/step | steps/s | bare INSERT+COMMIT µs "
        "| ratio | target | met |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for row in rows:
        bare = f"{row.bare_us:.1f}" if row.bare_us is not None else "-"
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        lines.append(
            f"| {row.store} | {row.synchronous} | {row.steps:,} | {row.us_per_step:.1f} | "
            f"{row.steps_per_s:,.0f} | {bare} | {ratio} | {row.target} | "
            f"{'yes' if row.met else 'NO'} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sqlite-steps", type=int, default=2_000, help="steps per SQLite run")
    parser.add_argument("--memory-steps", type=int, default=20_000, help="steps per memory run")
    parser.add_argument("--bare-commits", type=int, default=2_000, help="bare commits per sample")
    parser.add_argument("--repeat", type=int, default=5, help="samples per figure (median)")
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(__file__).resolve().parent / ".out",
        help="where the SQLite files go (a scratch directory is made and removed in it); "
        "pick a real disk, not a RAM file system, for meaningful fsync figures",
    )
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="core-", dir=args.dir))
    try:
        rows = anyio.run(measure, args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"holon core benchmark: Python {platform.python_version()}, SQLite "
        f"{sqlite3.sqlite_version}, {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs; files in {args.dir}; median of {args.repeat}"
    )
    print(table(rows))
    missed = [row for row in rows if not row.met]
    for row in missed:
        print(f"target missed: {row.store} {row.synchronous}: {row.target}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
