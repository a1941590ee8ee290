"""A seeded fault schedule (in the manner of FoundationDB's and TigerBeetle's simulators,
on real processes): a seed picks which worker dies and where, which is frozen and for
how long, when Redis is killed and restarted, and which reply is cut. The same seed
gives the same schedule, so a failing run is replayed by its seed.

Where a fault strikes is measured in progress, the number of step effects the sink has
applied, not in time: the schedule says "after the 23rd effect, SIGKILL worker 1".

The workflow the workers run (`chaos`) and its sink live here too: every step writes
its effect to a SQLite sink keyed by `ctx.IdempotencyKey`, which applies a key's first
write and records every attempt.
"""

from __future__ import annotations

import random
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio
from pydantic import BaseModel

from holon import END, START, Workflow

__all__ = ["FAULT_KINDS", "Fault", "Sink", "chaos", "schedule"]

RUNS = 12
STEPS = 8
WORKERS = 3
STEP_WORK = 0.05
"""Seconds of work in each step (a stand-in for a call to another system), so that
faults strike runs in the middle of their steps."""

FaultKind = Literal["kill_worker", "freeze_worker", "restart_redis", "cut_reply"]
FAULT_KINDS: tuple[FaultKind, ...] = ("kill_worker", "freeze_worker", "restart_redis", "cut_reply")


@dataclass(frozen=True)
class Fault:
    """One fault: `kind`, struck once the sink has applied `at` effects."""

    at: int
    kind: FaultKind
    worker: int = 0
    """The worker killed or frozen (an index among the live workers)."""
    until: int = 0
    """A frozen worker is thawed (SIGCONT) once the sink has applied this many."""

    def __str__(self) -> str:
        if self.kind == "kill_worker":
            return f"@{self.at} SIGKILL worker {self.worker}"
        if self.kind == "freeze_worker":
            return f"@{self.at} SIGSTOP worker {self.worker} until @{self.until}"
        if self.kind == "restart_redis":
            return f"@{self.at} SIGKILL Redis and restart it"
        return f"@{self.at} cut the next reply"


def schedule(seed: int, *, runs: int = RUNS, steps: int = STEPS) -> list[Fault]:
    """The faults seed `seed` picks, in the order they strike: four to six, between a
    tenth and four fifths of the way, every kind at least once."""
    rng = random.Random(seed)
    total = runs * steps
    count = rng.randint(4, 6)
    kinds: list[FaultKind] = [*FAULT_KINDS, *rng.choices(FAULT_KINDS, k=count - 4)]
    rng.shuffle(kinds)
    points = sorted(rng.sample(range(total // 10, total * 4 // 5), count))
    faults = []
    for at, kind in zip(points, kinds, strict=True):
        if kind == "freeze_worker":
            until = min(total - 1, at + rng.randint(total // 20, total // 6))
            faults.append(Fault(at, kind, rng.randrange(WORKERS), until))
        elif kind == "kill_worker":
            faults.append(Fault(at, kind, rng.randrange(WORKERS)))
        else:
            faults.append(Fault(at, kind))
    return faults


# -- the sink ---------------------------------------------------------------------------


class Sink:
    """An external system that honours idempotency keys, in a SQLite file shared by the
    worker processes: a key's first write is applied, every attempt is recorded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def create(self) -> None:
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE IF NOT EXISTS applied (key TEXT PRIMARY KEY, value TEXT)")
            conn.execute("CREATE TABLE IF NOT EXISTS attempts (key TEXT, pid INTEGER)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def write(self, key: str, value: str, pid: int) -> None:
        with self._connect() as conn:
            conn.execute("INSERT INTO attempts (key, pid) VALUES (?, ?)", (key, pid))
            conn.execute("INSERT OR IGNORE INTO applied (key, value) VALUES (?, ?)", (key, value))

    def applied(self) -> dict[str, str]:
        with self._connect() as conn:
            return dict(conn.execute("SELECT key, value FROM applied").fetchall())

    def progress(self) -> int:
        with self._connect() as conn:
            (count,) = conn.execute("SELECT COUNT(*) FROM applied").fetchone()
            return int(count)

    def attempts(self) -> list[tuple[str, int]]:
        with self._connect() as conn:
            return [(k, int(p)) for k, p in conn.execute("SELECT key, pid FROM attempts")]


# -- the workflow -------------------------------------------------------------------------


class Count(BaseModel):
    n: int = 0


def chaos(sink: Sink, pid: int) -> Workflow:
    """`STEPS` steps in a row; each applies its effect at the sink under its idempotency
    key, works a little, and counts itself in the state."""

    def step(index: int) -> Any:
        after = f"S{index + 1}" if index + 1 < STEPS else END

        async def run(ctx: Any) -> str:
            sink.write(ctx.IdempotencyKey, f"{ctx.RunId}/S{index}", pid)
            await anyio.sleep(STEP_WORK)  # sleep-ok: the step's own work, not a wait
            ctx.SetState(n=ctx.State.n + 1)
            return after

        return run

    flow: dict[Any, Any] = {START: lambda ctx: "S0"}
    for index in range(STEPS):
        flow[f"S{index}"] = step(index)
    return Workflow("chaos", version="v1").State(Count).Flow(flow)
