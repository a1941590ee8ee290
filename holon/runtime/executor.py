"""Executing runs in this process: claiming the runs that need an executor, at most
`concurrency` at once, keeping their leases alive, and handing them back on shutdown.

One `Executor` serves every workflow its engine knows, with one claim loop and one
heartbeat loop (`holon.runtime.leases`) whatever the number of runs. The claim loop looks
for work every `poll_interval` seconds, and again at once after a full batch; `kick`
tries a run the moment this process learns it became ready (it was started, approved or
resumed here).

Shutting down gracefully (`drain`): the executor stops claiming, each run finishes the
step it is in, and at its next step boundary is handed back to the store `queued`, with
its lease let go, so another executor continues it at once as a run like any other (no
`recovered`, no new attempt). Steps still running when the deadline passes are
cancelled: their runs are left as a crash would leave them, their leases let go at once,
and the executor that takes them over records `recovered` and runs the step again.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from holon.runtime.engine import Engine
from holon.stores.base import LeaseGrant

__all__ = ["CLAIM_BATCH", "Executor"]

logger = logging.getLogger("holon.executor")

CLAIM_BATCH = 100
"""The most runs one look for work claims; a full batch is followed by another look."""


class Executor:
    """Claims and executes runs with an `Engine`.

    Args:
        engine: executes each run; its workflows are the ones claimed.
        poll_interval: seconds between looks for runs that need an executor.
        concurrency: the most runs executing here at once (None: no limit but the
            claim batch); a run beyond it waits in the store for a free slot here or
            for another executor.
    """

    def __init__(
        self, engine: Engine, *, poll_interval: float, concurrency: int | None = None
    ) -> None:
        if concurrency is not None and concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.engine = engine
        engine.on_ready = self.kick
        self.poll_interval = poll_interval
        self.concurrency = concurrency
        self._group: TaskGroup | None = None
        self._claiming = False
        self._busy = 0
        """Runs being acquired or executed here: what `concurrency` limits."""
        self._freed = anyio.Event()
        self.started_at = 0.0

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Executor:
        group = anyio.create_task_group()
        await group.__aenter__()
        self._group = group
        self._claiming = True
        self.started_at = self.engine.clock.now()
        await self._announce()
        group.start_soon(self._claim_forever)
        group.start_soon(self.engine.leases.renew_forever)
        group.start_soon(self._announce_forever)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        group, self._group = self._group, None
        self._claiming = False
        if group is not None:
            group.cancel_scope.cancel()
            await group.__aexit__(None, None, None)
            with anyio.CancelScope(shield=True):
                try:
                    await self.engine.store.remove_worker(self.engine.owner)
                except Exception:
                    logger.warning("could not take %s off the list of executors", self.engine.owner)

    @property
    def running(self) -> bool:
        """True while the executor claims and executes runs."""
        return self._group is not None

    @property
    def claiming(self) -> bool:
        """True while the executor looks for work (not once it drains)."""
        return self._claiming

    async def drain(self, deadline: float) -> int:
        """Stop claiming, let each run finish its step in flight and hand it back, for at
        most `deadline` seconds; then let go of what is left (`let_go`). Returns how
        many runs were still executing at the deadline."""
        self.stop_claiming()
        with anyio.move_on_after(deadline):
            await self._until_idle()
        left = len(self.engine.executions)
        if left:
            logger.warning(
                "%d runs still executing after the %.1f s drain deadline; letting them go",
                left,
                deadline,
            )
            await self.let_go()
        return left

    def stop_claiming(self) -> None:
        """Claim no more runs, and hand each run executing here back to the store at its
        next step boundary (the start of a drain, without waiting for it)."""
        self._claiming = False
        self.engine.drain()

    async def let_go(self) -> None:
        """Stop claiming and cancel every step under way here at once; their runs' leases
        are let go, so that another executor takes them over now (and runs the
        interrupted steps again, with the same idempotency keys)."""
        self._claiming = False
        for execution in list(self.engine.executions.values()):
            execution.lose_lease()
        await self._until_idle()

    async def _until_idle(self) -> None:
        while self.engine.executions:
            freed = self._freed
            if self.engine.executions:
                await freed.wait()

    # -- the list of live executors -----------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """What the store's list of live executors says of this one: which versions of
        which workflows it executes (`claims`: the versions whose runs it may take)."""
        definitions = self.engine.definitions
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": self.started_at,
            "concurrency": self.concurrency,
            "running": len(self.engine.executions),
            "claiming": self._claiming,
            "serves": {n: [w.version for w in definitions.versions(n)] for n in definitions.names},
            "claims": {n: definitions.claimable(n) for n in definitions.names},
            "agents": self._agents(),
        }

    def _agents(self) -> list[str]:
        """The agents runs executed here can open: the workflows' own and those of the
        engine's agent directory (a Steward's registry)."""
        definitions = self.engine.definitions
        names = {
            agent
            for name in definitions.names
            for workflow in definitions.versions(name)
            for agent in workflow.agent_map
        }
        if self.engine.agents is not None:
            names.update(self.engine.agents.agent_names())
        return sorted(names)

    async def _announce(self) -> None:
        engine = self.engine
        expires_at = engine.clock.now() + engine.lease_ttl
        await engine.store.put_worker(engine.owner, self.describe(), expires_at)

    async def _announce_forever(self) -> None:
        """Stay on the store's list of live executors (as leases are kept: said again
        every third of the lease time, gone a lease time after the last)."""
        while True:
            await self.engine.clock.sleep(self.engine.lease_ttl / 3)
            try:
                await self._announce()
            except Exception as exc:
                logger.warning("could not say %s is alive: %s", self.engine.owner, exc)

    # -- finding work -------------------------------------------------------------------

    def free_slots(self) -> int:
        """How many more runs may start here now."""
        if self.concurrency is None:
            return CLAIM_BATCH
        return max(0, self.concurrency - self._busy)

    def kick(self, run_id: str, workflow: str | None = None) -> None:
        """Try to execute `run_id`, a run of `workflow`, here now (it may be leased
        elsewhere, its workflow at its concurrency limit, or this executor full or
        draining: then the claim loop or another executor takes it). Without
        `workflow` its limit is unknown, so a run is left to the claim loop when any
        workflow here has one."""
        if self._group is None or not self._claiming or self.free_slots() == 0:
            return
        definitions = self.engine.definitions
        if workflow is None and definitions.limits():
            return
        limit = definitions.limit(workflow) if workflow is not None else None
        self._busy += 1
        self._group.start_soon(self._acquire_and_execute, run_id, limit)

    async def _acquire_and_execute(self, run_id: str, limit: int | None) -> None:
        try:
            engine = self.engine

            async def acquire() -> list[LeaseGrant]:
                now = engine.clock.now()
                grant = await engine.store.acquire_lease(
                    run_id, engine.owner, engine.lease_ttl, now, limit=limit
                )
                return [grant] if grant is not None else []

            for grant in await self._lease(acquire):
                await self._execute(grant)
        finally:
            self._done()

    async def _claim_forever(self) -> None:
        while self._claiming:
            claimed = 0
            try:
                claimed = await self.claim_now()
            except Exception:
                logger.exception("looking for runs failed; trying again")
            if claimed < CLAIM_BATCH or self.free_slots() == 0:
                await self._pause_claiming()
            else:
                # A full batch: more runs may be waiting for an executor, so look again
                # at once rather than one batch per poll interval.
                await anyio.lowlevel.checkpoint()

    async def _pause_claiming(self) -> None:
        """Until the next look: the poll interval, or, when this executor is full, until
        a slot frees up."""
        if self.free_slots() == 0:
            await self._freed.wait()
        else:
            await self.engine.clock.sleep(self.poll_interval)

    async def claim_now(self) -> int:
        """Claim and start runs that need an executor, as many as there are free slots
        (at most `CLAIM_BATCH`); returns how many were claimed."""
        group = self._group
        take = min(CLAIM_BATCH, self.free_slots())
        if group is None or not self._claiming or take == 0:
            return 0
        engine = self.engine
        definitions = engine.definitions
        workflows = definitions.names
        versions = {name: definitions.claimable(name) for name in workflows}
        limits = definitions.limits()
        self._busy += take  # held while the claim is under way, so kicks keep the limit
        try:
            grants = await self._lease(
                lambda: engine.store.claim(
                    engine.owner,
                    workflows,
                    take,
                    engine.lease_ttl,
                    engine.clock.now(),
                    versions=versions,
                    limits=limits or None,
                )
            )
        finally:
            self._busy -= take
        for grant in grants:
            self._busy += 1
            group.start_soon(self._execute_claimed, grant)
        return len(grants)

    async def _execute_claimed(self, grant: LeaseGrant) -> None:
        try:
            await self._execute(grant)
        finally:
            self._done()

    def _done(self) -> None:
        self._busy -= 1
        freed, self._freed = self._freed, anyio.Event()
        freed.set()

    async def _lease(self, acquire: Callable[[], Awaitable[list[LeaseGrant]]]) -> list[LeaseGrant]:
        """The leases `acquire` takes, seen through even when this executor starts to
        close meanwhile: a lease request on its way is applied by the store whether or
        not anyone waits for the answer, so it is waited for, and what it took is let
        go at once if the executor is closing (rather than left held by an executor that
        is gone until the leases run out)."""
        store = self.engine.store
        with anyio.CancelScope(shield=True):
            grants = await acquire()
        try:
            await anyio.lowlevel.checkpoint_if_cancelled()
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                for grant in grants:
                    await store.release_lease(grant.run_id, grant.token)
            raise
        return grants

    async def _execute(self, grant: LeaseGrant) -> None:
        try:
            await self.engine.execute(grant)
        except Exception:
            # A store outage must not take the executor down; the lease expires and the
            # run is recovered later.
            logger.exception("run %s: execution aborted", grant.run_id)
