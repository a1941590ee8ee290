"""`ExecuteContext`: the `ctx` of an `.Execute(fn)` function, which journals its calls.

```python
async def research(ctx: ExecuteContext[Topic, Any]) -> dict:
    papers = await ctx.Task(fetch_papers, ctx.Input.topic)         # checkpointed
    notes = await ctx.Step("analyse", analyse(papers))             # named checkpoint
    arxiv, wiki = await ctx.Parallel(ctx.Task(search, "arxiv"), ctx.Task(search, "wiki"))
    ok = await ctx.WaitFor(HumanApproval(approvers=["editor"]))    # durable halt
    return {"notes": notes, "published": ok}
```

Every `Task`, `Step` and `WaitFor` gets a position, in the order the calls are made
(`ctx.Task()` takes its position when called, before it is awaited, so the positions of
a `Parallel` do not depend on which task finishes first). A completed call is journaled
at its position with its result. When the run resumes, the function runs again from the
top and each journaled call returns its recorded result without running; the first
call with no record runs for real. A call whose name differs from the one journaled at
its position fails the run with `NonDeterminismError`: the code changed under a run in
flight, and holon never hands one step's result to another.

`ctx.State` is key-value state, replayed with the journal: each journal entry carries
the state changes made before it, so state is rebuilt exactly as it was, even when the
code between steps is not deterministic.
"""

from __future__ import annotations

import contextvars
import inspect
import warnings
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, overload

import anyio

from holon._naming import snake_case_aliases
from holon.definition.directives import Child as ChildDirective
from holon.definition.directives import Named, WaitCondition
from holon.definition.policies import Retry, check_policies, runs_in_thread
from holon.errors import HolonError, NonDeterminismError
from holon.runtime.compensation import undo_reference
from holon.runtime.context import Context
from holon.runtime.execution import EXECUTE_STEP, Execution
from holon.runtime.task_state import TaskState

__all__ = ["Driver", "ExecuteContext", "Suspended", "TaskCall", "current_step"]

InputT = TypeVar("InputT")
StateT = TypeVar("StateT")
T = TypeVar("T")
T1 = TypeVar("T1")
T2 = TypeVar("T2")
T3 = TypeVar("T3")
T4 = TypeVar("T4")

_current_step: contextvars.ContextVar[Context[Any, Any] | None] = contextvars.ContextVar(
    "holon_current_step", default=None
)


class Suspended(BaseException):
    """Unwinds the workflow function when the run halts (a wait or a pause). A
    BaseException, so a user's `except Exception` does not swallow it."""


class Driver(Protocol):
    """What runs the calls an `ExecuteContext` journals (`holon.runtime.imperative`)."""

    async def run_task(self, ctx: ExecuteContext[Any, Any], call: TaskCall[Any]) -> Any: ...

    async def wait_for(
        self,
        ctx: ExecuteContext[Any, Any],
        condition: WaitCondition,
        position: int,
        name: str,
        occurrence: int,
    ) -> Any: ...

    async def child(
        self,
        ctx: ExecuteContext[Any, Any],
        child: ChildDirective,
        position: int,
        name: str,
        occurrence: int,
    ) -> Any: ...


@dataclass(frozen=True)
class _Entry:
    name: str
    value: Any
    state_set: dict[str, Any]
    state_unset: list[str]


@dataclass
class TaskCall(Generic[T]):
    """A checkpointed call made by `ctx.Task(...)`; it runs (or replays) when awaited."""

    ctx: ExecuteContext[Any, Any]
    position: int
    name: str
    base: str
    occurrence: int
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    retry: Retry | None = None
    timeout: float | None = None
    undo: str | None = None
    in_thread: bool = False
    """Call `fn` in a worker thread (a synchronous `def` function)."""
    external: bool = False
    """Marked `external=True`: a replay answers it from its cassette."""
    awaited: bool = field(default=False, init=False)

    def __await__(self) -> Generator[Any, None, T]:
        if self.awaited:
            raise RuntimeError(f"task {self.name!r} was awaited twice")
        self.awaited = True
        return self.ctx._run(self).__await__()

    def __del__(self) -> None:
        # A forgotten `await` would otherwise do nothing, silently: warn as Python does
        # for a coroutine never awaited.
        if not self.awaited:
            warnings.warn(
                f"ctx.Task({self.base}) at position {self.position} of run "
                f"{self.ctx.RunId!r} was never awaited, so it never ran; write "
                f"`await ctx.Task(...)` or pass it to ctx.Parallel(...)",
                RuntimeWarning,
                stacklevel=2,
            )


@snake_case_aliases
class ExecuteContext(Generic[InputT, StateT]):
    """The `ctx` an `.Execute()` function receives.

    Attributes:
        Input: the run's input (an instance of the Input model, if any).
        RunId: the run's id.
        State: durable key-value state (`get`, `set`, `delete`, `clear`).
        Agents: the agents given to `.Agents({...})`.
    """

    def __init__(self, driver: Driver, execution: Execution) -> None:
        record = execution.record
        workflow = execution.workflow
        self._driver = driver
        self._execution = execution
        self.RunId = record.run_id
        self.Input: InputT = execution.input_value
        self.Agents = workflow.agent_map
        self.State = TaskState({}, workflow.state_model, record.run_id, workflow.plan.rules.keyring)
        if workflow.state_model is not None:
            self.State.apply(workflow.state_model().model_dump(mode="json"), [])
        self._journal = _journal(record.results)
        self._positions = 0
        self._occurrences: dict[str, int] = {}
        self._live = False
        self.pending: dict[str, Any] = {}
        """Journal entries to write with the next checkpoint (a consumed decision)."""
        self.logs: list[dict[str, Any]] = []
        """`Log()` entries to write with the next checkpoint."""
        self.last_step: str | None = None
        self.emitted = False
        """Set when the function emitted outside a task (`Emit`)."""

    # -- what a running task sees ------------------------------------------------------

    @property
    def IdempotencyKey(self) -> str:
        """The key of the task running now: stable across its retries and restarts."""
        return _running("IdempotencyKey").IdempotencyKey

    @property
    def Attempt(self) -> int:
        """The attempt number of the task running now."""
        return _running("Attempt").Attempt

    @property
    def StepName(self) -> str:
        """The name of the task running now."""
        return _running("StepName").StepName

    def Log(self, message: str, **data: Any) -> None:
        """Record a message in the timeline, with the next checkpoint."""
        self.logs.append({"message": str(message), **data})

    def Emit(self, kind: str, data: Any = None) -> None:
        """Send progress to everyone watching the run (`RunHandle.Watch()`), now,
        without checkpointing it."""
        if not isinstance(kind, str) or not kind:
            raise TypeError(f"ctx.Emit() needs a kind (a non-empty string), got {kind!r}")
        services = self._execution.services
        if services is not None:
            running = current_step()
            services.emit(running.StepName if running else self.last_step, kind, data)
            if running is not None:  # published before the task's checkpoint
                running.emitted = running.needs_finish = True
            else:  # published before the run's next checkpoint
                self.emitted = True

    async def Agent(
        self,
        name: str,
        input: Any = None,
        *,
        retry: Retry | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Run agent `name` on `input` as one checkpointed step (`agent:<name>`) and
        return its output: recorded, it is not run again on replay.

        The agent is the workflow's `.Agents({...})` entry of that name, else the one
        registered with the Steward (`Steward.RegisterAgent`) whose runner or worker
        executes the run. A durable agent also checkpoints its model requests and tool
        calls inside the step (see `holon.agents.PydanticAgent`).
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"ctx.Agent() needs an agent name, got {name!r}")
        return await self.Task(
            _run_agent, name, input, retry=retry, timeout=timeout, name=f"agent:{name}"
        )

    # -- checkpointed calls ------------------------------------------------------------

    def _take_position(self, base: str) -> tuple[int, str, int]:
        position = self._positions
        self._positions += 1
        occurrence = self._occurrences.get(base, 0) + 1
        self._occurrences[base] = occurrence
        name = base if occurrence == 1 else f"{base}#{occurrence}"
        return position, name, occurrence

    @overload
    def Task(  # an async function: its awaited result
        self,
        fn: Callable[..., Awaitable[T]],
        /,
        *args: Any,
        retry: Retry | None = None,
        timeout: float | None = None,
        compensate: Callable[..., Any] | None = None,
        name: str | None = None,
        external: bool = False,
        **kwargs: Any,
    ) -> TaskCall[T]: ...

    @overload
    def Task(
        self,
        fn: Callable[..., T],
        /,
        *args: Any,
        retry: Retry | None = None,
        timeout: float | None = None,
        compensate: Callable[..., Any] | None = None,
        name: str | None = None,
        external: bool = False,
        **kwargs: Any,
    ) -> TaskCall[T]: ...

    def Task(
        self,
        fn: Callable[..., Any],
        /,
        *args: Any,
        retry: Retry | None = None,
        timeout: float | None = None,
        compensate: Callable[..., Any] | None = None,
        name: str | None = None,
        external: bool = False,
        **kwargs: Any,
    ) -> TaskCall[Any]:
        """A checkpointed call of `fn(*args, **kwargs)`, named after the function (with
        `#2`, `#3`... when called again). Await it, or pass it to `ctx.Parallel`.

        `retry=`, `timeout=` and `compensate=` are the step policies; a compensation
        must be a module-level function `undo(ctx, output)` so it can be found after a
        restart. `external=True` marks a call to a model or another system: a replay
        (`handle.Replay()`) answers it from the recorded run instead of calling `fn`. The
        names `retry`, `timeout`, `compensate`, `name` and `external` are holon's, not
        passed to `fn`.
        """
        if not callable(fn):
            raise TypeError(f"ctx.Task() takes a function, got {fn!r}")
        base = name or getattr(fn, "__name__", None) or "task"
        check_policies(retry, timeout, compensate, where=f"ctx.Task({base})")
        undo = undo_reference(compensate) if compensate is not None else None
        position, step_name, occurrence = self._take_position(base)
        return TaskCall(
            self,
            position,
            step_name,
            base,
            occurrence,
            fn,
            args,
            kwargs,
            retry,
            timeout,
            undo,
            in_thread=runs_in_thread(fn),
            external=external,
        )

    @overload
    async def Step(
        self,
        name: str,
        work: Awaitable[T],
        *,
        retry: Retry | None = None,
        timeout: float | None = None,
    ) -> T: ...

    @overload
    async def Step(  # an async function: its awaited result
        self,
        name: str,
        work: Callable[[], Awaitable[T]],
        *,
        retry: Retry | None = None,
        timeout: float | None = None,
    ) -> T: ...

    @overload
    async def Step(
        self,
        name: str,
        work: Callable[[], T],
        *,
        retry: Retry | None = None,
        timeout: float | None = None,
    ) -> T: ...

    async def Step(
        self,
        name: str,
        work: Awaitable[Any] | Callable[[], Any],
        *,
        retry: Retry | None = None,
        timeout: float | None = None,
    ) -> Any:
        """A checkpoint with an explicit name around an awaitable or a callable.

        When the step is already recorded, its result is returned and an awaitable
        passed in is closed without running.
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"ctx.Step() needs a name, got {name!r}")
        if retry is not None and not callable(work):
            raise TypeError(
                f"ctx.Step({name!r}): retry= needs a callable (an awaitable can "
                "be awaited only once)"
            )
        position, step_name, occurrence = self._take_position(name)
        call: TaskCall[Any] = TaskCall(
            self,
            position,
            step_name,
            name,
            occurrence,
            work if callable(work) else _already(work),
            (),
            {},
            retry,
            timeout,
            in_thread=callable(work) and runs_in_thread(work),
        )
        try:
            return await call
        finally:
            if not callable(work) and inspect.iscoroutine(work):
                work.close()  # recorded, or failed before awaiting it: never "never awaited"

    @overload
    async def Parallel(self, a: TaskCall[T1], /) -> tuple[T1]: ...

    @overload
    async def Parallel(self, a: TaskCall[T1], b: TaskCall[T2], /) -> tuple[T1, T2]: ...

    @overload
    async def Parallel(
        self, a: TaskCall[T1], b: TaskCall[T2], c: TaskCall[T3], /
    ) -> tuple[T1, T2, T3]: ...

    @overload
    async def Parallel(
        self, a: TaskCall[T1], b: TaskCall[T2], c: TaskCall[T3], d: TaskCall[T4], /
    ) -> tuple[T1, T2, T3, T4]: ...

    @overload
    async def Parallel(self, *calls: TaskCall[T]) -> tuple[T, ...]: ...

    async def Parallel(self, *calls: TaskCall[Any]) -> tuple[Any, ...]:
        """Await tasks concurrently; each result is checkpointed as it finishes.
        Returns the results as a tuple, in the order given (typed one by one for up to
        four tasks). The first failure cancels the rest."""
        for call in calls:
            if not isinstance(call, TaskCall):
                raise TypeError(f"ctx.Parallel() takes ctx.Task(...) calls, got {call!r}")
        results: list[Any] = [None] * len(calls)
        for call in calls:
            if call.awaited:
                raise RuntimeError(f"task {call.name!r} was awaited twice")
            # Each is awaited below; a sibling's failure may cancel one before it starts.
            call.awaited = True

        async def one(index: int, call: TaskCall[Any]) -> None:
            results[index] = await call.ctx._run(call)

        async with anyio.create_task_group() as group:
            for index, call in enumerate(calls):
                group.start_soon(one, index, call)
        return tuple(results)

    async def WaitFor(self, condition: WaitCondition) -> Any:
        """Halt the run durably until `condition` is met, and return the decision:
        for `HumanApproval`, True when approved and False when rejected or timed out;
        for other conditions, the answer, event payload or timer record."""
        if not isinstance(condition, WaitCondition):
            raise TypeError(f"ctx.WaitFor() takes a wait condition, got {condition!r}")
        position, name, occurrence = self._take_position(f"wait_for_{condition.kind}")
        recorded = self._replay(position, name)
        if recorded is not _MISSING:
            return recorded
        return await self._driver.wait_for(self, condition, position, name, occurrence)

    async def Child(self, workflow: Named | str, input: Any = None) -> Any:
        """Run `workflow` (a `Workflow`, or the name of one this process serves) as a
        child run with `input`, and return its output once it completed.

        The child is a durable run of its own; this run waits for it holding nothing,
        as for `WaitFor`. A child that ends otherwise raises `ChildFailed` here (catch
        it to go on); stopping this run stops the child.
        """
        child = ChildDirective(workflow, input, EXECUTE_STEP, on_failure=EXECUTE_STEP)
        position, name, occurrence = self._take_position(f"child:{child.workflow_name}")
        recorded = self._replay(position, name)
        if recorded is not _MISSING:
            return recorded
        return await self._driver.child(self, child, position, name, occurrence)

    # -- replay ------------------------------------------------------------------------

    def _replay(self, position: int, name: str) -> Any:
        entry = self._journal.get(position)
        if entry is None:
            if not self._live:
                self._live = True
                self.State.rebase(self._execution.record.body.state)
            return _MISSING
        if entry.name != name:
            raise NonDeterminismError(
                f"run {self.RunId!r}: at position {position} the journal records step "
                f"{entry.name!r}, but the code now asks for {name!r}; the workflow's code "
                "changed under a run in flight",
                run_id=self.RunId,
                step=name,
                position=position,
                recorded=entry.name,
                requested=name,
            )
        self.State.apply(entry.state_set, entry.state_unset)
        return entry.value

    async def _run(self, call: TaskCall[T]) -> T:
        recorded = self._replay(call.position, call.name)
        if recorded is not _MISSING:
            return recorded  # type: ignore[no-any-return]
        return await self._driver.run_task(self, call)  # type: ignore[no-any-return]

    # The snake_case twins, as real members a type checker sees (`snake_case_aliases`
    # checks that every PascalCase verb has one).
    idempotency_key = IdempotencyKey
    attempt = Attempt
    step_name = StepName
    log = Log
    task = Task
    step = Step
    parallel = Parallel
    wait_for = WaitFor
    child = Child
    emit = Emit
    agent = Agent

    @property
    def input(self) -> InputT:
        """`Input`."""
        return self.Input

    @property
    def run_id(self) -> str:
        """`RunId`."""
        return self.RunId

    @property
    def state(self) -> TaskState:
        """`State`."""
        return self.State

    @property
    def agents(self) -> Mapping[str, Any]:
        """`Agents`."""
        return self.Agents


class _Missing:
    pass


_MISSING: Any = _Missing()


def _already(awaitable: Awaitable[T]) -> Callable[[], Awaitable[T]]:
    def give() -> Awaitable[T]:
        return awaitable

    return give


def _running(what: str) -> Context[Any, Any]:
    ctx = _current_step.get()
    if ctx is None:
        raise HolonError(
            f"ctx.{what} belongs to the task running now; read it inside a "
            "function run by ctx.Task(...) or ctx.Step(...)"
        )
    return ctx


async def _run_agent(name: str, input: Any) -> Any:
    """The body of `ctx.Agent(name, input)`: a handle opened, run and closed in the
    task's step."""
    ctx = _running("Agent")
    async with await ctx.Agents.open(name) as agent:
        return await agent.Run(input)


def current_step() -> Context[Any, Any] | None:
    """The context of the `.Execute()` task running now, or None."""
    return _current_step.get()


def _journal(results: Mapping[str, Any]) -> dict[int, _Entry]:
    journal: dict[int, _Entry] = {}
    for name, entry in results.items():
        if isinstance(entry, dict) and isinstance(entry.get("at"), int):
            state = entry.get("state") or {}
            journal[entry["at"]] = _Entry(
                name, entry.get("value"), state.get("set", {}), state.get("unset", [])
            )
    return journal
