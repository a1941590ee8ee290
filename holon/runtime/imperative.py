"""`.Execute(fn)`: the imperative model, replayed from the top on resume.

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

import dataclasses
import inspect
import time
import warnings
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, overload

import anyio
from pydantic import BaseModel

from holon._json import digest, to_json_value
from holon._naming import snake_case_aliases
from holon.definition.directives import Wait, WaitCondition
from holon.definition.policies import Retry, check_policies, runs_in_thread
from holon.errors import HolonError, NonDeterminismError
from holon.runtime.attempts import Attempts
from holon.runtime.cassette import active as active_cassette
from holon.runtime.compensation import undo_reference
from holon.runtime.context import FLUSH_LIMIT
from holon.runtime.execution import EXECUTE_STEP, Execution, idempotency_key, wants
from holon.runtime.running_task import current_step, invoke, run_agent, running
from holon.runtime.suspension import Suspender
from holon.runtime.task_state import TaskState
from holon.runtime.transitions import Transitions
from holon.sealing import redact
from holon.stores.base import Compensation, NewEvent, RunStatus, evolve

__all__ = ["ExecuteContext", "Imperative", "TaskCall", "TaskState", "current_step"]

InputT = TypeVar("InputT")
StateT = TypeVar("StateT")
T = TypeVar("T")
T1 = TypeVar("T1")
T2 = TypeVar("T2")
T3 = TypeVar("T3")
T4 = TypeVar("T4")


class _Suspended(BaseException):
    """Unwinds the workflow function when the run halts (a wait or a pause). A
    BaseException, so a user's `except Exception` does not swallow it."""


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

    def __init__(self, driver: Imperative, execution: Execution) -> None:
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
        return running("IdempotencyKey").IdempotencyKey

    @property
    def Attempt(self) -> int:
        """The attempt number of the task running now."""
        return running("Attempt").Attempt

    @property
    def StepName(self) -> str:
        """The name of the task running now."""
        return running("StepName").StepName

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
            run_agent, name, input, retry=retry, timeout=timeout, name=f"agent:{name}"
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


def _journal(results: Mapping[str, Any]) -> dict[int, _Entry]:
    journal: dict[int, _Entry] = {}
    for name, entry in results.items():
        if isinstance(entry, dict) and isinstance(entry.get("at"), int):
            state = entry.get("state") or {}
            journal[entry["at"]] = _Entry(
                name, entry.get("value"), state.get("set", {}), state.get("unset", [])
            )
    return journal


class Imperative:
    """Runs `.Execute()` workflows."""

    def __init__(self, transitions: Transitions, attempts: Attempts, suspender: Suspender) -> None:
        self.transitions = transitions
        self.attempts = attempts
        self.suspender = suspender

    async def run(self, execution: Execution) -> None:
        """Run the workflow function from the top until it returns, fails or halts."""
        transitions = self.transitions
        fn = execution.workflow.execute_fn
        assert fn is not None
        ctx: ExecuteContext[Any, Any] = ExecuteContext(self, execution)
        error: BaseException | None = None
        value: Any = None
        try:
            value = fn(ctx)
            if inspect.isawaitable(value):
                value = await value
        except _Suspended:
            return
        except Exception as exc:
            error = exc
        if error is not None:
            await transitions.fail(execution, ctx.last_step or EXECUTE_STEP, error)
            return
        try:
            output = to_json_value(
                value,
                what="result",
                run_id=execution.run_id,
                step=EXECUTE_STEP,
                keyring=execution.plan.rules.keyring,
            )
            execution.plan.rules.limits.check(
                "step_output", output, what="the result of the run", step=EXECUTE_STEP
            )
        except HolonError as exc:
            await transitions.fail(execution, EXECUTE_STEP, exc)
            return
        if ctx.emitted and execution.services is not None:
            with anyio.move_on_after(FLUSH_LIMIT):
                await execution.services.flush()  # watchers elsewhere get it before the end
        async with execution.lock:
            await self._checkpoint(
                execution,
                ctx,
                RunStatus.COMPLETED,
                {},
                output=output,
                events=[transitions.event("completed", None, output_digest=digest(output))],
            )

    async def run_task(self, ctx: ExecuteContext[Any, Any], call: TaskCall[Any]) -> Any:
        transitions = self.transitions
        execution = ctx._execution
        workflow = execution.workflow
        if wants(execution.control, "pause"):
            async with execution.lock:
                await self._checkpoint(
                    execution,
                    ctx,
                    RunStatus.PAUSED,
                    {},
                    events=[
                        transitions.event(
                            "paused",
                            call.name,
                            by=execution.control.by if execution.control else None,
                        )
                    ],
                )
            raise _Suspended()
        if execution.hand_back:
            async with execution.lock:
                event = transitions.event("handed_back", call.name, owner=transitions.owner)
                await self._checkpoint(
                    execution, ctx, RunStatus.QUEUED, {}, events=[event], clear_control=False
                )
            raise _Suspended()
        if call.external and (cassette := active_cassette()) is not None:
            recorded = cassette.play(call.name)  # a replay: never the real call
            call = dataclasses.replace(call, fn=lambda *a, **k: recorded, in_thread=False)
            call.awaited = True  # the copy stands in for the call being awaited
        key = idempotency_key(execution.run_id, call.base, call.occurrence)
        ctx.last_step = call.name
        started = time.perf_counter()
        outcome = await self.attempts.run(
            execution,
            call.name,
            lambda step_ctx: invoke(call.fn, call.args, call.kwargs, call.in_thread, step_ctx),
            lambda attempt: execution.context(call.name, attempt, key=key),
            retry=call.retry or workflow.default_retry,
            timeout=call.timeout if call.timeout is not None else workflow.default_timeout,
            durable=False,
            in_thread=False,  # `invoke` puts the task's function in a thread itself
        )
        if outcome.error is not None:
            raise outcome.error
        value = to_json_value(
            outcome.value,
            what="result",
            run_id=execution.run_id,
            step=call.name,
            keyring=execution.plan.rules.keyring,
        )
        execution.plan.rules.limits.check(
            "step_output", value, what=f"the result of task {call.name!r}", step=call.name
        )
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        compensation = (
            None
            if call.undo is None
            else Compensation(step=call.name, idempotency_key=key, output=value, undo=call.undo)
        )
        async with execution.lock:
            state_set, state_unset = ctx.State.take_pending()
            entry = {
                "at": call.position,
                "value": value,
                "state": {"set": state_set, "unset": state_unset},
            }
            await self._checkpoint(
                execution,
                ctx,
                RunStatus.RUNNING,
                {call.name: entry},
                compensation=compensation,
                events=[
                    transitions.event(
                        "step_completed",
                        call.name,
                        position=call.position,
                        duration_ms=duration_ms,
                        output_digest=digest(value),
                        attempt=outcome.ctx.Attempt if outcome.ctx else 1,
                    )
                ],
            )
        return outcome.value if isinstance(outcome.value, BaseModel) else value

    async def wait_for(
        self,
        ctx: ExecuteContext[Any, Any],
        condition: WaitCondition,
        position: int,
        name: str,
        occurrence: int,
    ) -> Any:
        execution = ctx._execution
        body = execution.body
        wait_id = f"{name}#{occurrence}"
        closed = body.closed_wait
        if body.wait is None and closed is not None and closed.wait_id == wait_id:
            value = _decision_value(condition, body.decision)
            state_set, state_unset = ctx.State.take_pending()
            ctx.pending[name] = {
                "at": position,
                "value": value,
                "state": {"set": state_set, "unset": state_unset},
            }
            return value
        directive = Wait(condition, EXECUTE_STEP, on_reject=EXECUTE_STEP, on_timeout=EXECUTE_STEP)
        checkpoint = self.suspender.checkpoint(
            execution,
            name,
            directive,
            occurrence,
            events=[],
            results=self._take_pending(ctx),
            update={"state": ctx.State.as_dict()},
        )
        async with execution.lock:
            await self.transitions.write(execution, checkpoint)
        raise _Suspended()

    def _take_pending(self, ctx: ExecuteContext[Any, Any]) -> dict[str, Any]:
        pending, ctx.pending = ctx.pending, {}
        return pending

    async def _checkpoint(
        self,
        execution: Execution,
        ctx: ExecuteContext[Any, Any],
        status: RunStatus,
        results: dict[str, Any],
        *,
        events: list[NewEvent],
        output: Any = None,
        compensation: Compensation | None = None,
        clear_control: bool = True,
    ) -> None:
        transitions = self.transitions
        body = execution.body
        update: dict[str, Any] = {"state": ctx.State.as_dict(), "attempt": 1, "deaths": 0}
        if compensation is not None:
            update["compensations"] = [*body.compensations, compensation]
        if status == RunStatus.COMPLETED:
            update.update(output=output, cursor=None)
        logs = [
            transitions.event(
                "log",
                ctx.last_step,
                **to_json_value(
                    redact(entry), what="log entry", run_id=ctx.RunId, step=ctx.last_step
                ),
            )
            for entry in ctx.logs
        ]
        ctx.logs.clear()
        terminal = status != RunStatus.RUNNING
        await transitions.commit(
            execution,
            status,
            evolve(body, update),
            results={**self._take_pending(ctx), **results},
            events=[*logs, *events],
            release=terminal,
            clear_control=terminal and clear_control,
        )


def _decision_value(condition: WaitCondition, decision: Any) -> Any:
    """What `ctx.WaitFor(condition)` returns (docs/execute.md): an approval's verdict,
    an event's payload, an answer, a timer's record; None after an event's or an
    answer's timeout."""
    if condition.kind == "approval" and isinstance(decision, dict):
        return bool(decision.get("approved"))
    timed_out = isinstance(decision, dict) and decision.get("timed_out") is True
    if condition.kind == "event":
        return None if timed_out or not isinstance(decision, dict) else decision.get("payload")
    if condition.kind == "input" and timed_out:
        return None
    return decision
