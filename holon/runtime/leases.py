"""Keeping the leases of the runs an engine executes.

A run's lease expires unless renewed; its executor renews it while the run executes.
A renewal also brings operators' stop requests made from other processes, and tells an
executor whose lease was taken over (it was presumed dead) to stop writing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import anyio

from holon.clock import Clock
from holon.errors import StaleLease
from holon.runtime.execution import Execution, wants
from holon.stores.base import Store

__all__ = ["LeaseKeeper"]

logger = logging.getLogger("holon.engine")


class LeaseKeeper:
    """Renews the leases of the runs executing in this process.

    Args:
        executions: the runs executing here, by id (the engine's live mapping).
    """

    def __init__(
        self, store: Store, clock: Clock, lease_ttl: float, executions: Mapping[str, Execution]
    ) -> None:
        self.store = store
        self.clock = clock
        self.lease_ttl = lease_ttl
        self.executions = executions

    async def renew_forever(self) -> None:
        """Renew the lease of every run executing here, every third of the lease time.

        One loop for the whole engine rather than one per run: the renewals of a round
        are sent together (a Redis store puts them in one pipeline), and a run costs no
        task of its own while it executes. A renewal also brings operators' stop
        requests from other processes, and tells a run whose lease was taken over to
        stop writing.
        """
        interval = self.lease_ttl / 3
        while True:
            await self.clock.sleep(interval)
            executions = list(self.executions.values())
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
            control = await self.store.renew_lease(
                execution.run_id, execution.token, self.lease_ttl, self.clock.now()
            )
        except StaleLease as exc:
            if self.executions.get(execution.run_id) is not execution:
                return  # it ended meanwhile and released its lease
            execution.lose_lease(("lease_lost", str(exc)))
            return
        except Exception as exc:
            failures.append(f"run {execution.run_id}: {exc}")
            return
        execution.control = control
        if wants(control, "stop"):
            execution.request_stop()
