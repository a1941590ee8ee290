"""What the endpoints call: the library's own verbs, with the caller's identity.

`Service` reaches every run of a store by id (a `RunHandle` over the store, the same
verbs `RunHandle` and `WorkflowRunner` offer in code), starts runs of catalogued
workflows by name, and checks each caller's permission for the run's workflow. It
executes nothing itself; a `Worker` given to the app executes runs in this process.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from holon.clock import Clock
from holon.control.handle import RunHandle
from holon.control.operator import Operator
from holon.control.runner import WorkflowRunner
from holon.control.sandbox import is_sandbox
from holon.control.steward import Steward
from holon.control.waiting import pending_approvals
from holon.errors import HolonError, RunNotFound
from holon.http.auth import Auth, Identity, Permission
from holon.http.problems import HttpProblem
from holon.runtime.definitions import Definitions
from holon.runtime.waits import WaitInfo, describe
from holon.stores.base import Page, RunRecord, RunStatus, Store
from holon.worker.worker import Worker

__all__ = ["Service", "run_view", "wait_view"]


class Service:
    """Steers the runs of one store on behalf of authenticated callers."""

    def __init__(
        self,
        steward: Steward,
        auth: Auth,
        *,
        store: Store | None = None,
        worker: Worker | None = None,
        poll_interval: float = 0.5,
        lease_ttl: float = 10.0,
    ) -> None:
        self.steward = steward
        self.auth = auth
        self.worker = worker
        self.store: Store = store or steward.store
        """The store the app writes through (the steward's, observed when notices go out)."""
        self.clock: Clock = steward.clock
        self.poll_interval = poll_interval
        self._lease_ttl = lease_ttl
        self._runners: dict[tuple[str, str], WorkflowRunner] = {}
        self._known = len(steward.workflows)
        self.operator = Operator(self.store, self.clock, Definitions(steward.workflows))

    @property
    def lease_ttl(self) -> float:
        """How long a run's lease lasts (the worker's, if there is one here)."""
        return self.worker.lease_ttl if self.worker is not None else self._lease_ttl

    @lease_ttl.setter
    def lease_ttl(self, value: float) -> None:
        self._lease_ttl = value

    # -- what a RunHandle needs of its source ------------------------------------------

    def _operator(self) -> Operator:
        """The operator verbs, knowing the workflows whose code is in this process (their
        step names and state models check a resume's goto and state patch): made again
        when a workflow was registered since."""
        workflows = self.steward.workflows
        if len(workflows) != self._known:
            self._known = len(workflows)
            self.operator = Operator(self.store, self.clock, Definitions(workflows))
        return self.operator

    def kick(self, run_id: str) -> None:
        if self.worker is not None:
            self.worker.executor.kick(run_id)

    def cancel_here(self, run_id: str) -> None:
        if self.worker is not None:
            execution = self.worker.executor.engine.executions.get(run_id)
            if execution is not None:
                execution.request_stop()

    # -- runs ----------------------------------------------------------------------------

    def handle(self, run_id: str) -> RunHandle:
        self._operator()
        return RunHandle(self, run_id)

    async def record(self, run_id: str) -> RunRecord:
        record = await self.store.load_run(run_id)
        if record is None:
            raise RunNotFound(f"no run {run_id!r}", run_id=run_id)
        return record

    async def exists(self, run_id: str) -> None:
        """404 for an unknown run, from the cheap read (none of its body is loaded)."""
        if await self.store.run_progress(run_id) is None:
            raise RunNotFound(f"no run {run_id!r}", run_id=run_id)

    async def check(self, identity: Identity, permission: Permission, workflow: str) -> None:
        """Refuse with 403 unless `identity` may `permission` runs of `workflow`."""
        if identity.admin or not self.auth.rules:
            return
        owner = await self._owner(workflow)
        if not self.auth.may(identity, permission, workflow, owner):
            raise HttpProblem(
                403, f"{identity.name!r} may not {permission} runs of workflow {workflow!r}"
            )

    async def steerable(self, identity: Identity, permission: Permission, run_id: str) -> RunRecord:
        """The run, once `identity` is known to hold `permission` for its workflow."""
        record = await self.record(run_id)
        await self.check(identity, permission, record.workflow)
        return record

    async def _owner(self, workflow: str) -> str | None:
        try:
            return (await self.steward.Get(workflow)).owner
        except HolonError:
            return None

    async def runner(self, name: str, version: str | None = None) -> WorkflowRunner:
        """A runner that starts runs of a catalogued workflow (executing none), kept for
        the app's life."""
        info = await self.steward.Get(name, version)
        key = (info.name, info.version)
        runner = self._runners.get(key)
        if runner is None:
            runner = await self.steward.Runner(info.name, info.version, execute=False)
            await runner.__aenter__()
            self._runners[key] = runner
        return runner

    async def start(
        self,
        identity: Identity,
        workflow: str,
        input: Any,
        run_id: str | None = None,
        version: str | None = None,
    ) -> tuple[RunRecord, bool]:
        """Start a run as `identity`; returns it and whether it was made now.

        A `run_id` already used by a run of another workflow, input or starter is a
        conflict (409); the same start again returns the existing run."""
        await self.check(identity, "start", workflow)
        runner = await self.runner(workflow, version)
        existing = await self.store.load_run(run_id) if run_id is not None else None
        if existing is not None:
            same = (
                existing.workflow == runner.workflow.name
                and existing.input == runner.validate_input(input)
                and existing.body.started_by == identity.name
            )
            if not same:
                raise HttpProblem(409, f"run id {run_id!r} is taken by another run")
            return existing, False
        handle = await runner.Run(input, run_id=run_id, started_by=identity.name)
        record = await self.record(handle.run_id)
        self.kick(record.run_id)
        return record, True

    async def list_runs(
        self, status: RunStatus | None, workflow: str | None, limit: int, cursor: str | None
    ) -> Page[Any]:
        return await self.store.list_runs(
            status=status, workflow=workflow, limit=limit, cursor=cursor
        )

    async def pending(
        self, identity: Identity, *, limit: int = 100, cursor: str | None = None
    ) -> Page[WaitInfo]:
        """The approvals `identity` can act on now, in run-id order (the inbox)."""
        return await pending_approvals(
            self.store, identity.name, identity.roles, limit=limit, cursor=cursor
        )

    async def close(self) -> None:
        for runner in self._runners.values():
            await runner.__aexit__(None, None, None)
        self._runners.clear()


def wait_view(info: WaitInfo | None) -> dict[str, Any] | None:
    # Shallow: the values are JSON already (`asdict` would copy each one deeply).
    if info is None:
        return None
    return {f.name: getattr(info, f.name) for f in dataclasses.fields(info)}


def run_view(record: RunRecord, *, full: bool = True) -> dict[str, Any]:
    """A run as the API shows it: the stored record, what it waits for, and whether it
    is a sandbox run (a replay's, which never touches its original)."""
    view = record.model_dump(mode="json", exclude={"lease", "fence"} if full else None)
    view["waiting"] = wait_view(describe(record))
    view["sandbox"] = is_sandbox(record)
    return view
