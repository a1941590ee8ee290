"""`Steward`: the registry of workflows and agents, kept in the store.

```python
steward = Steward("sqlite:///.holon/holon.db")
await steward.Register(BuildAndDeploy, owner="platform", tags=["deploy"])

# in another process, with only the store:
for info in await steward.List():
    print(info.name, info.version, info.runs)
runner = await steward.Runner("BuildAndDeploy")
handle = await runner.Run({"repo": "acme/app"})
```

The catalogue lives in the store, so every process that reaches the store sees the
same one. Each registered version stays discoverable; a name's latest version is the
one registered most recently for the first time. Agents and task functions are code:
they are registered in each process that runs declarative workflows
(`RegisterAgent`, `RegisterTask`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from holon._json import to_json_value
from holon._naming import snake_case_aliases
from holon.clock import Clock, SystemClock
from holon.control.catalogue import WorkflowInfo, entries, entry_for, record_entry, served_agents
from holon.control.runner import WorkflowRunner
from holon.control.schedules import ScheduleError, ScheduleInfo, check_timetable
from holon.control.steward_code import AgentFactory, CodeRegistry
from holon.control.webhooks import WebhookRoute, webhook_path
from holon.definition.builder import Workflow
from holon.definition.declarative import Compiled, compile_document
from holon.errors import (
    DocumentError,
    HolonError,
    InputValidationError,
    WorkflowDefinitionError,
    WorkflowNotFound,
)
from holon.stores import open_store
from holon.stores.base import TERMINAL_STATUSES, RunStatus, Store

__all__ = ["Steward"]

logger = logging.getLogger("holon.steward")


@snake_case_aliases
class Steward(CodeRegistry):
    """A registry of workflows (in the store) and agents (in this process).

    Args:
        store: a store object or URL; None means `HOLON_STORE`, else the SQLite default.
        clock: where time comes from (registration times, retention cut-offs).
    """

    def __init__(self, store: Store | str | None = None, *, clock: Clock | None = None) -> None:
        if store is None or isinstance(store, str):
            self.store: Store = open_store(store)
            self._owns_store = True
        else:
            self.store = store
            self._owns_store = False
        self.clock: Clock = clock or SystemClock()
        self._workflows: dict[tuple[str, str], Workflow] = {}
        self._agent_factories: dict[str, AgentFactory] = {}
        self._agents: dict[str, Any] = {}
        self._tasks: dict[str, Callable[..., Any]] = {}
        self._webhooks: dict[str, WebhookRoute] = {}

    @property
    def workflows(self) -> list[Workflow]:
        """The workflow versions registered (or loaded) in this process, whose code is
        here: what a `Worker` given this steward executes."""
        return list(self._workflows.values())

    async def __aenter__(self) -> Steward:
        await self.store.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.Close()

    async def Close(self) -> None:
        """Close the store if the steward opened it from a URL."""
        if self._owns_store:
            await self.store.close()

    # -- workflows ---------------------------------------------------------------------

    async def Register(
        self, workflow: Workflow, owner: str | None = None, tags: Iterable[str] = ()
    ) -> WorkflowInfo:
        """Add a workflow version to the catalogue (again: updates owner and tags).

        Raises `WorkflowDefinitionError` when this name and version are registered
        with another graph or other schemas: a changed workflow needs a new version.
        """
        return await self._register(workflow, owner, tags, None)

    async def _register(
        self,
        workflow: Workflow,
        owner: str | None,
        tags: Iterable[str],
        compiled: Compiled | None,
    ) -> WorkflowInfo:
        if not isinstance(workflow, Workflow):
            raise TypeError(f"Register() takes a Workflow, got {workflow!r}")
        workflow.check_runnable()
        tag_list = _tags(tags, workflow.name)
        if owner is not None and not isinstance(owner, str):
            raise WorkflowDefinitionError(
                f"workflow {workflow.name!r}: owner must be a string, got {owner!r}",
                workflow=workflow.name,
            )
        info = entry_for(
            workflow,
            owner=owner,
            tags=tag_list,
            registered_at=self.clock.now(),
            details=compiled.details if compiled else None,
            triggers=compiled.triggers if compiled else None,
            document=compiled.document if compiled else None,
        )
        await self.store.open()
        info = await record_entry(self.store, info)
        self._workflows[(info.name, info.version)] = workflow
        logger.info("registered workflow %s version %s", info.name, info.version)
        return info

    async def Load(
        self,
        document: str | bytes | Path | Mapping[str, Any],
        owner: str | None = None,
        tags: Iterable[str] | None = None,
    ) -> WorkflowInfo:
        """Compile a declarative workflow (YAML or JSON text, a file, or a dict) and
        register it. Every agent and task it names must be registered here first. A
        `trigger: {type: schedule, ...}` becomes a schedule of the workflow's name
        (`Schedule`), started by the workers that execute it.

        Raises `DocumentError` naming the line and field at fault.
        """
        compiled = compile_document(
            document, agents=self._agent_factories, tasks=self._tasks, call=self._call
        )
        info = await self._register(
            compiled.workflow,
            owner if owner is not None else compiled.owner,
            tags if tags is not None else compiled.tags,
            compiled,
        )
        timetables = [t for t in compiled.triggers if t["type"] == "schedule"]
        for index, trigger in enumerate(timetables):
            name = info.name if len(timetables) == 1 else f"{info.name}#{index + 1}"
            await self.Schedule(
                info.name,
                cron=trigger.get("cron"),
                every=trigger.get("every"),
                name=name,
                version=info.version,
            )
        return info

    async def _entries(self) -> list[WorkflowInfo]:
        return await entries(self.store)

    async def Versions(self, name: str) -> list[WorkflowInfo]:
        """Every registered version of `name`, oldest first."""
        await self.store.open()
        versions = [i for i in await self._entries() if i.name == name]
        if not versions:
            known = sorted({i.name for i in await self._entries()})
            raise WorkflowNotFound(
                f"no workflow {name!r} in the catalogue of {self.store.url}; known: {known}",
                workflow=name,
            )
        return sorted(versions, key=lambda i: (i.registered_at, i.version))

    async def Get(self, name: str, version: str | None = None) -> WorkflowInfo:
        """The catalogue entry of `name` at `version` (default: the latest)."""
        versions = await self.Versions(name)
        if version is None:
            return versions[-1]
        for info in versions:
            if info.version == version:
                return info
        raise WorkflowNotFound(
            f"workflow {name!r} has no version {version!r}; versions: "
            f"{[i.version for i in versions]}",
            workflow=name,
        )

    async def List(self, tag: str | None = None) -> list[WorkflowInfo]:
        """The latest version of every workflow (with `tag`, if given), by name, each
        with its live run counts by status (all versions together)."""
        await self.store.open()
        latest: dict[str, WorkflowInfo] = {}
        for info in sorted(await self._entries(), key=lambda i: (i.registered_at, i.version)):
            latest[info.name] = info
        chosen = [i for _, i in sorted(latest.items()) if tag is None or tag in i.tags]
        return [i.model_copy(update={"runs": await self._counts(i.name)}) for i in chosen]

    async def _counts(self, name: str) -> dict[str, int]:
        counts = await self.store.count_runs(workflow=name)
        return {status.value: counts[status] for status in RunStatus if status in counts}

    async def Describe(self, name: str, version: str | None = None) -> dict[str, Any]:
        """Everything the catalogue knows of a workflow version, as JSON: schemas, graph,
        Mermaid diagram, triggers, every version, and run counts by status."""
        info = await self.Get(name, version)
        versions = [i.version for i in await self.Versions(name)]
        described = info.model_copy(update={"runs": await self._counts(name)})
        return {**described.model_dump(mode="json"), "versions": versions}

    async def Runner(
        self, name: str, version: str | None = None, **runner_kwargs: Any
    ) -> WorkflowRunner:
        """A `WorkflowRunner` for a registered workflow (default: its latest version).

        With the workflow's code in this process (registered here, or a declarative
        workflow whose agents and tasks are registered here) the runner executes runs.
        Without it, the runner starts and steers runs, leaving their execution to a
        process that has the code: it checks an input's required fields against the
        catalogued schema; the executing process validates it in full.
        """
        info = await self.Get(name, version)
        workflow = self._workflows.get((info.name, info.version)) or self._recompile(info)
        if workflow is not None:
            runner_kwargs.setdefault("agents", self)
            return WorkflowRunner(workflow, self.store, **runner_kwargs)
        if runner_kwargs.pop("execute", False):
            raise HolonError(
                f"workflow {name!r} version {info.version!r}: this process does not have "
                "its code, so it cannot execute its runs; Register() it here first",
                workflow=name,
            )
        return _CatalogueRunner(info, self.store, **runner_kwargs)

    def _recompile(self, info: WorkflowInfo) -> Workflow | None:
        if info.document is None:
            return None
        try:
            compiled = compile_document(
                info.document, agents=self._agent_factories, tasks=self._tasks, call=self._call
            )
        except DocumentError:
            return None  # an agent or task it names is not registered in this process
        if compiled.workflow.version != info.version:
            return None
        self._workflows[(info.name, info.version)] = compiled.workflow
        return compiled.workflow

    # -- schedules -----------------------------------------------------------------------

    async def Schedule(
        self,
        workflow: str | Workflow,
        *,
        cron: str | None = None,
        every: float | dt.timedelta | None = None,
        input: Any = None,
        name: str | None = None,
        timezone: str = "UTC",
        catch_up: Literal["skip", "all"] = "skip",
        overlap: Literal["allow", "skip"] = "allow",
        version: str | None = None,
    ) -> ScheduleInfo:
        """Start a run of `workflow` at every tick of a timetable (see
        `holon.control.schedules`); workers that execute the workflow start them.

        Args:
            workflow: a registered workflow, or its name.
            cron: a cron expression in `timezone`, e.g. `"0 2 * * *"` (needs croniter:
                `pip install 'holon[schedules]'`); or
            every: seconds (or a timedelta) between ticks, from now.
            input: every run's input, validated now.
            name: the schedule's name (default: the workflow's); the same name again
                replaces the schedule, keeping what it has done if its workflow and
                timetable stay.
            catch_up: after a time with no worker, `skip` starts one run for the
                latest tick missed, `all` one for each.
            overlap: `skip` starts nothing at a tick while the last run is still going.
            version: the version its runs start on (default: the newest a worker has).

        Raises `ScheduleError` for a bad timetable, `WorkflowNotFound` for a workflow
        not in the catalogue, `InputValidationError` for an input that does not fit.
        """
        workflow_name = workflow.name if isinstance(workflow, Workflow) else workflow
        if isinstance(every, dt.timedelta):
            every = every.total_seconds()
        check_timetable(cron, every, timezone)
        if catch_up not in ("skip", "all") or overlap not in ("allow", "skip"):
            raise ScheduleError(
                f"catch_up is 'skip' or 'all' and overlap 'allow' or 'skip'; got "
                f"{catch_up!r} and {overlap!r}"
            )
        schedule_name = name or workflow_name
        if not isinstance(schedule_name, str) or not schedule_name.strip():
            raise ScheduleError(f"a schedule needs a non-empty name, got {schedule_name!r}")
        runner = await self.Runner(workflow_name, version, execute=False)
        stored_input = runner.validate_input(input)
        info = ScheduleInfo(
            name=schedule_name,
            workflow=workflow_name,
            version=version,
            cron=cron,
            every=every,
            timezone=timezone,
            input=stored_input,
            catch_up=catch_up,
            overlap=overlap,
            created_at=self.clock.now(),
        )
        same = next((s for s in await self.Schedules() if s.name == schedule_name), None)
        if same is not None and _same_timetable(same, info):
            info = info.model_copy(
                update={
                    k: getattr(same, k)
                    for k in ("created_at", "last_tick", "last_run", "skipped", "paused")
                }
            )
        await self.store.put_schedule(schedule_name, info.model_dump(mode="json"))
        logger.info(
            "schedule %s: runs of %s on %s",
            schedule_name,
            workflow_name,
            cron or f"every {every} s",
        )
        return info

    async def Schedules(self, workflow: str | None = None) -> list[ScheduleInfo]:
        """The schedules kept in the store (of `workflow`, if given), by name."""
        await self.store.open()
        found = [ScheduleInfo.model_validate(d) for d in await self.store.schedules()]
        return [s for s in found if workflow is None or s.workflow == workflow]

    async def PauseSchedule(self, name: str) -> ScheduleInfo:
        """Start no run for this schedule until `ResumeSchedule` (ticks meanwhile are
        skipped, not caught up)."""
        return await self._update_schedule(name, paused=True)

    async def ResumeSchedule(self, name: str) -> ScheduleInfo:
        """Start runs again from the next tick on."""
        return await self._update_schedule(name, paused=False, last_tick=self.clock.now())

    async def DeleteSchedule(self, name: str) -> None:
        """Forget a schedule (its runs are left alone). `ScheduleError` when unknown."""
        await self.store.open()
        if not await self.store.delete_schedule(name):
            raise ScheduleError(f"no schedule {name!r} in {self.store.url}")

    async def _update_schedule(self, name: str, **changes: Any) -> ScheduleInfo:
        await self.store.open()
        if not await self.store.patch_schedule(name, changes):
            known = [s.name for s in await self.Schedules()]
            raise ScheduleError(f"no schedule {name!r} in {self.store.url}; schedules: {known}")
        return next(s for s in await self.Schedules() if s.name == name)

    # -- webhooks ------------------------------------------------------------------------

    def Webhook(
        self,
        workflow: str | Workflow,
        *,
        path: str,
        secret: str | None = None,
        event: str | None = None,
        start: bool = True,
    ) -> WebhookRoute:
        """Start runs of `workflow` from signed deliveries to `POST /hooks/{path}` of the
        HTTP API served with this steward (see `holon.control.webhooks`).

        Args:
            path: the path under `/hooks/`.
            secret: the key deliveries are signed with (default: the app's).
            event: send each delivery as this event to the runs waiting on it (their
                `match=` correlates) instead of starting a run.
            start: with `event`, start a run when no waiting run took a delivery.
        """
        name = workflow.name if isinstance(workflow, Workflow) else workflow
        route = WebhookRoute(
            workflow=name, path=webhook_path(path), secret=secret, event=event, start=start
        )
        self._webhooks[route.path] = route
        return route

    @property
    def webhooks(self) -> list[WebhookRoute]:
        """The webhooks declared in this process with `Webhook`."""
        return list(self._webhooks.values())

    # -- agents and tasks ----------------------------------------------------------------

    async def ListAgents(self) -> dict[str, list[str]]:
        """Every agent the live executors of the store can run (their workflows' own and
        those registered with their Steward), with the executors that can."""
        await self.store.open()
        return await served_agents(self.store, self.clock.now())

    # -- retention -----------------------------------------------------------------------

    async def Prune(
        self,
        older_than: dt.timedelta | float,
        status: RunStatus | str | Iterable[RunStatus | str] | None = None,
        workflow: str | None = None,
    ) -> int:
        """Delete finished runs whose last change is older than `older_than`.

        Args:
            older_than: a `timedelta` or seconds.
            status: which final statuses to prune (default: all of them); a status
                that is not final is refused.
            workflow: only runs of this workflow.

        Returns how many runs were deleted, with their results and timelines.
        """
        seconds = older_than.total_seconds() if isinstance(older_than, dt.timedelta) else older_than
        if not isinstance(seconds, int | float) or seconds < 0:
            raise ValueError(
                f"Prune(older_than=...) takes a timedelta or seconds >= 0, got {older_than!r}"
            )
        statuses = _final_statuses(status)
        cutoff = self.clock.now() - seconds
        await self.store.open()
        doomed: list[str] = []
        for wanted in statuses:
            cursor: str | None = None
            while True:
                page = await self.store.list_runs(
                    status=wanted, workflow=workflow, limit=500, cursor=cursor
                )
                doomed += [s.run_id for s in page.items if s.updated_at <= cutoff]
                cursor = page.next_cursor
                if cursor is None:
                    break
        deleted = 0
        for start in range(0, len(doomed), 500):
            deleted += len(await self.store.delete_runs(doomed[start : start + 500]))
        logger.info("pruned %d finished runs", deleted)
        return deleted

    # The snake_case twins, as real members a type checker sees (`snake_case_aliases`
    # checks that every PascalCase verb has one).
    close = Close
    register = Register
    load = Load
    versions = Versions
    get = Get
    list = List
    describe = Describe
    runner = Runner
    schedule = Schedule
    schedules = Schedules
    pause_schedule = PauseSchedule
    resume_schedule = ResumeSchedule
    delete_schedule = DeleteSchedule
    webhook = Webhook
    list_agents = ListAgents
    prune = Prune


def _tags(tags: Iterable[str], workflow: str) -> list[str]:
    if isinstance(tags, str) or not all(isinstance(t, str) and t for t in tags):
        raise WorkflowDefinitionError(
            f"workflow {workflow!r}: tags are a list of non-empty strings, got {tags!r}",
            workflow=workflow,
        )
    return sorted(set(tags))


def _final_statuses(
    status: RunStatus | str | Iterable[RunStatus | str] | None,
) -> list[RunStatus]:
    if status is None:
        return sorted(TERMINAL_STATUSES)
    given = [status] if isinstance(status, str) else list(status)
    statuses = [RunStatus(s) for s in given]
    for s in statuses:
        if not s.terminal:
            raise ValueError(
                f"Prune removes finished runs; {s.value!r} is not a final status "
                f"(final: {sorted(t.value for t in TERMINAL_STATUSES)})"
            )
    return statuses


def _not_here(ctx: Any) -> Any:
    raise HolonError("this step's code is not in this process")


def _stand_in(info: WorkflowInfo) -> Workflow:
    """A workflow with the catalogued name, version and step names, and no code."""
    workflow = Workflow(info.name, info.description, version=info.version)
    if info.kind == "execute":
        return workflow.Execute(_not_here)
    return workflow.Flow({step.name: _not_here for step in info.graph.steps})


class _CatalogueRunner(WorkflowRunner):
    """Starts and steers runs of a workflow known only from the catalogue."""

    def __init__(self, info: WorkflowInfo, store: Store, **runner_kwargs: Any) -> None:
        super().__init__(_stand_in(info), store, execute=False, **runner_kwargs)
        self.info = info

    async def _catalogue(self) -> None:
        """Nothing to add: the workflow is known from its catalogue entry (its stand-in
        has no code, and not the entry's shape)."""

    def _validate_input(self, value: Any) -> Any:
        value = to_json_value(value, what="input", run_id="(new)", step=None)
        schema = self.info.input_schema
        if schema is None or schema.get("type") != "object":
            return value
        problem = None
        if not isinstance(value, dict):
            problem = f"expected an object, got {type(value).__name__}"
        else:
            missing = [f for f in schema.get("required", []) if f not in value]
            if missing:
                problem = f"{missing[0]}: Field required"
            elif schema.get("additionalProperties") is False:
                extra = sorted(set(value) - set(schema.get("properties", {})))
                if extra:
                    problem = f"{extra[0]}: Extra inputs are not permitted"
        if problem is not None:
            raise InputValidationError(
                f"input of workflow {self.info.name!r} does not match its schema: {problem}",
                workflow=self.info.name,
            )
        return value


def _same_timetable(old: ScheduleInfo, new: ScheduleInfo) -> bool:
    keys = ("workflow", "version", "cron", "every", "timezone")
    return all(getattr(old, k) == getattr(new, k) for k in keys)
