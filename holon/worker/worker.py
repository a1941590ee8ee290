"""`Worker`: a process's executor for the runs of many workflows, from one store.

```python
async with Worker(steward, concurrency=50) as worker:   # or Worker([wf_a, wf_b], store=...)
    await worker.run()        # until stop() or cancelled; leaving hands runs back
```

One worker serves every workflow (and every version of each) whose code it is given,
with one claim loop, one heartbeat loop and one store connection, and at most
`concurrency` runs at once. It puts the versions it serves in the store's catalogue and
claims only runs it may execute: a run is never executed on a version older than the
one it last ran on (`holon.runtime.definitions`). Workers, runners and operators on the
same store share the runs: start as many workers as you like, on as many machines.

Stopping (`stop()`, leaving `async with`, or SIGTERM in `holon worker`) is graceful: the
worker stops claiming, each run finishes the step it is in and goes back to the store
`queued` for another worker, and what still runs at `drain_deadline` is cancelled (its
runs are taken over by another worker, which runs the interrupted step again with the
same idempotency key).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterable
from types import TracebackType

import anyio
from anyio.abc import TaskGroup

from holon._naming import snake_case_aliases
from holon.clock import Clock, SystemClock
from holon.control.catalogue import ensure_entry, version_order
from holon.control.steward import Steward
from holon.definition.builder import Workflow
from holon.errors import HolonError
from holon.runtime.definitions import Definitions
from holon.runtime.engine import Engine
from holon.runtime.executor import Executor
from holon.stores import open_store
from holon.stores.base import Store
from holon.worker.scheduler import Scheduler
from holon.worker.unserved import pause_unserved, resume_served

__all__ = ["Worker"]

logger = logging.getLogger("holon.worker")


@snake_case_aliases
class Worker:
    """Executes runs of the given workflows from one store.

    Args:
        workflows: a `Steward` (its workflows registered in this process), a `Workflow`,
            or several; versions of one name may be given side by side.
        store: a store object or URL; by default the steward's store, else the
            workflows' `.Persistence(store=...)`, else `HOLON_STORE`, else the SQLite
            default.
        concurrency: the most runs executing here at once.
        name: this worker's name in leases and timelines; by default host:pid:random.
        lease_ttl: seconds a run's lease lasts without renewal: how long a run of a
            worker that died waits before another takes it over.
        poll_interval: seconds between looks for runs that need an executor.
        drain_deadline: seconds a stopping worker lets running steps finish.
        poison_after: executors that may die in a row in one step of a run (a step that
            crashes its process) before the run ends `failed` as poison (`PoisonRun`).
        version_grace: seconds a run may wait for a worker that executes its version
            before it is paused (`needs version <v>`); a worker that can resumes it
            (`holon.worker.unserved`).
        clock: where time comes from (tests pass a `ManualClock`).
    """

    def __init__(
        self,
        workflows: Steward | Workflow | Iterable[Workflow],
        store: Store | str | None = None,
        *,
        concurrency: int = 100,
        name: str | None = None,
        lease_ttl: float = 10.0,
        poll_interval: float | None = None,
        drain_deadline: float = 30.0,
        poison_after: int = 5,
        version_grace: float = 300.0,
        clock: Clock | None = None,
    ) -> None:
        served = _served(workflows)
        if lease_ttl <= 0:
            raise ValueError(f"lease_ttl must be positive, got {lease_ttl}")
        if drain_deadline < 0:
            raise ValueError(f"drain_deadline must be 0 or more seconds, got {drain_deadline}")
        if version_grace <= 0:
            raise ValueError(f"version_grace must be positive, got {version_grace}")
        self.version_grace = version_grace
        self.definitions = Definitions(served)
        self.store, self._owns_store = _pick_store(workflows, served, store)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.clock: Clock = clock or SystemClock()
        self.lease_ttl = lease_ttl
        self.drain_deadline = drain_deadline
        engine = Engine(
            self.store,
            self.definitions,
            owner=self.name,
            lease_ttl=lease_ttl,
            clock=self.clock,
            poison_after=poison_after,
            agents=workflows if isinstance(workflows, Steward) else None,
        )
        self.executor = Executor(
            engine,
            poll_interval=poll_interval if poll_interval is not None else min(1.0, lease_ttl / 4),
            concurrency=concurrency,
        )
        self._stop = anyio.Event()
        self._stopped = anyio.Event()
        self._drain_scope: anyio.CancelScope | None = None
        self._stop_now = False
        self._draining = False
        self._drained = anyio.Event()
        self._group: TaskGroup | None = None
        self.scheduler = Scheduler(self.store, self.clock, self.definitions)

    def __repr__(self) -> str:
        return f"Worker({self.name!r}, {self.definitions!r})"

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Worker:
        await self.store.open()
        try:
            await self._catalogue()
            await self.executor.__aenter__()
            await resume_served(self.store, self.clock, self.definitions, by=self.name)
        except BaseException:
            if self.executor.running:
                await self.executor.__aexit__(None, None, None)
            if self._owns_store:
                await self.store.close()
            raise
        group = anyio.create_task_group()
        await group.__aenter__()
        self._group = group
        group.start_soon(self._look_after_versions)
        group.start_soon(self._start_scheduled_runs)
        logger.info(
            "worker %s serving %s on %s",
            self.name,
            ", ".join(
                f"{w.name} {w.version}"
                for n in self.definitions.names
                for w in self.definitions.versions(n)
            ),
            self.store.url,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        group, self._group = self._group, None
        if group is not None:
            group.cancel_scope.cancel()
            await group.__aexit__(None, None, None)
        with anyio.CancelScope(shield=True):
            await self.scheduler.close()
        try:
            if self.executor.running:
                cancelled = exc_type is not None and issubclass(
                    exc_type, anyio.get_cancelled_exc_class()
                )
                if cancelled:
                    self._stop_now = True  # cancelled from outside: no drain
                with anyio.CancelScope(shield=True):
                    await self._drain()
                await self.executor.__aexit__(None, None, None)
        finally:
            if self._owns_store:
                await self.store.close()
            self._stopped.set()

    async def _catalogue(self) -> None:
        """Put every version served here in the catalogue and learn the order of each
        workflow's versions from it (runs never go back to an older one)."""
        catalogue = []
        for name in self.definitions.names:
            for workflow in self.definitions.versions(name):
                catalogue = await ensure_entry(self.store, workflow, self.clock.now())
        for name in self.definitions.names:
            self.definitions.set_order(name, version_order(catalogue, name))

    async def _look_after_versions(self) -> None:
        """Now and then: pause the runs no live worker may execute (after the grace
        period) and resume those paused for a version this worker executes."""
        interval = min(60.0, max(self.executor.poll_interval, self.version_grace / 4))
        while True:
            await self.clock.sleep(interval)
            if not self.ready:
                continue
            try:
                await pause_unserved(self.store, self.clock, self.version_grace, by=self.name)
                await resume_served(self.store, self.clock, self.definitions, by=self.name)
            except Exception:
                logger.exception("looking for runs no worker executes failed; trying again")

    async def _start_scheduled_runs(self) -> None:
        """Start the runs of the schedules of the workflows served here, tick by tick
        (`holon.worker.scheduler`)."""
        while True:
            if self.ready:
                try:
                    await self.scheduler.fire_due()
                except Exception:
                    logger.exception("starting scheduled runs failed; trying again")
            await self.clock.sleep(self.executor.poll_interval)

    async def _drain(self) -> None:
        """Hand the runs back (or let them go, when stopping at once); once, whoever
        asks first (`run()` or leaving `async with`), the other waits for it."""
        if self._draining:
            await self._drained.wait()
            return
        self._draining = True
        left = len(self.executor.engine.executions)
        if self._stop_now:
            await self.executor.let_go()
        else:
            with anyio.CancelScope() as self._drain_scope:
                left = await self.executor.drain(self.drain_deadline)
            if self._drain_scope.cancel_called:  # stop(now=True) while draining
                left = len(self.executor.engine.executions)
                await self.executor.let_go()
        self._drained.set()
        logger.info(
            "worker %s stopped%s",
            self.name,
            f"; {left} runs cancelled at the drain deadline" if left else "",
        )

    async def run(self) -> None:
        """Execute runs until `stop()` is called (or the task is cancelled), then drain.
        Needs `async with Worker(...)`."""
        if not self.executor.running:
            raise HolonError("use `async with Worker(...) as worker:` before worker.run()")
        await self._stop.wait()
        await self._drain()

    def stop(self, *, now: bool = False) -> None:
        """Ask the worker to stop: it stops claiming, and its runs go back to the store
        as their steps finish (see the module docstring). `run()` returns once done.

        With `now`, it does not wait for steps to finish: they are cancelled, and their
        runs taken over at once by another worker (which runs the step again)."""
        if now:
            self._stop_now = True
            if self._drain_scope is not None:
                self._drain_scope.cancel()
        if self.executor.running:
            self.executor.stop_claiming()
        self._stop.set()

    async def stopped(self) -> None:
        """Wait until the worker has stopped and let go of its runs."""
        await self._stopped.wait()

    # -- state --------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True while the worker is connected and claiming runs (not while it drains)."""
        return self.executor.running and self.executor.claiming

    @property
    def running_runs(self) -> int:
        """How many runs execute here now."""
        return len(self.executor.engine.executions)


def _served(workflows: Steward | Workflow | Iterable[Workflow]) -> list[Workflow]:
    if isinstance(workflows, Steward):
        served = workflows.workflows
        if not served:
            raise HolonError(
                "the steward given to Worker has no workflow registered in this process; "
                "Register() the workflows this worker executes first"
            )
        return served
    listed = [workflows] if isinstance(workflows, Workflow) else list(workflows)
    for item in listed:
        if not isinstance(item, Workflow):
            raise TypeError(
                f"Worker takes a Steward, a Workflow or Workflows, got {item!r} among them"
            )
        item.check_runnable()
    if not listed:
        raise HolonError("Worker was given no workflow to execute")
    return listed


def _pick_store(
    given: Steward | Workflow | Iterable[Workflow],
    workflows: list[Workflow],
    store: Store | str | None,
) -> tuple[Store, bool]:
    """The store and whether the worker opened it (and so closes it)."""
    if isinstance(store, str):
        return open_store(store), True
    if store is not None:
        return store, False
    if isinstance(given, Steward):
        return given.store, False
    chosen = {w.persistence_config.store for w in workflows}
    prefixes = {w.persistence_config.key_prefix for w in workflows}
    if len(chosen) == 1 and len(prefixes) == 1:
        (only,), (prefix,) = chosen, prefixes
        if only is None or isinstance(only, str):
            return open_store(only, key_prefix=prefix), True
        return only, False
    raise HolonError(
        "the workflows given to Worker name different stores in .Persistence(); "
        "pass store= to say which one this worker executes runs from"
    )
