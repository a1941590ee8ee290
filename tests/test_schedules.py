"""Schedules: one run per tick however many workers look, catching up after a stop as the
schedule says, skipping ticks while a run is still going when asked to."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

from holon import END, START, InputValidationError, ManualClock, Steward, Worker, Workflow
from holon.control.schedules import ScheduleError, ScheduleInfo, run_id_for, ticks
from holon.errors import WorkflowNotFound
from holon.stores.base import RunStatus, Store

pytestmark = pytest.mark.anyio

START_AT = dt.datetime(2026, 12, 3, 9, 0, tzinfo=dt.UTC).timestamp()


class Report(BaseModel):
    team: str


def report_workflow(gate: anyio.Event | None = None) -> Workflow:
    async def write(ctx: Any) -> str:
        if gate is not None:
            await gate.wait()
        return END

    return Workflow("report", version="1").Input(Report).Flow({START: write})


async def run_ids(store: Store) -> list[str]:
    page = await store.list_runs(workflow="report", limit=1000)
    return sorted(s.run_id for s in page.items)


async def advance_until(
    clock: ManualClock, done: Callable[[], Any], step: float = 5, limit: int = 100
) -> None:
    """Move the clock in small steps, letting the workers look between them, until
    `done()` (awaited) says so."""
    for _ in range(limit):
        if await done():
            return
        clock.advance(step)
        await anyio.wait_all_tasks_blocked()
    raise AssertionError("the workers did not get there")


async def settle(clock: ManualClock, rounds: int = 3, step: float = 5) -> None:
    """Let the workers look a few more times (to show that they start nothing more)."""
    for _ in range(rounds):
        clock.advance(step)
        await anyio.wait_all_tasks_blocked()


def test_ticks_of_a_cron_expression_are_in_the_schedules_time_zone() -> None:
    info = ScheduleInfo(
        name="s", workflow="w", cron="0 9 * * *", timezone="Europe/Paris", created_at=0
    )
    after = dt.datetime(2026, 12, 1, 0, 0, tzinfo=dt.UTC).timestamp()
    until = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC).timestamp()
    found = [dt.datetime.fromtimestamp(t, dt.UTC).isoformat() for t in ticks(info, after, until)]
    # 09:00 in Paris is 08:00 UTC in December.
    assert found == [
        "2026-12-01T08:00:00+00:00",
        "2026-12-02T08:00:00+00:00",
        "2026-12-03T08:00:00+00:00",
    ]
    assert ticks(info, after, until, limit=2) == ticks(info, after, until)[-2:]


def test_ticks_of_an_interval_count_from_the_schedules_creation() -> None:
    info = ScheduleInfo(name="s", workflow="w", every=60, created_at=1000)
    assert ticks(info, 0, 1000) == []
    assert ticks(info, 1000, 1180) == [1060, 1120, 1180]
    assert ticks(info, 1060, 1179) == [1120]
    assert run_id_for("s", 1060) == "schedule:s:19700101T001740.000000Z"


async def test_bad_schedules_are_refused_naming_what_is_wrong() -> None:
    steward = Steward("memory://")
    await steward.Register(report_workflow())
    with pytest.raises(ScheduleError, match="one of cron= or every="):
        await steward.Schedule("report", input={"team": "ops"})
    with pytest.raises(ScheduleError, match="not a cron expression"):
        await steward.Schedule("report", cron="61 * * * *", input={"team": "ops"})
    with pytest.raises(ScheduleError, match="unknown time zone 'Mars/Olympus'"):
        await steward.Schedule("report", cron="0 2 * * *", timezone="Mars/Olympus")
    with pytest.raises(ScheduleError, match="positive number of seconds"):
        await steward.Schedule("report", every=0, input={"team": "ops"})
    with pytest.raises(WorkflowNotFound, match="nightly"):
        await steward.Schedule("nightly", every=60)
    with pytest.raises(InputValidationError, match="team"):
        await steward.Schedule("report", every=60, input={"squad": "ops"})
    with pytest.raises(ScheduleError, match="no schedule 'ghost'"):
        await steward.PauseSchedule("ghost")
    assert await steward.Schedules() == []


async def test_a_tick_starts_one_run_however_many_workers_look(store: Store) -> None:
    clock = ManualClock(START_AT)
    steward = Steward(store, clock=clock)
    wf = report_workflow()
    await steward.Register(wf)
    await steward.Schedule("report", every=60, input={"team": "ops"}, name="ops-report")
    async with AsyncExitStack() as stack:
        for n in range(3):
            await stack.enter_async_context(
                Worker(wf, store, clock=clock, poll_interval=5, name=f"w{n}")
            )

        async def three_done() -> bool:
            page = await store.list_runs(status=RunStatus.COMPLETED, workflow="report")
            return len(page.items) == 3

        await advance_until(clock, three_done)
        await settle(clock)
    assert await run_ids(store) == [run_id_for("ops-report", START_AT + 60 * n) for n in (1, 2, 3)]
    record = await store.load_run(run_id_for("ops-report", START_AT + 60))
    assert record is not None and record.input == {"team": "ops"}
    assert record.body.started_by == "schedule:ops-report"


@pytest.mark.parametrize(("catch_up", "started"), [("skip", [3]), ("all", [1, 2, 3])])
async def test_missed_ticks_are_caught_up_as_the_schedule_says(
    store: Store, catch_up: Any, started: list[int]
) -> None:
    clock = ManualClock(START_AT)
    steward = Steward(store, clock=clock)
    wf = report_workflow()
    await steward.Register(wf)
    await steward.Schedule("report", every=60, input={"team": "ops"}, catch_up=catch_up)
    clock.advance(3 * 60 + 10)  # three ticks with no worker
    async with Worker(wf, store, clock=clock, poll_interval=5):

        async def started_all() -> bool:
            return len(await run_ids(store)) == len(started)

        await advance_until(clock, started_all, step=1)
        await settle(clock, step=1)
    assert await run_ids(store) == [run_id_for("report", START_AT + 60 * n) for n in started]


async def test_overlap_skip_starts_nothing_while_the_last_run_goes_on(store: Store) -> None:
    clock = ManualClock(START_AT)
    gate = anyio.Event()
    steward = Steward(store, clock=clock)
    wf = report_workflow(gate)
    await steward.Register(wf)
    await steward.Schedule("report", every=60, input={"team": "ops"}, overlap="skip")
    async with Worker(wf, store, clock=clock, poll_interval=5):

        async def first_started() -> bool:
            return len(await run_ids(store)) == 1

        await advance_until(clock, first_started)
        await settle(clock, rounds=25)  # two more ticks: the first run still goes on
        assert await run_ids(store) == [run_id_for("report", START_AT + 60)]
        (info,) = await steward.Schedules()
        assert info.skipped == [START_AT + 120, START_AT + 180]
        gate.set()

        async def second_started() -> bool:
            return len(await run_ids(store)) == 2

        await advance_until(clock, second_started)
    assert (await run_ids(store))[1] == run_id_for("report", START_AT + 240)


async def test_a_paused_schedule_starts_nothing_and_resumes_from_the_next_tick(
    store: Store,
) -> None:
    clock = ManualClock(START_AT)
    steward = Steward(store, clock=clock)
    wf = report_workflow()
    await steward.Register(wf)
    await steward.Schedule("report", every=60, input={"team": "ops"})
    paused = await steward.PauseSchedule("report")
    assert paused.paused
    async with Worker(wf, store, clock=clock, poll_interval=5):
        await settle(clock, rounds=30)  # two and a half ticks
        assert await run_ids(store) == []
        await steward.ResumeSchedule("report")

        async def one_started() -> bool:
            return len(await run_ids(store)) == 1

        await advance_until(clock, one_started)
    assert await run_ids(store) == [run_id_for("report", START_AT + 180)]
    await steward.DeleteSchedule("report")
    assert await steward.Schedules() == []
    with pytest.raises(ScheduleError, match="no schedule 'report'"):
        await steward.DeleteSchedule("report")


async def test_a_declarative_schedule_trigger_makes_a_schedule(store: Store) -> None:
    steward = Steward(store, clock=ManualClock(START_AT))
    steward.RegisterTask("write", lambda ctx: "written")
    info = await steward.Load(
        "name: nightly\n"
        "trigger: {type: schedule, cron: '0 2 * * *'}\n"
        "steps:\n  - name: Write\n    task: write\n"
    )
    (schedule,) = await steward.Schedules()
    assert (schedule.name, schedule.workflow, schedule.cron) == ("nightly", "nightly", "0 2 * * *")
    assert schedule.version == info.version
    again = await steward.Load(
        "name: nightly\n"
        "trigger: {type: schedule, cron: '0 2 * * *'}\n"
        "steps:\n  - name: Write\n    task: write\n"
    )
    assert again.version == info.version and len(await steward.Schedules()) == 1
