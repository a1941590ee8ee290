"""How long a store keeps a finished run, per final status.

```python
import datetime as dt

from holon import Retention
from holon.stores import SQLiteStore

# Completed runs go after a week, failed ones after 30 days; the others stay.
store = SQLiteStore(
    "sqlite:///holon.db",
    retention=Retention(completed=dt.timedelta(days=7), failed=dt.timedelta(days=30)),
)
```

A run whose status has a retention is deleted (record, results, timeline, wait index
entries) once that long has passed since it finished (its last change). Every store
deletes what is due when a worker claims work, at most once a minute
(`PURGE_INTERVAL`), and `store.purge_expired(now)` deletes it at once. The default keeps
everything. The same settings go in a store's URL as `<status>_ttl=<seconds>`
(`sqlite:///holon.db?completed_ttl=604800&failed_ttl=2592000`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any

from holon.stores.base import TERMINAL_STATUSES, RunStatus

__all__ = ["PURGE_INTERVAL", "RETENTION_OPTIONS", "Retention"]

PURGE_INTERVAL = 60.0
"""Seconds between two purges a store makes on its own while workers claim work: a
purge reads the finished runs of each retained status, too much for every claim."""

RETENTION_OPTIONS = frozenset(f"{status.value}_ttl" for status in TERMINAL_STATUSES)
"""The URL options that set a retention: `completed_ttl`, `failed_ttl`, ..."""


@dataclass(frozen=True)
class Retention:
    """Seconds (or a `timedelta`) a finished run is kept after it finished, per final
    status; None keeps it for ever (the default for each).

    The field names are the final statuses (`RunStatus`), so every final status has one.
    """

    completed: float | dt.timedelta | None = None
    failed: float | dt.timedelta | None = None
    stopped: float | dt.timedelta | None = None
    rejected: float | dt.timedelta | None = None
    expired: float | dt.timedelta | None = None

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, dt.timedelta):
                value = value.total_seconds()
                object.__setattr__(self, field.name, value)
            if value is None:
                continue
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ValueError(
                    f"Retention.{field.name} must be seconds >= 0, a timedelta or None "
                    f"(keep for ever), got {value!r}"
                )
            object.__setattr__(self, field.name, float(value))

    def keep_for(self, status: RunStatus | str) -> float | None:
        """Seconds a run that finished with `status` is kept; None: for ever (and for a
        status that is not final: such a run is never deleted)."""
        status = RunStatus(status)
        if status not in TERMINAL_STATUSES:
            return None
        value: float | None = getattr(self, status.value)
        return value

    @cached_property
    def kept(self) -> dict[RunStatus, float]:
        """The statuses whose runs are deleted in time, with their seconds (do not
        change it: it is worked out once)."""
        return {
            status: seconds
            for status in sorted(TERMINAL_STATUSES)
            if (seconds := self.keep_for(status)) is not None
        }

    @property
    def keeps_everything(self) -> bool:
        return not self.kept

    @classmethod
    def from_options(cls, options: Mapping[str, Any], where: str) -> Retention:
        """The retention a store URL's `<status>_ttl=<seconds>` options give; a value
        that is not seconds is refused with a `ValueError` naming `where` and the option."""
        values: dict[str, float] = {}
        for name in sorted(RETENTION_OPTIONS & set(options)):
            text = options[name]
            try:
                seconds = float(text)
            except (TypeError, ValueError):
                seconds = -1.0
            if seconds < 0 or seconds != seconds:  # NaN is not a duration either
                raise ValueError(f"{where}: {name} must be seconds >= 0, got {text!r}")
            values[name.removesuffix("_ttl")] = seconds
        return cls(**values)
