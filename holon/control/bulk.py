"""Bulk verbs: stop, pause, resume or retry every run that matches a filter.

```python
report = await client.Bulk("stop", workflow="orders", status="waiting", by="ops")
print(report.counts)          # {"done": 498, "skipped": 2}
```

The matching runs are listed first, a page at a time (so runs the verb moves to another
status are neither skipped nor met twice), then the verb is applied to each in turn and
each run's outcome reported: `done`, `skipped` (the verb does not apply to its status
now: already stopped, not paused, ...) or `refused` (the verb raised; its message is
kept). Running the same bulk verb again is safe: what was done is skipped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from holon.control.handle import HandleSource, RunHandle
from holon.control.operator import RETRYABLE
from holon.errors import HolonError
from holon.stores.base import RunStatus, RunSummary

__all__ = ["BULK_VERBS", "BulkOutcome", "BulkReport", "RunFilter", "apply_bulk", "matching_runs"]

BulkVerb = Literal["stop", "pause", "resume", "retry"]
BULK_VERBS: tuple[BulkVerb, ...] = ("stop", "pause", "resume", "retry")


@dataclass(frozen=True)
class RunFilter:
    """Which runs a bulk verb applies to; every field given must match."""

    workflow: str | None = None
    status: RunStatus | None = None
    version: str | None = None
    started_after: float | None = None
    """Runs created at or after this time (seconds since the epoch)."""
    started_before: float | None = None
    """Runs created before this time."""

    def matches(self, run: RunSummary) -> bool:
        return (
            (self.version is None or run.version == self.version)
            and (self.started_after is None or run.created_at >= self.started_after)
            and (self.started_before is None or run.created_at < self.started_before)
        )


@dataclass(frozen=True)
class BulkOutcome:
    """What a bulk verb did to one run."""

    run_id: str
    outcome: Literal["done", "skipped", "refused"]
    status: str
    """The run's status afterwards (before, for a run skipped or refused)."""
    detail: str | None = None


@dataclass
class BulkReport:
    """Every run a bulk verb met, with what it did to each."""

    verb: str
    outcomes: list[BulkOutcome] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(o.outcome for o in self.outcomes))


async def matching_runs(
    source: HandleSource, runs: RunFilter, *, page_size: int = 500
) -> list[RunSummary]:
    """Every run in the store that `runs` matches, newest first."""
    found: list[RunSummary] = []
    cursor: str | None = None
    while True:
        page = await source.store.list_runs(
            status=runs.status, workflow=runs.workflow, limit=page_size, cursor=cursor
        )
        found += [run for run in page.items if runs.matches(run)]
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor


async def apply_bulk(
    source: HandleSource,
    verb: str,
    runs: RunFilter,
    *,
    by: str | None = None,
    page_size: int = 500,
) -> BulkReport:
    """Apply `verb` (`stop`, `pause`, `resume` or `retry`) to every run `runs`
    matches; see the module docstring."""
    if verb not in BULK_VERBS:
        raise ValueError(f"a bulk verb is one of {list(BULK_VERBS)}, got {verb!r}")
    report = BulkReport(verb)
    for run in await matching_runs(source, runs, page_size=page_size):
        report.outcomes.append(await _apply(RunHandle(source, run.run_id), verb, by))
    return report


async def _apply(handle: RunHandle, verb: str, by: str | None) -> BulkOutcome:
    run_id = handle.run_id
    try:
        status = await handle.Status()
        why_not = _skip(verb, status)
        if why_not is not None:
            return BulkOutcome(run_id, "skipped", status.value, why_not)
        if verb == "stop":
            after = await handle.Stop(by=by)
        elif verb == "pause":
            after = await handle.Pause(by=by)
        elif verb == "resume":
            after = await handle.Resume(by=by)
        else:
            after = await handle.Retry(by=by)
    except HolonError as exc:
        current = await handle.Status() if await _exists(handle) else "missing"
        return BulkOutcome(run_id, "refused", str(current), str(exc))
    return BulkOutcome(run_id, "done", after.value)


def _skip(verb: str, status: RunStatus) -> str | None:
    """Why `verb` does not apply to a run in `status` (None: it does)."""
    if verb == "retry":
        return None if status in RETRYABLE else f"{status.value}: nothing to retry"
    if verb == "resume":
        return None if status == RunStatus.PAUSED else f"{status.value}: not paused"
    if status.terminal:
        return f"already ended {status.value}"
    if verb == "pause" and status == RunStatus.PAUSED:
        return "already paused"
    return None


async def _exists(handle: RunHandle) -> bool:
    try:
        await handle.Status()
    except HolonError:
        return False
    return True
