"""`Client`: start, find and steer runs with the store alone.

```python
async with Client("sqlite:///.holon/holon.db") as client:
    handle = await client.Start("orders", {"order_id": "A-1"})   # by name, from the catalogue
    print(await handle.Status())
    for run in await client.List(status="waiting"):
        print(run.run_id, run.workflow)
```

A client needs no `Workflow` object and executes nothing: a run it starts is queued in
the store for a worker (`holon worker`, `holon.Worker`) or any runner with
`execute=True` to execute. Workflows are found by name in the catalogue the `Steward`
keeps in the store. Every handle it returns reaches the run through the client, so it
works from any process; once the client is closed its handles refuse to act, saying so.

`SyncClient` (`holon.control.sync_client`) is the same with blocking methods, for scripts
and notebooks.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import Any

from holon._naming import snake_case_aliases
from holon.clock import Clock, SystemClock
from holon.control.bulk import BulkReport, RunFilter, apply_bulk
from holon.control.catalogue import WorkflowInfo
from holon.control.handle import RunHandle
from holon.control.operator import Operator
from holon.control.steward import Steward
from holon.control.waiting import pending_approvals, send_event
from holon.definition.builder import Workflow
from holon.errors import HolonError, RunNotFound
from holon.runtime.definitions import Definitions
from holon.runtime.waits import WaitInfo
from holon.stores import open_store
from holon.stores.base import Page, RunStatus, RunSummary, Store

__all__ = ["Client"]


@snake_case_aliases
class Client:
    """Starts runs by workflow name, and finds and steers any run, from one store.

    Args:
        store: a store object or URL (None: `HOLON_STORE`, else the SQLite default), or
            a `Steward`: its store, and the code of the workflows registered with it,
            which then validates inputs and state patches in full (without code they are
            checked against the catalogued schema, and in full by the executing worker).
        workflows: the code of workflows, registered in the catalogue when the client
            opens: inputs and state patches are then validated in full, and run surgery
            (`Rerun`, `Replay`) can run their steps here.
        key_prefix: with a URL, the key prefix (or SQLite namespace) of the deployment.
        poll_interval: seconds between re-reads while a handle waits on a run that
            another process executes.
        lease_ttl: the lease TTL of the executors (how long `Stop()` waits by default).
        clock: where time comes from.
    """

    def __init__(
        self,
        store: Store | str | Steward | None = None,
        *,
        workflows: Iterable[Workflow] = (),
        key_prefix: str = "",
        poll_interval: float = 0.2,
        lease_ttl: float = 10.0,
        clock: Clock | None = None,
    ) -> None:
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval}")
        self.clock: Clock = clock or SystemClock()
        self.poll_interval = poll_interval
        self.lease_ttl = lease_ttl
        if isinstance(store, Steward):
            self.steward = store
            self._store, self._owns_store = store.store, False
        else:
            if store is None or isinstance(store, str):
                self._store, self._owns_store = open_store(store, key_prefix=key_prefix), True
            else:
                self._store, self._owns_store = store, False
            self.steward = Steward(self._store, clock=self.clock)
        self._code = [w for w in workflows if w not in self.steward.workflows]
        for workflow in self._code:
            if not isinstance(workflow, Workflow):
                raise TypeError(f"Client(workflows=...) takes Workflows, got {workflow!r}")
        known = [*self.steward.workflows, *self._code]
        self._operator = Operator(self._store, self.clock, Definitions(known))
        self._closed = False
        self._opened = False

    def __repr__(self) -> str:
        return f"Client({self._store.url!r}{', closed' if self._closed else ''})"

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Client:
        await self.Open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.Close()

    async def Open(self) -> None:
        """Connect to the store (`async with` does this; calling it again is harmless)."""
        self.check_open()
        if not self._opened:
            await self._store.open()
            for workflow in self._code:  # their code is here: start and steer in full
                await self.steward.Register(workflow)
            self._opened = True

    async def Close(self) -> None:
        """Close the store if the client opened it from a URL. The client and its
        handles refuse to act afterwards."""
        if self._closed:
            return
        self._closed = True
        if self._owns_store:
            await self._store.close()

    @property
    def closed(self) -> bool:
        return self._closed

    async def _ready(self) -> Store:
        """The open store (opened on first use when the caller did not `async with`)."""
        await self.Open()
        return self._store

    def check_open(self) -> None:
        """Raise `HolonError` if the client is closed."""
        if self._closed:
            raise HolonError(
                f"this Client of {self._store.url} is closed: it and the handles it "
                "returned no longer reach the store; open a new Client and Get() the run"
            )

    # -- what a handle needs (`HandleSource`) --------------------------------------------

    @property
    def store(self) -> Store:
        self.check_open()
        return self._store

    @property
    def operator(self) -> Operator:
        self.check_open()
        return self._operator

    def kick(self, run_id: str) -> None:
        """Nothing to do: a client executes no run (a worker claims it)."""

    def cancel_here(self, run_id: str) -> None:
        """Nothing to do: no step runs in a client."""

    # -- starting runs -------------------------------------------------------------------

    async def Start(
        self,
        workflow: str,
        input: Any = None,
        *,
        version: str | None = None,
        run_id: str | None = None,
        started_by: str | None = None,
    ) -> RunHandle:
        """Start a run of the catalogued workflow `workflow` (default: its latest
        version) and return its handle; a worker executes it.

        Raises `WorkflowNotFound` for a name or version not in the catalogue and
        `InputValidationError` for an input that does not fit; neither creates anything.
        A given `run_id` makes the start idempotent.
        """
        await self._ready()
        if not isinstance(workflow, str) or not workflow:
            raise TypeError(f"Start() takes a workflow name, got {workflow!r}")
        runner = await self.steward.Runner(
            workflow,
            version,
            execute=False,
            clock=self.clock,
            poll_interval=self.poll_interval,
            lease_ttl=self.lease_ttl,
        )
        async with runner:
            started = await runner.Run(input, run_id, started_by=started_by)
        return RunHandle(self, started.run_id)

    async def Run(
        self,
        workflow: str,
        input: Any = None,
        *,
        version: str | None = None,
        run_id: str | None = None,
        started_by: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Start a run (as `Start`) and wait for its result (as `RunHandle.Result`)."""
        handle = await self.Start(
            workflow, input, version=version, run_id=run_id, started_by=started_by
        )
        return await handle.Result(timeout=timeout)

    # -- finding runs --------------------------------------------------------------------

    async def Get(self, run_id: str) -> RunHandle:
        """The handle of any run in the store; `RunNotFound` if there is none."""
        store = await self._ready()
        if await store.run_progress(run_id) is None:
            raise RunNotFound(f"no run {run_id!r} in {store.url}", run_id=run_id)
        return RunHandle(self, run_id)

    async def List(
        self,
        status: RunStatus | str | None = None,
        workflow: str | None = None,
        *,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[RunSummary]:
        """Runs in the store, newest first; pass `page.next_cursor` for the next page."""
        store = await self._ready()
        return await store.list_runs(
            status=RunStatus(status) if status is not None else None,
            workflow=workflow,
            limit=limit,
            cursor=cursor,
        )

    async def Workflows(self, tag: str | None = None) -> list[WorkflowInfo]:
        """The latest version of every catalogued workflow, with run counts by status."""
        await self._ready()
        return await self.steward.List(tag)

    async def Describe(self, workflow: str, version: str | None = None) -> dict[str, Any]:
        """What the catalogue knows of a workflow version (see `Steward.Describe`)."""
        await self._ready()
        return await self.steward.Describe(workflow, version)

    async def Bulk(
        self,
        verb: str,
        *,
        workflow: str | None = None,
        status: RunStatus | str | None = None,
        version: str | None = None,
        started_after: float | None = None,
        started_before: float | None = None,
        by: str | None = None,
    ) -> BulkReport:
        """Apply `stop`, `pause`, `resume` or `retry` to every run that matches the
        filter, reporting each run's outcome (`holon.control.bulk`); safe to repeat."""
        await self._ready()
        runs = RunFilter(
            workflow=workflow,
            status=RunStatus(status) if status is not None else None,
            version=version,
            started_after=started_after,
            started_before=started_before,
        )
        return await apply_bulk(self, verb, runs, by=by)

    # -- waits ---------------------------------------------------------------------------

    async def Pending(
        self,
        approver: str,
        roles: Iterable[str] = (),
        *,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[WaitInfo]:
        """The approvals `approver` (holding `roles`) can act on now, in run-id order."""
        store = await self._ready()
        return await pending_approvals(store, approver, roles, limit=limit, cursor=cursor)

    async def Send(
        self,
        event: str,
        payload: Any = None,
        event_id: str | None = None,
        *,
        keep_for: float | None = None,
    ) -> list[str]:
        """Deliver `event` to every run waiting on it; returns the ids of those reached.
        The same `event_id` again is recorded once per run. With `keep_for` (seconds)
        the event is also kept that long for runs that start waiting on it later."""
        await self._ready()
        return await send_event(self._operator, event, payload, event_id, keep_for=keep_for)

    # The snake_case twins, as real members a type checker sees (`snake_case_aliases`
    # checks that every PascalCase verb has one).
    open = Open
    close = Close
    start = Start
    run = Run
    get = Get
    list = List
    workflows = Workflows
    describe = Describe
    bulk = Bulk
    pending = Pending
    send = Send
