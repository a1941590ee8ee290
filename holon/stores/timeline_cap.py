"""The timeline cap every store applies: how many events a run's timeline keeps.

A long agent run writes three events a step; unbounded, its timeline is almost all of
what the run stores (a 10,000-step run: 2.4 MB, nearly all timeline). Every store
therefore keeps a run's latest `timeline_cap` events and trims the oldest. The run keeps
counting (`event_seq`), so sequence numbers stay unique and `timeline(after_seq)` goes
on from where a reader left off; events trimmed away are simply no longer returned.
"""

from __future__ import annotations

import logging
from typing import Any

from holon.errors import StoreError

__all__ = ["DEFAULT_TIMELINE_CAP", "NEAR_CAP", "check_timeline_cap", "warn_near_cap"]

DEFAULT_TIMELINE_CAP = 10_000
"""Events kept per run unless a store is told otherwise (`timeline_cap=`; 0 keeps all):
about 3,300 steps of history, a few MB at most, whatever the run's length."""

NEAR_CAP = 0.9
"""The share of the cap at which a run's first warning is logged."""

logger = logging.getLogger("holon.stores.timeline")


def check_timeline_cap(value: Any, where: str) -> int:
    """`value` as a cap (a whole number >= 0, text from a URL included), or a
    `StoreError` naming `where` (the store's URL)."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise StoreError(
            f"{where}: timeline_cap must be a whole number of events >= 0 (0 keeps every "
            f"event), got {value!r}"
        )
    return value


def warn_near_cap(run_id: str, before: int, after: int, cap: int) -> None:
    """Log once per run, when its event count goes from `before` to `after` past 90 % of
    `cap`: the count only grows, so exactly one write crosses the mark."""
    if cap <= 0:
        return
    mark = int(cap * NEAR_CAP)
    if before < mark <= after:
        logger.warning(
            "run %r has %d timeline events, near the store's timeline_cap of %d: from "
            "%d on, its oldest events are trimmed (sequence numbers go on)",
            run_id,
            after,
            cap,
            cap,
        )
