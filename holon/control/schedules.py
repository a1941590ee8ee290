"""Schedules: runs of a workflow started on a timetable, once per tick.

```python
await steward.Schedule("nightly-report", cron="0 2 * * *", timezone="Europe/Paris",
                       input={"team": "ops"}, catch_up="skip", overlap="skip")
```

A schedule is a document in the store (`Store.put_schedule`), so every worker sees the
same ones. Workers that execute its workflow start its runs: at each tick, the run's id
is made from the schedule's name and the tick (`schedule:<name>:<tick>`), and creating a
run is idempotent on its id, so a tick starts one run however many workers see it.

After a time with no worker (a stop, a deploy), the ticks missed are caught up as the
schedule says: `skip` starts one run for the latest tick only, `all` one for each (at
most `MAX_CATCH_UP`). With `overlap="skip"`, a tick that comes while the schedule's last
run is still going starts nothing (`allow`, the default, starts it all the same).

Timetables are cron expressions (five fields, in the schedule's time zone) read by
croniter (`pip install holon[schedules]`), or a fixed interval in seconds (`every=`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field

from holon.errors import HolonError

__all__ = [
    "MAX_CATCH_UP",
    "ScheduleError",
    "ScheduleInfo",
    "check_timetable",
    "run_id_for",
    "ticks",
]

MAX_CATCH_UP = 1000
"""The most missed ticks one look starts runs for (`catch_up="all"`)."""


class ScheduleError(HolonError, ValueError):
    """A schedule that cannot be kept: a bad cron expression, time zone or interval, or
    an unknown schedule or workflow."""


class ScheduleInfo(BaseModel):
    """A schedule as the store keeps it."""

    model_config = ConfigDict(extra="ignore")

    name: str
    workflow: str
    version: str | None = None
    """The version its runs start on; None: the newest the starting worker has."""
    cron: str | None = None
    """A cron expression (minute hour day-of-month month day-of-week)."""
    every: float | None = None
    """Seconds between ticks, counted from `created_at` (instead of `cron`)."""
    timezone: str = "UTC"
    input: Any = None
    catch_up: Literal["skip", "all"] = "skip"
    overlap: Literal["allow", "skip"] = "allow"
    paused: bool = False
    created_at: float
    """When the schedule was made (or resumed): no tick before it starts a run."""
    last_tick: float | None = None
    """The latest tick handled (a run started, or skipped by the overlap policy)."""
    last_run: str | None = None
    """The id of the last run it started."""
    skipped: list[float] = Field(default_factory=list)
    """The latest ticks skipped by the overlap policy (at most ten)."""


def check_timetable(cron: str | None, every: float | None, timezone: str) -> None:
    """Raise `ScheduleError` naming what is wrong with a timetable."""
    if (cron is None) == (every is None):
        raise ScheduleError("a schedule takes one of cron= or every=")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            f"unknown time zone {timezone!r} (an IANA name like 'Europe/Paris')"
        ) from None
    if every is not None:
        if isinstance(every, bool) or not isinstance(every, int | float) or every <= 0:
            raise ScheduleError(f"every= takes a positive number of seconds, got {every!r}")
        return
    croniter = _croniter()
    if not isinstance(cron, str) or not croniter.is_valid(cron) or len(cron.split()) != 5:
        raise ScheduleError(
            f"{cron!r} is not a cron expression of five fields (minute hour day month weekday)"
        )


def ticks(info: ScheduleInfo, after: float, until: float, limit: int = MAX_CATCH_UP) -> list[float]:
    """The schedule's ticks in (`after`, `until`], oldest first, at most `limit` (the
    latest ones when there are more)."""
    found: list[float] = []
    if info.every is not None:
        step = info.every
        # Ticks fall at created_at + k * step, k >= 1; the first after `after`:
        k = max(1, int((after - info.created_at) // step) + 1)
        first = info.created_at + k * step
        if first <= after:  # a rounding of the division
            first += step
        count = int((until - first) // step) + 1 if first <= until else 0
        start = max(0, count - limit)
        return [first + step * i for i in range(start, count)]
    croniter = _croniter()
    zone = ZoneInfo(info.timezone)
    cursor = croniter(info.cron, dt.datetime.fromtimestamp(after, zone))
    while True:
        tick = cursor.get_next(float)
        if tick > until:
            return found[-limit:]
        found.append(tick)
        if len(found) > 2 * limit:
            found = found[-limit:]


def run_id_for(name: str, tick: float) -> str:
    """The id of the run a schedule starts at `tick`: the same for every worker."""
    moment = dt.datetime.fromtimestamp(tick, dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"schedule:{name}:{moment}"


def _croniter() -> Any:
    try:
        from croniter import croniter
    except ImportError:
        raise ScheduleError(
            "cron schedules need croniter: pip install 'holon[schedules]'"
        ) from None
    return croniter
