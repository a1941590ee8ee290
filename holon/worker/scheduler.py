"""Starting the runs of schedules: what a worker does for the schedules of the workflows
it executes (`holon.control.schedules` says what a schedule is).

Every worker serving a schedule's workflow looks at it now and then; they need not agree
on who starts a tick's run: its id comes from the schedule and the tick, creating a run
is idempotent on its id, and so a tick starts one run whoever sees it first.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack

from holon.clock import Clock
from holon.control.runner import WorkflowRunner
from holon.control.schedules import ScheduleInfo, run_id_for, ticks
from holon.definition.builder import Workflow
from holon.errors import HolonError
from holon.runtime.definitions import Definitions
from holon.stores.base import Store

__all__ = ["Scheduler"]

logger = logging.getLogger("holon.worker")


class Scheduler:
    """Starts the runs of the schedules of the workflows `definitions` holds."""

    def __init__(self, store: Store, clock: Clock, definitions: Definitions) -> None:
        self.store = store
        self.clock = clock
        self.definitions = definitions
        self._starters: dict[tuple[str, str], WorkflowRunner] = {}
        self._exits = AsyncExitStack()

    async def close(self) -> None:
        await self._exits.aclose()
        self._starters.clear()

    async def fire_due(self) -> int:
        """Start the runs of the ticks that came since each schedule was last looked at
        (as its catch-up and overlap policies say); returns how many were started."""
        started = 0
        for document in await self.store.schedules():
            info = ScheduleInfo.model_validate(document)
            if info.paused or info.workflow not in self.definitions:
                continue
            try:
                started += await self._fire(info)
            except HolonError as exc:
                logger.error("schedule %s: %s", info.name, exc)
        return started

    async def _fire(self, info: ScheduleInfo) -> int:
        now = self.clock.now()
        after = info.last_tick if info.last_tick is not None else info.created_at
        due = ticks(info, after, now)
        if not due:
            return 0
        if info.catch_up == "skip":
            due = due[-1:]
        workflow = (
            self.definitions.get(info.workflow, info.version)
            if info.version is not None
            else self.definitions.newest(info.workflow)
        )
        if workflow is None:
            return 0  # the version it starts is not served here
        starter = await self._starter(workflow)
        started = 0
        last_run = info.last_run
        skipped = list(info.skipped)
        for tick in due:
            if info.overlap == "skip" and last_run is not None and await self._going(last_run):
                skipped = [*skipped, tick][-10:]
                logger.info("schedule %s: tick skipped, its last run is still going", info.name)
                continue
            run_id = run_id_for(info.name, tick)
            await starter.Run(info.input, run_id=run_id, started_by=f"schedule:{info.name}")
            last_run = run_id
            started += 1
        changes = {"last_tick": due[-1], "last_run": last_run, "skipped": skipped}
        await self.store.patch_schedule(info.name, changes)
        return started

    async def _going(self, run_id: str) -> bool:
        progress = await self.store.run_progress(run_id)
        return progress is not None and not progress.status.terminal

    async def _starter(self, workflow: Workflow) -> WorkflowRunner:
        key = (workflow.name, workflow.version)
        starter = self._starters.get(key)
        if starter is None:
            runner = WorkflowRunner(workflow, self.store, execute=False, clock=self.clock)
            starter = self._starters[key] = await self._exits.enter_async_context(runner)
        return starter
