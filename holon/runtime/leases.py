"""Keeping the leases of the runs an engine executes.

A run's lease expires unless renewed; its executor renews it while the run executes.
A renewal also brings operators' stop requests made from other processes, and tells an
executor whose lease was taken over (it was presumed dead) to stop writing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio

from holon.errors import StaleLease

if TYPE_CHECKING:
    from holon.runtime.engine import Engine
    from holon.runtime.execution import Execution

__all__ = ["LeaseKeeper"]

logger = logging.getLogger("holon.engine")


class LeaseKeeper:
    """Renews the leases of an engine's executing runs."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def renew_forever(self) -> None:
        """Renew the lease of every run executing here, every third of the lease time.

        One loop for the whole engine rather than one per run: the renewals of a round
        are sent together (a Redis store puts them in one pipeline), and a run costs no
        task of its own while it executes. A renewal also brings operators' stop
        requests from other processes, and tells a run whose lease was taken over to
        stop writing.
        """
        interval = self.engine.lease_ttl / 3
        while True:
            await self.engine.clock.sleep(interval)
            executions = list(self.engine.executions.values())
            if not executions:
                continue
            failures: list[str] = []
            async with anyio.create_task_group() as group:
                for execution in executions:
                    group.start_soon(self._renew, execution, failures)
            if failures:
                # A store outage: try again next round. If it lasts past the lease, the
                # runs' next commits are refused and their executors stop then.
                logger.warning(
                    "lease renewal failed for %d of %d runs, e.g. %s",
                    len(failures),
                    len(executions),
                    failures[0],
                )

    async def _renew(self, execution: Execution, failures: list[str]) -> None:
        try:
            control = await self.engine.store.renew_lease(
                execution.run_id, execution.token, self.engine.lease_ttl, self.engine.clock.now()
            )
        except StaleLease:
            if self.engine.executions.get(execution.run_id) is not execution:
                return  # it ended meanwhile and released its lease
            # Another executor owns the run now: cancel the step, write nothing more.
            execution.lease_lost = True
            if execution.step_scope is not None:
                execution.step_scope.cancel()
            return
        except Exception as exc:
            failures.append(f"run {execution.run_id}: {exc}")
            return
        execution.control = control
        if control is not None and control.kind == "stop":
            execution.request_stop()
