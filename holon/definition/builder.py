"""`Workflow`: the fluent, immutable builder, and the validation done while building.

```python
wf = (
    Workflow("BuildAndDeploy", "Build, test, deploy")
    .Input(Repo)
    .State(Build)
    .Flow({START: lambda ctx: "Clone", "Clone": clone, "Test": test})
)
```

Each builder call returns a new `Workflow`; the one it was called on is unchanged. A
mistake is reported by the call that makes it, with the workflow and step named.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, cast

from pydantic import BaseModel

from holon._naming import snake_case_aliases
from holon.definition.budget import Budget as RunBudget
from holon.definition.directives import END, START, Marker
from holon.definition.flow_shape import (
    POSITIONAL,
    edges_from_annotation,
    no_step,
    qualname,
    reachable,
    without_ctx,
)
from holon.definition.mermaid import flow_to_mermaid
from holon.definition.persistence import PersistenceConfig, persistence_settings
from holon.definition.policies import Retry, StepPolicy, check_policies, runs_in_thread
from holon.definition.steps import DataRules, FlowPlan, StepFunction, StepSpec
from holon.errors import SecretKeyError, WorkflowDefinitionError
from holon.limits import Limits as SizeLimits
from holon.sealing import Keyring, has_secrets, redacted_fields

if typing.TYPE_CHECKING:
    from holon.stores.base import Store

__all__ = ["FlowPlan", "PersistenceConfig", "StepSpec", "Workflow"]

StateMigration = Callable[[dict[str, Any]], Any]


@snake_case_aliases
class Workflow:
    """A workflow definition: name, schemas, steps, persistence. Immutable.

    Args:
        name: how the workflow is known to runners, the store and operators.
        description: one line for humans.
        version: an explicit version; by default a fingerprint of the step names,
            known edges and schemas.
    """

    __slots__ = (
        "_agents",
        "_budget",
        "_compatible",
        "_defaults",
        "_description",
        "_execute",
        "_fingerprint",
        "_input",
        "_keyring",
        "_limits",
        "_max_running",
        "_migrations",
        "_name",
        "_persistence",
        "_plan",
        "_state",
        "_steps",
        "_version",
    )

    def __init__(self, name: str, description: str = "", version: str | None = None) -> None:
        if not isinstance(name, str) or not name.strip():
            raise WorkflowDefinitionError(f"a workflow needs a non-empty name, got {name!r}")
        if version is not None and (not isinstance(version, str) or not version):
            raise WorkflowDefinitionError(
                f"workflow {name!r}: version must be a non-empty string, got {version!r}",
                workflow=name,
            )
        self._name = name
        self._description = description
        self._version = version
        self._input: type[BaseModel] | None = None
        self._state: type[BaseModel] | None = None
        self._steps: Mapping[str, StepSpec] | None = None
        self._execute: StepFunction | None = None
        self._agents: Mapping[str, Any] = types.MappingProxyType({})
        self._budget: RunBudget | None = None
        self._defaults = StepPolicy(fn=no_step)
        self._migrations: Mapping[str, StateMigration] = types.MappingProxyType({})
        self._limits = SizeLimits()
        self._max_running: int | None = None
        self._keyring: Keyring | None = None
        self._compatible: frozenset[str] = frozenset()
        self._fingerprint: str | None = None
        self._plan: FlowPlan | None = None
        self._persistence = PersistenceConfig()  # set last: it marks the object as built

    def __setattr__(self, name: str, value: Any) -> None:
        if hasattr(self, "_persistence"):  # fully built: no more changes
            raise AttributeError(
                f"Workflow {self._name!r} is immutable; builder calls return a new Workflow"
            )
        object.__setattr__(self, name, value)

    def _with(self, **changes: Any) -> Workflow:
        clone = object.__new__(Workflow)
        for slot in Workflow.__slots__:
            object.__setattr__(clone, slot, changes.get(slot, getattr(self, slot)))
        object.__setattr__(clone, "_fingerprint", None)  # the shape may have changed
        object.__setattr__(clone, "_plan", None)
        return clone

    def _fail(self, message: str, step: str | None = None) -> WorkflowDefinitionError:
        return WorkflowDefinitionError(
            f"workflow {self._name!r}: {message}", workflow=self._name, step=step
        )

    # -- builder calls --------------------------------------------------------------

    def Input(self, model: type[BaseModel]) -> Workflow:
        """The pydantic model every run's input is validated against."""
        return self._with(_input=self._check_model("Input", model))

    def State(self, model: type[BaseModel]) -> Workflow:
        """The pydantic model of the run's evolving state. Its fields need defaults, since
        a run starts from `Model()`."""
        checked = self._check_model("State", model)
        try:
            checked()
        except Exception as exc:
            raise self._fail(
                f".State({checked.__name__}) must be constructible with no arguments (the "
                f"state a run starts from); give every field a default ({exc})"
            ) from None
        return self._with(_state=checked)

    def Flow(self, steps: Mapping[str, StepFunction | StepPolicy]) -> Workflow:
        """The graph: step name -> function of `ctx` returning the next step's name,
        `END`, `Next(...)`, `Wait(...)` or `Parallel(...)`. `START` names the entry."""
        if self._execute is not None:
            raise self._fail("has both .Execute() and .Flow(); a workflow uses one of them")
        if not isinstance(steps, Mapping):
            raise self._fail(
                f".Flow() takes a dict of step name -> function, got {type(steps).__name__}"
            )
        if START not in steps:
            raise self._fail(".Flow() has no START entry; add {START: lambda ctx: 'First'}")
        specs: dict[str, StepSpec] = {}
        for key, fn in steps.items():
            name = key.value if isinstance(key, Marker) else key
            if not isinstance(name, str) or not name:
                raise self._fail(f"step names are non-empty strings, got {key!r}")
            if name == END.value:
                raise self._fail("END is where a flow stops; it cannot be a step")
            policy = fn if isinstance(fn, StepPolicy) else StepPolicy(fn)
            if not callable(policy.fn):
                raise self._fail(f"step {name!r} is {fn!r}, not a function of ctx", step=name)
            edges, complete = edges_from_annotation(policy.fn)
            specs[name] = StepSpec(
                name=name,
                fn=self._called_with_ctx(name, policy.fn),
                edges=edges,
                edges_complete=complete,
                retry=policy.retry,
                timeout=policy.timeout,
                compensate=policy.compensate,
                in_thread=runs_in_thread(policy.fn) if policy.thread is None else policy.thread,
                external=policy.external,
            )
        known = set(specs) | {END.value}
        for spec in specs.values():
            unknown = sorted(spec.edges - known)
            if unknown:
                raise self._fail(
                    f"step {spec.name!r} may return {unknown[0]!r} (from its return "
                    f"annotation), which is not a step of the flow; known steps: "
                    f"{sorted(set(specs) - {START.value})}",
                    step=spec.name,
                )
        if all(spec.edges_complete for spec in specs.values()):
            unreachable = sorted(set(specs) - reachable(specs))
            if unreachable:
                raise self._fail(
                    f"no step leads to {unreachable} (every step's return "
                    f"annotation is known, and none names it)",
                    step=unreachable[0],
                )
        return self._with(_steps=types.MappingProxyType(specs))

    def _called_with_ctx(self, name: str, fn: StepFunction) -> StepFunction:
        """`fn` as the engine calls it, with `ctx`: a function of no arguments (`lambda:
        "Clone"`) is accepted and called without it; one that needs more than `ctx`
        is refused now rather than failing every run."""
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError):
            return fn  # a builtin or an extension: nothing to read
        params = signature.parameters.values()
        positional = [p for p in params if p.kind in POSITIONAL]
        if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
            return fn
        required = [p.name for p in positional if p.default is inspect.Parameter.empty]
        required += [
            p.name
            for p in params
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty
        ]
        if len(required) > 1 or (required and not positional):
            raise self._fail(
                f"step {name!r} is called with one argument, ctx, but its function needs "
                f"{required}",
                step=name,
            )
        if positional:
            return fn
        return without_ctx(fn)

    def Execute(self, fn: StepFunction) -> Workflow:
        """Imperative model: `async def fn(ctx) -> result`, re-run from the top on
        resume with recorded steps short-circuited."""
        if self._steps is not None:
            raise self._fail("has both .Flow() and .Execute(); a workflow uses one of them")
        if not callable(fn):
            raise self._fail(f".Execute() takes a function of ctx, got {fn!r}")
        return self._with(_execute=fn)

    def Persistence(
        self,
        store: str | Store | Mapping[str, Any] | None = None,
        key_prefix: str = "",
        enabled: bool = True,
    ) -> Workflow:
        """Where runs are stored: a URL (`sqlite:///path`, `memory://`,
        `redis://host:port/db`), a bare `"redis"` (`redis://localhost:6379/0`),
        `"sqlite"` or `"memory"`, or a store object.

        Without it, runs go to `HOLON_STORE` or the embedded `.holon/holon.db`.
        `enabled=False` keeps runs in memory only. The settings may also come as one
        mapping, as the reference DSL writes them:
        `.Persistence({"Enabled": True, "Store": "redis", "KeyPrefix": "deploy:"})`.
        """
        if isinstance(store, Mapping):
            try:
                store, key_prefix, enabled = persistence_settings(store)
            except ValueError as exc:
                raise self._fail(str(exc)) from None
        if store is not None and not isinstance(store, str) and not hasattr(store, "create_run"):
            raise self._fail(f".Persistence(store=...) takes a URL or a store, got {store!r}")
        if not isinstance(enabled, bool):
            raise self._fail(f".Persistence(enabled=...) must be True or False, got {enabled!r}")
        if not isinstance(key_prefix, str):
            raise self._fail(f".Persistence(key_prefix=...) must be a string, got {key_prefix!r}")
        return self._with(
            _persistence=PersistenceConfig(cast("str | Store | None", store), key_prefix, enabled)
        )

    def Defaults(self, retry: Retry | None = None, timeout: float | None = None) -> Workflow:
        """Policies for every step (and `ctx.Task`) that sets none of its own."""
        try:
            check_policies(retry, timeout, None, where=f"workflow {self._name!r} .Defaults()")
        except (TypeError, ValueError) as exc:
            raise self._fail(str(exc)) from None
        return self._with(_defaults=StepPolicy(fn=no_step, retry=retry, timeout=timeout))

    def Migrate(self, from_version: str, fn: StateMigration) -> Workflow:
        """How to upgrade the state of a run that started on `from_version`.

        `fn` takes the stored state (a dict) and returns the state for this definition
        (a dict or a State instance). A run of `from_version` met by this definition has
        its state upgraded, validated and checkpointed before it goes on.

        ```python
        v2 = v2.Migrate(v1.version, lambda old: {"items": [{"text": n} for n in old["notes"]]})
        ```
        """
        if not isinstance(from_version, str) or not from_version:
            raise self._fail(f".Migrate() needs the version it upgrades from, got {from_version!r}")
        if not callable(fn):
            raise self._fail(f".Migrate({from_version!r}, ...) takes a function of the state")
        if from_version in self._migrations:
            raise self._fail(f"has two .Migrate() calls from version {from_version!r}")
        migrations = types.MappingProxyType({**self._migrations, from_version: fn})
        return self._with(_migrations=migrations)

    def Compatible(self, *versions: str) -> Workflow:
        """Runs that ran on these earlier versions may continue on this one as they are.

        A run never moves to an older version. It moves to a newer one when the version
        it ran on is not served any more: a flow's run when the new graph still has its
        steps and its stored data validates (checked when it is picked up), an
        `.Execute()` run only when the new version declares it, with `.Migrate()` or
        here: its journal of recorded calls cannot be checked against new code.

        ```python
        v2 = v2.Compatible(v1.version)  # v2's function replays v1's journal unchanged
        ```
        """
        for version in versions:
            if not isinstance(version, str) or not version:
                raise self._fail(f".Compatible() takes version strings, got {version!r}")
        return self._with(_compatible=self._compatible | frozenset(versions))

    def takes_over(self, version: str) -> bool:
        """Whether runs that ran on `version` may move to this definition as declared
        (`.Migrate(version, ...)` or `.Compatible(version)`)."""
        return version in self._migrations or version in self._compatible

    def Agents(self, agents: Mapping[str, Any]) -> Workflow:
        """Agents the steps open as `await ctx.Agents.name` (or `ctx.Agents["name"]`),
        by name: each a factory called with no argument when a step opens a handle
        (returning an agent, see `holon.Agent`)."""
        if not isinstance(agents, Mapping) or not all(isinstance(k, str) for k in agents):
            raise self._fail(f".Agents() takes a dict of name -> agent factory, got {agents!r}")
        for name, factory in agents.items():
            if not callable(factory):
                raise self._fail(
                    f".Agents(): {name!r} must be a factory (a callable returning the agent), "
                    f"got {factory!r}; write {{{name!r}: lambda: agent}} to share one agent"
                )
        return self._with(_agents=types.MappingProxyType(dict(agents)))

    def Budget(
        self,
        budget: RunBudget | None = None,
        *,
        tokens: int | None = None,
        usd: float | None = None,
        requests: int | None = None,
    ) -> Workflow:
        """What each run's model requests may use (tokens, US dollars, requests); a run
        that reaches a limit pauses with reason `budget exhausted` before its next
        model request. `Run(input, budget=...)` sets another budget for one run."""
        try:
            chosen = RunBudget.of(
                budget if budget is not None else RunBudget(tokens, usd, requests)
            )
        except (TypeError, ValueError) as exc:
            raise self._fail(f".Budget(): {exc}") from None
        return self._with(_budget=chosen)

    def Limits(
        self,
        limits: SizeLimits | None = None,
        *,
        input: int | None = None,
        answer: int | None = None,
        event_payload: int | None = None,
        state_patch: int | None = None,
        step_output: int | None = None,
    ) -> Workflow:
        """Size limits (bytes of JSON) on what runs of this workflow accept; a value
        over its limit is refused with `ValueTooLarge` and nothing is stored. Fields
        not given keep their defaults (see `holon.Limits`)."""
        given = {
            "input": input,
            "answer": answer,
            "event_payload": event_payload,
            "state_patch": state_patch,
            "step_output": step_output,
        }
        base = limits if limits is not None else self._limits
        if not isinstance(base, SizeLimits):
            raise self._fail(f".Limits() takes a Limits object, got {base!r}")
        try:
            chosen = dataclasses.replace(base, **{k: v for k, v in given.items() if v is not None})
        except ValueError as exc:
            raise self._fail(f".Limits(): {exc}") from None
        return self._with(_limits=chosen)

    def Secrets(self, keyring: Keyring) -> Workflow:
        """The keys that seal this workflow's secrets (`SecretStr`, `SecretBytes`,
        fields marked `Secret()`) in its runs' records. Without this call they come from
        `HOLON_SECRET_KEYS` (see `holon.sealing`)."""
        if not isinstance(keyring, Keyring):
            raise self._fail(f".Secrets() takes a Keyring, got {keyring!r}")
        return self._with(_keyring=keyring)

    def Concurrency(self, max_running: int | None) -> Workflow:
        """At most `max_running` runs of this workflow execute at once, across every
        worker and runner on the store (None: no limit). The count is kept in the store
        (runs holding a live lease while running) and checked in the same atomic step
        that leases a run, so executors together never exceed it; runs beyond it stay
        queued until a place frees. Waiting runs hold no place. Not supported on a
        Redis Cluster."""
        if max_running is not None and (
            isinstance(max_running, bool) or not isinstance(max_running, int) or max_running < 1
        ):
            raise self._fail(
                f".Concurrency() takes a whole number of runs of at least 1 (or None), "
                f"got {max_running!r}"
            )
        return self._with(_max_running=max_running)

    # -- reading --------------------------------------------------------------------

    @property
    def max_running(self) -> int | None:
        """The most runs of this workflow executing at once on the store
        (`.Concurrency()`); None: no limit."""
        return self._max_running

    @property
    def size_limits(self) -> SizeLimits:
        """The size limits of runs of this workflow (`.Limits()`)."""
        return self._limits

    @property
    def name(self) -> str:
        return self._name

    @property
    def description(self) -> str:
        return self._description

    @property
    def input_model(self) -> type[BaseModel] | None:
        return self._input

    @property
    def state_model(self) -> type[BaseModel] | None:
        return self._state

    @property
    def steps(self) -> Mapping[str, StepSpec]:
        """The flow's steps by name (empty for an `.Execute()` workflow)."""
        return self._steps or types.MappingProxyType({})

    @property
    def execute_fn(self) -> StepFunction | None:
        return self._execute

    @property
    def persistence_config(self) -> PersistenceConfig:
        return self._persistence

    @property
    def default_retry(self) -> Retry | None:
        return self._defaults.retry

    @property
    def default_timeout(self) -> float | None:
        return self._defaults.timeout

    @property
    def agent_map(self) -> Mapping[str, Any]:
        return self._agents

    @property
    def run_budget(self) -> RunBudget | None:
        """The budget of each run (`.Budget(...)`), or None."""
        return self._budget

    @property
    def plan(self) -> FlowPlan:
        """What the engine reads at every step, worked out once (see `FlowPlan`)."""
        plan = self._plan
        if plan is None:
            direct = {}
            if self._defaults.retry is None and self._defaults.timeout is None:
                direct = {
                    name: spec
                    for name, spec in self.steps.items()
                    if spec.retry is None and spec.timeout is None
                }
            plan = FlowPlan(
                steps=self.steps,
                direct=direct,
                state_model=self._state,
                agents=self._agents,
                execute_fn=self._execute,
                rules=DataRules(
                    limits=self._limits,
                    keyring=self._keyring or Keyring.from_env(),
                    sealed_state=has_secrets(self._state),
                    redacted_state=redacted_fields(self._state) if self._state else None,
                ),
            )
            object.__setattr__(self, "_plan", plan)
        return plan

    @property
    def migrations(self) -> Mapping[str, StateMigration]:
        """State upgrades by the version they upgrade from (see `.Migrate()`)."""
        return self._migrations

    @property
    def version(self) -> str:
        """The explicit version, or a fingerprint of steps, known edges and schemas."""
        if self._version is not None:
            return self._version
        if self._fingerprint is None:
            # Computed once per built workflow: every Run() asks for it.
            object.__setattr__(self, "_fingerprint", self._compute_fingerprint())
        assert self._fingerprint is not None
        return self._fingerprint

    def _compute_fingerprint(self) -> str:
        shape = {
            "steps": {name: sorted(spec.edges) for name, spec in sorted(self.steps.items())},
            "execute": qualname(self._execute) if self._execute else None,
            "input": self._input.model_json_schema() if self._input else None,
            "state": self._state.model_json_schema() if self._state else None,
        }
        digest = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()
        return digest[:12]

    def check_runnable(self) -> None:
        """Raise unless the workflow has a Flow or an Execute function, and its plan can
        be made (keys of secrets from `HOLON_SECRET_KEYS` included): a runner finds out
        when it is made, not at its first step."""
        if self._steps is None and self._execute is None:
            raise self._fail("has neither .Flow() nor .Execute(); nothing to run")
        try:
            self.plan  # noqa: B018 - made and kept: it reads the environment's keys
        except SecretKeyError as exc:
            raise self._fail(str(exc)) from None

    def Mermaid(self) -> str:
        """The flow as a Mermaid flowchart, edges taken from return annotations."""
        return flow_to_mermaid(self.steps)

    def variant(
        self,
        *,
        name: str,
        version: str,
        steps: Mapping[str, StepFunction] | None = None,
        execute: StepFunction | None = None,
    ) -> Workflow:
        """A copy under another name and version, with the functions of some steps (or
        the `.Execute()` function) replaced and everything else kept: what a sandbox
        (`handle.Replay()`, `handle.Rerun()`) executes. Replaced steps run on the event
        loop and keep their policies."""
        specs = dict(self.steps)
        for step, fn in (steps or {}).items():
            if step not in specs:
                raise self._fail(f"variant(): {step!r} is not a step of the flow", step=step)
            specs[step] = dataclasses.replace(specs[step], fn=fn, in_thread=False)
        return self._with(
            _name=name,
            _version=version,
            _steps=types.MappingProxyType(specs) if self._steps is not None else None,
            _execute=execute if execute is not None else self._execute,
        )

    def __repr__(self) -> str:
        kind = "Flow" if self._steps is not None else "Execute" if self._execute else "empty"
        return f"Workflow({self._name!r}, version={self.version!r}, {kind})"

    def _check_model(self, call: str, model: Any) -> type[BaseModel]:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise self._fail(f".{call}() takes a pydantic model class, got {model!r}")
        return model

    # The snake_case twins, as real members a type checker sees (`snake_case_aliases`
    # checks that every PascalCase verb has one).
    input = Input
    state = State
    flow = Flow
    execute = Execute
    persistence = Persistence
    defaults = Defaults
    migrate = Migrate
    compatible = Compatible
    agents = Agents
    limits = Limits
    secrets = Secrets
    concurrency = Concurrency
    mermaid = Mermaid
    budget = Budget
