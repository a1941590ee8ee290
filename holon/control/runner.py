"""`WorkflowRunner`: starts runs, executes them in this process, and recovers orphans.

```python
async with WorkflowRunner(BuildAndDeploy) as runner:
    handle = await runner.Run({"repo": "acme/app"})
    result = await handle.Result()
```

The runner owns a task group in which runs execute. Leaving it cancels in-flight steps;
their runs stay resumable from the last checkpoint, and any runner with the same store
picks them up: on start and then every `poll_interval` seconds, a runner claims runs
of its workflow whose lease expired (the process that held them died) or that are
queued with nobody executing them.

Without `async with`, the first call starts the runner in the background of the
running asyncio loop; it stops when the loop closes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

import anyio
import anyio.lowlevel
from pydantic import SecretBytes, SecretStr

from holon._json import digest
from holon._naming import snake_case_aliases
from holon.clock import Clock, SystemClock
from holon.control.catalogue import ensure_entry, version_order
from holon.control.handle import RunHandle
from holon.control.operator import Operator
from holon.control.waiting import pending_approvals, send_event
from holon.definition.budget import Budget
from holon.definition.builder import Workflow
from holon.errors import HolonError, RunConflict, RunNotFound
from holon.runtime.agents import AgentDirectory
from holon.runtime.definitions import Definitions
from holon.runtime.engine import Engine
from holon.runtime.executor import Executor
from holon.runtime.starting import check_input_size, new_run, validate_input
from holon.runtime.waits import WaitInfo
from holon.sealing import has_secrets, open_secrets
from holon.stores import MemoryStore, open_store
from holon.stores.base import (
    Page,
    RunRecord,
    RunStatus,
    RunSummary,
    Store,
)

__all__ = ["WorkflowRunner"]

logger = logging.getLogger("holon.runner")


@snake_case_aliases
class WorkflowRunner:
    """Starts, steers and executes runs of one workflow.

    Args:
        workflow: the workflow to run.
        store: a store object or URL; by default the workflow's `.Persistence(store=...)`,
            else `HOLON_STORE`, else `sqlite:///.holon/holon.db`.
        lease_ttl: seconds a run's lease lasts without renewal. A crashed process's
            runs are picked up this long after its last heartbeat.
        poll_interval: seconds between looks for orphaned or queued runs, and between
            re-reads while waiting on runs changed by other processes.
        execute: False makes a runner that only starts and steers runs, leaving
            execution to other runners or workers.
        clock: where time comes from (tests pass a `ManualClock`).
        owner: this executor's name in leases; by default host:pid:random.
        agents: where `ctx.Agent(name, ...)` and `ctx.Agents` find agents beyond the
            workflow's `.Agents({...})`: a Steward (`Steward.Runner` passes itself).
    """

    def __init__(
        self,
        workflow: Workflow,
        store: Store | str | None = None,
        *,
        lease_ttl: float = 10.0,
        poll_interval: float | None = None,
        execute: bool = True,
        clock: Clock | None = None,
        owner: str | None = None,
        agents: AgentDirectory | None = None,
    ) -> None:
        if not isinstance(workflow, Workflow):
            raise TypeError(f"WorkflowRunner takes a Workflow, got {workflow!r}")
        workflow.check_runnable()
        if lease_ttl <= 0:
            raise ValueError(f"lease_ttl must be positive, got {lease_ttl}")
        self.workflow = workflow
        self.store, self._owns_store = _pick_store(workflow, store)
        self.lease_ttl = lease_ttl
        self.poll_interval = poll_interval if poll_interval is not None else min(1.0, lease_ttl / 4)
        self.execute = execute
        self.clock: Clock = clock or SystemClock()
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        definitions = Definitions([workflow])
        engine = Engine(
            self.store,
            definitions,
            owner=self.owner,
            lease_ttl=lease_ttl,
            clock=self.clock,
            agents=agents,
        )
        self.executor = Executor(engine, poll_interval=self.poll_interval)
        self.operator = Operator(self.store, self.clock, definitions)
        self._open = False
        self._closed = False
        self._serving = False
        self._background: asyncio.Task[None] | None = None
        self._ready = anyio.Event()
        self._close_requested = anyio.Event()

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> WorkflowRunner:
        self._closed = False
        await self.store.open()
        await self._catalogue()
        if self.execute:
            await self.executor.__aenter__()
        self._open = True
        self._ready.set()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self._open = False
        self._closed = True
        try:
            if self.executor.running:
                await self.executor.__aexit__(None, None, None)
        finally:
            if self._owns_store:
                await self.store.close()
        return None

    async def _catalogue(self) -> None:
        """Put this workflow's version in the store's catalogue, and learn from it which
        versions came before (runs never go back to an older version; see
        `holon.runtime.definitions`)."""
        workflow = self.workflow
        catalogue = await ensure_entry(self.store, workflow, self.clock.now())
        self.engine.definitions.set_order(workflow.name, version_order(catalogue, workflow.name))

    async def _started(self) -> None:
        """Start in the background when the caller did not use `async with`."""
        if self._open:
            return
        if self._closed and not self._serving:
            raise self._closed_error()
        if self._background is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                raise HolonError(
                    "outside asyncio, use `async with WorkflowRunner(wf) as "
                    "runner:` so the runner has a task group to execute in"
                ) from None
            self._background = loop.create_task(self._serve())
        await self._ready.wait()

    async def _serve(self) -> None:
        self._serving = True
        async with self:
            await self._close_requested.wait()

    def _closed_error(self) -> HolonError:
        return HolonError(
            f"the runner of workflow {self.workflow.name!r} was closed; its handles and "
            "verbs no longer work. Make a new WorkflowRunner (or a Client) and Get(run_id) "
            "to reach a run again",
            workflow=self.workflow.name,
        )

    @property
    def closed(self) -> bool:
        """The runner was closed, and its store with it (a store it opened from a URL):
        its handles refuse to work, saying so. A store given to the runner stays open,
        and so do the handles that read it."""
        return self._closed and self._owns_store

    async def Close(self) -> None:
        """Stop a runner started without `async with` (in-flight steps are cancelled;
        their runs stay resumable). Inside `async with`, leaving the block does this."""
        if self._background is not None:
            self._close_requested.set()
            await self._background
            self._background = None
            self._close_requested = anyio.Event()
            self._ready = anyio.Event()

    # -- execution ---------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The engine that executes this runner's runs."""
        return self.executor.engine

    def kick(self, run_id: str) -> None:
        """Try to execute `run_id` here now (it may be leased elsewhere, or its workflow
        at its concurrency limit: then the claim loop or another executor takes it)."""
        if self.execute:
            self.executor.kick(run_id, self.workflow.name)

    def cancel_here(self, run_id: str) -> None:
        """Cancel the step of `run_id` now if it is executing in this process (an
        operator's Stop: the executor then writes the run `stopped`)."""
        execution = self.engine.executions.get(run_id)
        if execution is not None:
            execution.request_stop()

    async def recover_now(self) -> int:
        """Claim and start runs that need an executor (at most `CLAIM_BATCH` per call);
        returns how many were claimed."""
        return await self.executor.claim_now()

    # -- starting and finding runs -------------------------------------------------------

    async def Run(
        self,
        input: Any = None,
        run_id: str | None = None,
        *,
        started_by: str | None = None,
        budget: Budget | Mapping[str, Any] | None = None,
    ) -> RunHandle:
        """Start a run and return its handle.

        The input is validated first: an invalid one raises `InputValidationError`, and
        one larger than the workflow's `Limits.input` raises `ValueTooLarge`; neither
        creates anything. A given `run_id` makes the start idempotent: the same id again
        returns the existing run, whatever its status. `started_by` is the identity
        starting the run, recorded with it (and barred from approving it where an
        approval says `forbid_self_approval=True`). `budget` replaces the workflow's
        `.Budget(...)` for this run.
        """
        run_budget = Budget.of(budget) if budget is not None else self.workflow.run_budget
        run_input = self._validate_input(input)
        check_input_size(self.workflow, run_input)
        await self._started()
        if run_id is not None and (not isinstance(run_id, str) or not run_id.strip()):
            raise ValueError(f"run_id must be a non-empty string, got {run_id!r}")
        if started_by is not None and (not isinstance(started_by, str) or not started_by):
            raise ValueError(f"started_by must be a non-empty string, got {started_by!r}")
        record, events = new_run(
            self.workflow,
            run_input,
            run_id or uuid.uuid4().hex,
            self.clock.now(),
            started_by=started_by,
            budget=run_budget,
        )
        stored, created = await self.store.create_run(record, events)
        if created:
            self.kick(stored.run_id)
        else:
            self._check_same_run(stored, record)
        return RunHandle(self, stored.run_id)

    def _check_same_run(self, stored: RunRecord, asked: RunRecord) -> None:
        """An idempotent start finds the run it would have made; a run id taken by
        another workflow's run, or by a run of other input, is a `RunConflict`."""
        run_id = stored.run_id
        if stored.workflow != asked.workflow:
            raise RunConflict(
                f"run id {run_id!r} is taken by a run of workflow {stored.workflow!r}, not "
                f"{asked.workflow!r}; choose another run id",
                existing_workflow=stored.workflow,
                run_id=run_id,
                workflow=asked.workflow,
            )
        keyring = self.workflow.plan.rules.keyring
        stored_input, asked_input = stored.input, asked.input
        if has_secrets(self.workflow.input_model):  # sealed twice, never the same bytes
            stored_input = open_secrets(stored_input, keyring)
            asked_input = open_secrets(asked_input, keyring)
        if digest(_plain(stored_input)) != digest(_plain(asked_input)):
            raise RunConflict(
                f"run {run_id!r} of workflow {stored.workflow!r} exists with another input; "
                "the same run id starts the same run only with the same input (choose "
                "another run id, or Get() the existing run)",
                existing_workflow=stored.workflow,
                run_id=run_id,
                workflow=asked.workflow,
            )

    def validate_input(self, value: Any) -> Any:
        """`value` as a run of this workflow would store it (its JSON form);
        `InputValidationError` when it does not match the Input model."""
        return self._validate_input(value)

    def _validate_input(self, value: Any) -> Any:
        return validate_input(self.workflow, value)

    async def Get(self, run_id: str) -> RunHandle:
        """The handle of an existing run; `RunNotFound` if there is none."""
        await self._started()
        if await self.store.load_run(run_id) is None:
            raise RunNotFound(f"no run {run_id!r} in {self.store.url}", run_id=run_id)
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
        await self._started()
        return await self.store.list_runs(
            status=RunStatus(status) if status is not None else None,
            workflow=workflow,
            limit=limit,
            cursor=cursor,
        )

    # -- waits ----------------------------------------------------------------------------

    async def Send(
        self,
        event: str,
        payload: Any = None,
        event_id: str | None = None,
        *,
        keep_for: float | None = None,
    ) -> list[str]:
        """Deliver `event` to every run in the store waiting on it with a matching
        `match`; returns the ids of the runs that have it.

        Each run records the delivery once per `event_id`, so sending again after a
        failure is safe. Runs are found through the store's index of waiting runs, a
        page at a time, so any number of waiting runs costs memory for one page only.
        With `keep_for` (seconds), the event is also kept for that long for the runs
        that start waiting on it later (each gets it once, when its wait opens, if it
        matches); without, only the runs waiting now have it. To reach one run that
        may not wait yet, send to its handle (`RunHandle.Send`), which keeps by default.
        """
        await self._started()
        return await send_event(
            self.operator, event, payload, event_id, keep_for=keep_for, on_queued=self.kick
        )

    async def Pending(
        self,
        approver: str,
        roles: Iterable[str] = (),
        *,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page[WaitInfo]:
        """The approvals `approver` (holding `roles`) can act on now, in run-id order;
        pass `page.next_cursor` back for the next page.

        Gates the identity already decided on, or may not approve (it started the run
        and self-approval is forbidden), are left out.
        """
        await self._started()
        return await pending_approvals(self.store, approver, roles, limit=limit, cursor=cursor)

    # The snake_case twins, as real members a type checker sees (`snake_case_aliases`
    # checks that every PascalCase verb has one).
    close = Close
    run = Run
    get = Get
    list = List
    send = Send
    pending = Pending


def _plain(value: Any) -> Any:
    """`value` with opened secrets as their plaintext, to compare two inputs."""
    if isinstance(value, SecretStr | SecretBytes):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _pick_store(workflow: Workflow, store: Store | str | None) -> tuple[Store, bool]:
    persistence = workflow.persistence_config
    if store is None and not persistence.enabled:
        return MemoryStore(), True
    chosen = store if store is not None else persistence.store
    if chosen is None or isinstance(chosen, str):
        return open_store(chosen, key_prefix=persistence.key_prefix), True
    return chosen, False
