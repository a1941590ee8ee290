"""Runs at scale: a 10,000-step run stores a bounded timeline, and a 100 MB value is
refused with an error naming what and where, never truncated."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from holon import (
    END,
    START,
    Context,
    Limits,
    Next,
    RunFailed,
    ValueTooLarge,
    Workflow,
    WorkflowRunner,
)
from holon.limits import MAX_LIMIT
from holon.stores import SQLiteStore
from holon.stores.timeline_cap import DEFAULT_TIMELINE_CAP

pytestmark = pytest.mark.anyio

STEPS = 10_000

HUNDRED_MB = 100 * 1024 * 1024


class Counter(BaseModel):
    count: int = 0


def counting(steps: int) -> Workflow:
    def tick(ctx: Context[Any, Counter]) -> str:
        ctx.SetState(count=ctx.State.count + 1)
        return "Tick" if ctx.State.count < steps else END

    return Workflow("long").State(Counter).Flow({START: lambda ctx: "Tick", "Tick": tick})


def stored_events(path: Path, run_id: str) -> int:
    """Timeline events the SQLite file holds for `run_id`, counted in the file itself."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT first_seq, last_seq FROM holon_timeline WHERE run_id = ?", (run_id,)
        ).fetchall()
    return sum(last - first + 1 for first, last in rows)


@pytest.mark.slow
async def test_a_ten_thousand_step_run_keeps_its_timeline_within_the_cap(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "long.db"
    # synchronous=NORMAL: the bound is what is tested, not the disk's flush rate.
    store = SQLiteStore(f"sqlite:///{path}?synchronous=NORMAL")
    with caplog.at_level(logging.WARNING, logger="holon.stores.timeline"):
        async with WorkflowRunner(counting(STEPS), store) as runner:
            handle = await runner.Run(run_id="long")
            await handle.Result(timeout=55)
            record = await handle.Record()
            assert record.body.state == {"count": STEPS}
            # Every step wrote events, far more than the cap; the file keeps the newest.
            assert record.event_seq > 2 * STEPS > DEFAULT_TIMELINE_CAP
            kept = await store.timeline("long")
    assert DEFAULT_TIMELINE_CAP - 10 <= stored_events(path, "long") <= DEFAULT_TIMELINE_CAP
    assert len(kept) == stored_events(path, "long")
    assert [e.seq for e in kept] == list(
        range(record.event_seq - len(kept) + 1, record.event_seq + 1)
    )
    assert kept[-1].kind == "completed"
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "timeline_cap of 10000" in warnings[0], warnings


def echo(output: bool) -> Workflow:
    def produce(ctx: Context[Any, Any]) -> Any:
        return Next(END, output={"doc": "x" * HUNDRED_MB}) if output else END

    return (
        Workflow("echo")
        .Flow({START: lambda ctx: "Produce", "Produce": produce})
        # The highest limits there are: 100 MB is over the hard maximum all the same.
        .Limits(input=MAX_LIMIT, step_output=MAX_LIMIT)
    )


async def test_a_hundred_megabyte_input_is_refused_naming_its_size(tmp_path: Path) -> None:
    async with WorkflowRunner(echo(output=False), f"sqlite:///{tmp_path / 'x.db'}") as runner:
        with pytest.raises(ValueTooLarge) as refused:
            await runner.Run({"doc": "x" * HUNDRED_MB}, run_id="big")
        assert refused.value.field == "input" and refused.value.limit == MAX_LIMIT
        assert refused.value.size > HUNDRED_MB
        assert f"{refused.value.size:,} bytes" in str(refused.value)
        assert "nothing was stored" in str(refused.value)
        assert await runner.store.load_run("big") is None


async def test_a_hundred_megabyte_step_output_fails_the_run_naming_the_step(
    tmp_path: Path,
) -> None:
    async with WorkflowRunner(echo(output=True), f"sqlite:///{tmp_path / 'x.db'}") as runner:
        handle = await runner.Run(run_id="big")
        with pytest.raises(RunFailed, match="ValueTooLarge") as failed:
            await handle.Result(timeout=30)
        assert failed.value.step == "Produce"
        record = await handle.Record()
        assert record.body.error is not None
        message = record.body.error.message
        assert "'Produce'" in message and "Limits.step_output" in message
        assert f"{MAX_LIMIT:,} bytes" in message and "104,857,6" in message
        # Refused whole: no part of the output is kept anywhere in the run.
        assert record.results == {} and record.body.output is None


def test_no_limit_may_be_raised_past_the_hard_maximum() -> None:
    with pytest.raises(ValueError, match="Limits.step_output is 104,857,600 bytes"):
        Limits(step_output=HUNDRED_MB)
