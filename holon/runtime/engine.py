"""The engine: runs one leased run from its last checkpoint to its next halt.

A halt is `completed`, `failed`, `stopped`, `paused` or `waiting`, or the loss of the
lease (another executor took the run over; this one must write nothing more). Each step
ends in exactly one `commit`: the step's result, the state patch, the next cursor and
the timeline events for both, guarded by the fencing token. Leases are kept by
`holon.runtime.leases`, which also learns of operators' stop requests while a step runs; waits
are opened by `holon.runtime.suspension`.
"""

from __future__ import annotations

import inspect
import logging
import time
import traceback
from collections.abc import Awaitable, Mapping
from functools import partial
from typing import Any

import anyio

from holon._json import digest, to_json_value
from holon.clock import Clock
from holon.definition.builder import StepSpec, Workflow
from holon.definition.directives import END, Marker, Next, Parallel, Wait
from holon.errors import (
    CorruptRecord,
    HolonError,
    SeqConflict,
    StaleLease,
    StepOutputError,
    UnknownStepError,
)
from holon.runtime.attempts import Attempts
from holon.runtime.compensation import Compensator
from holon.runtime.context import Context
from holon.runtime.execution import (
    EXECUTE_STEP,
    Execution,
    LeaseLost,
    idempotency_key,
    unknown_step,
)
from holon.runtime.fan_out import FanOut
from holon.runtime.imperative import Imperative
from holon.runtime.leases import LeaseKeeper
from holon.runtime.suspension import Suspender
from holon.runtime.timers import Timers
from holon.runtime.versioning import adopt
from holon.stores.base import (
    Checkpoint,
    Committed,
    Compensation,
    Cursor,
    ErrorInfo,
    LeaseGrant,
    NewEvent,
    RunBody,
    RunStatus,
    Store,
    evolve,
)

__all__ = ["Engine"]

_TURN = 0.001
"""Longest a run keeps the event loop to itself between step boundaries, in seconds:
short enough for heartbeats and operators, long enough that yielding costs little."""

_END = END.value  # compared with at every step: an enum's `.value` is a property call

logger = logging.getLogger("holon.engine")

_Next = tuple[Awaitable[Committed], RunBody, dict[str, Any]]
"""A step's commit on to the next step, under way: the store's write, and the body and
results the run has once the write is confirmed."""


class Engine:
    """Executes runs of the given workflows against one store."""

    def __init__(
        self,
        store: Store,
        workflows: Mapping[str, Workflow],
        *,
        owner: str,
        lease_ttl: float,
        clock: Clock,
    ) -> None:
        self.store = store
        self.workflows = workflows
        self.owner = owner
        self.lease_ttl = lease_ttl
        self.clock = clock
        self.executions: dict[str, Execution] = {}
        self._cursors: dict[str, Cursor] = {}
        self.fan_out = FanOut(self)
        self.leases = LeaseKeeper(self)
        self.suspender = Suspender(self)
        self.timers = Timers(self)
        self.attempts = Attempts(self)
        self.compensator = Compensator(self)
        self.imperative = Imperative(self)

    # -- entry ------------------------------------------------------------------------

    async def execute(self, grant: LeaseGrant) -> None:
        """Run a leased run until it halts. Never raises for the run's own failures."""
        try:
            record = grant.record or await self.store.load_run(grant.run_id)
        except CorruptRecord as exc:
            await self._quarantine(grant, exc)
            return
        except anyio.get_cancelled_exc_class():
            # Closing before the run started: let it go now rather than leave it leased
            # until the lease runs out.
            with anyio.CancelScope(shield=True):
                await self.store.release_lease(grant.run_id, grant.token)
            raise
        if record is None:
            return
        workflow = self.workflows.get(record.workflow)
        if workflow is None:
            await self.store.release_lease(grant.run_id, grant.token)
            return
        execution = Execution(
            run_id=grant.run_id,
            token=grant.token,
            workflow=workflow,
            record=record,
            control=record.control,
            input_value=record.input,  # parsed by `adopt`, which pauses a misfit run
        )
        self.executions[grant.run_id] = execution
        try:
            try:
                await self._drive(execution, recovered=grant.recovered)
            except LeaseLost:
                logger.warning("run %s: lease lost; this executor stops", grant.run_id)
        finally:
            self.executions.pop(grant.run_id, None)
            if execution.record.lease is not None or execution.record.status == RunStatus.RUNNING:
                with anyio.CancelScope(shield=True):
                    await self.store.release_lease(grant.run_id, grant.token)

    async def _quarantine(self, grant: LeaseGrant, exc: CorruptRecord) -> None:
        logger.error("run %s: %s; marking it failed", grant.run_id, exc)
        await self.store.quarantine(grant.run_id, str(exc), self.clock.now())

    # -- the loop -----------------------------------------------------------------------

    async def _drive(self, execution: Execution, *, recovered: bool) -> None:
        if not await adopt(self, execution):
            return
        # One cancel scope for everything the execution runs: an operator's Stop or a
        # lost lease cancels whichever step, branch, backoff or commit is under way.
        # A commit cut short is a crash at that point: the store applied it whole or
        # not at all, and the run's next executor (or Stop) takes it from there.
        with execution.cancellable() as scope:
            await self._advance(execution, recovered=recovered)
        if execution.stopped(scope):
            await self.halt(execution, RunStatus.STOPPED, "stopped")

    async def _advance(self, execution: Execution, *, recovered: bool) -> None:
        record = execution.record
        if record.status == RunStatus.WAITING:
            # Handed over because its wake-up time passed: a timer, timeout or escalation.
            await self.timers.wake(execution)
            if execution.record.status != RunStatus.RUNNING:
                return
            record = execution.record
        elif record.status != RunStatus.RUNNING:
            return
        if record.body.compensating:
            await self.compensator.run(execution)
            return
        if recovered:
            # A crash during a backoff interrupted no attempt: the count stays.
            in_backoff = record.body.retry_at is not None
            body = record.body.model_copy(
                update={"attempt": record.body.attempt + (0 if in_backoff else 1)}
            )
            step = record.body.cursor.step if record.body.cursor else None
            await self.commit(
                execution,
                RunStatus.RUNNING,
                body,
                events=[
                    self.event("recovered", step, attempt=body.attempt, owner=self.owner),
                ],
            )
        # Step boundaries let other tasks in (heartbeat, Pause and Stop, readers) at
        # least every _TURN seconds, even when the steps and the store never yield. A
        # store whose every commit waits on the network gives them a turn at each step.
        make_room = not self.store.commit_waits
        turn_ends = time.perf_counter() + _TURN
        while True:
            if make_room and time.perf_counter() >= turn_ends:
                await anyio.lowlevel.checkpoint()
                turn_ends = time.perf_counter() + _TURN
            control = execution.control  # `wants(...)` written out: every step passes here
            if execution.stop_requested or (control is not None and control.kind == "stop"):
                await self.halt(execution, RunStatus.STOPPED, "stopped")
                return
            if control is not None and control.kind == "pause":
                await self.halt(execution, RunStatus.PAUSED, "paused")
                return
            if execution.plan.execute_fn is not None:
                await self.imperative.run(execution)
                return
            cursor = execution.body.cursor
            if cursor is None:
                await self.fail(execution, None, HolonError("run has no cursor"))
                return
            if cursor.join is not None:  # a fan-out under way
                await self.fan_out.run(execution, cursor)
            else:
                stepping = self._step(execution, cursor.step)
                if stepping.__class__ is not tuple:
                    # A step that awaits, or has retries or a deadline, or ends otherwise
                    # than by naming the next step: finished by a coroutine.
                    stepping = await stepping  # type: ignore[misc]
                if stepping.__class__ is tuple:
                    # On to the next step, the usual case: the commit is awaited and
                    # applied here rather than in a coroutine of its own per step.
                    writing, body, results = stepping
                    del stepping
                    try:
                        committed = await writing
                    except (StaleLease, SeqConflict) as exc:
                        raise self._refused(execution, exc) from exc
                    execution.confirm(committed, RunStatus.RUNNING, body, results, release=False)
            if execution.status != RunStatus.RUNNING:
                return

    async def halt(self, execution: Execution, status: RunStatus, kind: str) -> None:
        record = execution.record
        by = execution.control.by if execution.control else None
        step = record.body.cursor.step if record.body.cursor else None
        await self.finish(execution, status, record.body, self.event(kind, step, by=by))

    def _step(self, execution: Execution, name: str) -> _Next | Awaitable[Any]:
        """Run step `name` and start its commit. A step called directly (one attempt,
        no deadline, the usual case) that names the next step gives back what `_advance`
        awaits and applies (see `_transition`). Anything else gives back the awaitable
        that finishes the step, whose result is that again or nothing to apply."""
        started = time.perf_counter()
        spec = execution.plan.direct.get(name)
        if spec is None or execution.body.retry_at is not None:
            return self._step_with_policies(execution, name, started)
        ctx = self.context(execution, name)
        try:
            value = spec.fn(ctx)
        except Exception as exc:
            return self.fail(execution, name, exc)
        if value.__class__ is not str and inspect.isawaitable(value):
            return self._finish_async_step(execution, spec, ctx, value, started)
        return self._end_step(execution, spec, ctx, value, started)

    async def _finish_async_step(
        self,
        execution: Execution,
        spec: StepSpec,
        ctx: Context[Any, Any],
        pending: Awaitable[Any],
        started: float,
    ) -> _Next | None:
        try:
            value = await pending
        except Exception as exc:
            await self.fail(execution, spec.name, exc)
            return None
        return await self._next_or_done(self._end_step(execution, spec, ctx, value, started))

    async def _step_with_policies(
        self, execution: Execution, name: str, started: float
    ) -> _Next | None:
        """A step with retries, a deadline or a backoff under way: run by `attempts`."""
        workflow = execution.workflow
        spec = workflow.steps.get(name)
        if spec is None:
            await self.fail(execution, name, unknown_step(workflow, name, name, "cursor"))
            return None
        outcome = await self.attempts.run(
            execution,
            name,
            spec.fn,
            partial(self.context, execution, name),
            retry=spec.retry or workflow.default_retry,
            timeout=spec.timeout if spec.timeout is not None else workflow.default_timeout,
            durable=True,
        )
        if outcome.error is not None or outcome.ctx is None:
            await self.fail(execution, name, outcome.error or HolonError("step did not run"))
            return None
        ending = self._end_step(execution, spec, outcome.ctx, outcome.value, started)
        return await self._next_or_done(ending)

    @staticmethod
    async def _next_or_done(ending: _Next | Awaitable[Any]) -> _Next | None:
        """What a step's coroutine gives `_advance`: the commit on to the next step, to
        apply there, or nothing once any other ending has been awaited here."""
        if isinstance(ending, tuple):
            return ending
        await ending
        return None

    def _end_step(
        self,
        execution: Execution,
        spec: StepSpec,
        ctx: Context[Any, Any],
        value: Any,
        started: float,
    ) -> _Next | Awaitable[Any]:
        """The commit that ends a step that returned `value`, or the run's failure when
        `value` is no valid outcome."""
        # Whole microseconds, in milliseconds (cheaper than `round(..., 3)`).
        duration_ms = int((time.perf_counter() - started) * 1_000_000) / 1000
        try:
            return self._transition(execution, spec, ctx, value, duration_ms)
        except (UnknownStepError, StepOutputError, TypeError, ValueError) as exc:
            return self.fail(execution, spec.name, exc)

    def _transition(
        self,
        execution: Execution,
        spec: StepSpec,
        ctx: Context[Any, Any],
        outcome: Any,
        duration_ms: float,
    ) -> _Next | Awaitable[Any]:
        """Work out the commit that ends step `spec` with `outcome`, and return it to
        be awaited; for the usual outcome, the next step's name, return what `_step`
        applies once the store confirms it: the write, the new body and the results.

        Returned rather than awaited here: this method's locals (the step's ctx, its
        events, the merged state) are released while the commit waits on the store, and
        every run in flight waits there, so the garbage collector has that much less to
        walk. Errors in the outcome raise before anything is written.
        """
        body = execution.body
        name = spec.name
        run_id = execution.run_id
        output: Any = None
        results: dict[str, Any] = {}
        if isinstance(outcome, Next):
            output = to_json_value(outcome.output, what="output", run_id=run_id, step=name)
            results[name] = output
            outcome = outcome.step
        patch = ctx.state_patch
        state = {**body.state, **patch} if patch else body.state
        counts = {**body.counts, name: body.counts.get(name, 0) + 1}
        completed: dict[str, Any] = {"duration_ms": duration_ms, "attempt": body.attempt}
        if results:
            completed["output_digest"] = digest(output)
        # One time for the step's events and checkpoint: they happen together, and the
        # store then formats it once.
        now = self.clock.now()
        events = [NewEvent("step_completed", now, name, completed)]
        if ctx.log_entries:
            self.add_side_events(events, name, ctx, at=now)
        elif patch:  # `add_side_events` without logs, written out: most steps set state
            events.append(NewEvent("state_changed", now, name, {"patch": patch}))
        update: dict[str, Any] = {"state": state, "counts": counts, "attempt": 1, "retry_at": None}
        if spec.compensate is not None:
            update["compensations"] = [
                *body.compensations,
                Compensation(step=name, idempotency_key=ctx.IdempotencyKey, output=output),
            ]

        if isinstance(outcome, Wait):
            return self.suspender.suspend(
                execution,
                name,
                outcome,
                counts[name],
                events=events,
                results=results,
                update=update,
            )
        if isinstance(outcome, Parallel):
            cursor = self.fan_out.plan(execution, name, outcome)
            events.append(
                self.event(
                    "parallel_started", name, at=now, branches=cursor.branches, join=cursor.join
                )
            )
            new_body = evolve(body, {**update, "cursor": cursor})
            return self.commit(
                execution, RunStatus.RUNNING, new_body, results=results, events=events
            )
        if outcome.__class__ is str and outcome in execution.plan.steps:
            target = outcome  # the usual case, checked as `target` would
        else:
            target = self.target(execution.workflow, name, outcome)
        if target == _END:
            final = output if output is not None else state
            events.append(self.event("completed", None, at=now, output_digest=digest(final)))
            new_body = evolve(body, {**update, "cursor": None, "output": final})
            return self.finish(execution, RunStatus.COMPLETED, new_body, *events, results=results)
        events.append(NewEvent("step_started", now, target))
        shared = self._cursors.get(target)  # `cursor_at`'s lookup, written out
        update["cursor"] = shared if shared is not None else self.cursor_at(target)
        new_body = evolve(body, update)
        checkpoint = Checkpoint(
            status=RunStatus.RUNNING, body=new_body, at=now, results=results, events=events
        )
        writing, merged = self.write(execution, checkpoint)
        return writing, new_body, merged

    def cursor_at(self, step: str) -> Cursor:
        """The cursor of a run about to execute `step` (not a fan-out). Made once per
        step name and shared: a cursor (like every record) is replaced, never changed
        in place, and one with its empty fan-out fields costs half a dozen objects."""
        cursor = self._cursors.get(step)
        if cursor is None:
            cursor = self._cursors[step] = Cursor(step=step)
        return cursor

    def target(self, workflow: Workflow, step: str, outcome: Any) -> str:
        if isinstance(outcome, Marker):
            outcome = outcome.value
        if not isinstance(outcome, str):
            raise TypeError(
                f"step {step!r} returned {outcome!r}; a step returns the next step's name, "
                "END, Next(...), Wait(...) or Parallel(...)"
            )
        if outcome == EXECUTE_STEP and workflow.execute_fn is not None:
            return outcome
        if outcome != _END and outcome not in workflow.steps:
            raise unknown_step(workflow, step, outcome, "returned")
        return outcome

    # -- helpers ------------------------------------------------------------------------

    def context(
        self,
        execution: Execution,
        step: str,
        attempt: int | None = None,
        key: str | None = None,
    ) -> Context[Any, Any]:
        """The ctx for `step` (attempt and idempotency key default to the cursor's)."""
        body = execution.body
        run_id = execution.run_id
        plan = execution.plan
        occurrence = body.counts.get(step, 0) + 1
        return Context(
            run_id=run_id,
            step=step,
            attempt=body.attempt if attempt is None else attempt,
            idempotency_key=key or idempotency_key(run_id, step, occurrence),
            input=execution.input_value,
            state=body.state,
            state_model=plan.state_model,
            results=execution.results,
            decision=body.decision,
            agents=plan.agents,
        )

    def add_side_events(
        self,
        events: list[NewEvent],
        step: str,
        ctx: Context[Any, Any],
        *,
        at: float | None = None,
    ) -> None:
        """Append what `step` did besides its result: its state change and its logs."""
        if at is None:
            at = self.clock.now()
        if ctx.state_patch:
            events.append(NewEvent("state_changed", at, step, {"patch": ctx.state_patch}))
        for entry in ctx.log_entries:
            # Made directly: a log entry's own fields may be called `at`, `kind`, `step`.
            data = to_json_value(entry, what="log entry", run_id=ctx.RunId, step=step)
            events.append(NewEvent("log", at, step, data))

    def event(
        self, kind: str, step: str | None, *, at: float | None = None, **data: Any
    ) -> NewEvent:
        """A timeline event of this run, at `at` (now when not given)."""
        return NewEvent(kind=kind, at=self.clock.now() if at is None else at, step=step, data=data)

    async def fail(self, execution: Execution, step: str | None, error: BaseException) -> None:
        """End the run `failed`, after undoing its compensable steps if it has any."""
        info = ErrorInfo(
            type=type(error).__name__,
            message=str(error),
            step=step,
            traceback="".join(traceback.format_exception(error)),
        )
        logger.info("run %s failed in step %s: %s", execution.run_id, step, error)
        body = execution.record.body
        if body.compensations and not body.compensating:
            await self.compensator.start(execution, info)
            return
        body = body.model_copy(update={"error": info, "retry_at": None})
        await self.finish(
            execution,
            RunStatus.FAILED,
            body,
            self.event(
                "failed", step, error=info.type, message=info.message, traceback=info.traceback
            ),
        )

    def finish(
        self,
        execution: Execution,
        status: RunStatus,
        body: RunBody,
        *events: NewEvent,
        results: dict[str, Any] | None = None,
    ) -> Awaitable[Committed]:
        """The last commit of an execution: the run halts or ends, its lease is released
        and any operator request is answered."""
        return self.commit(
            execution,
            status,
            body,
            events=list(events),
            results=results,
            release=True,
            clear_control=True,
        )

    def commit(
        self,
        execution: Execution,
        status: RunStatus,
        body: RunBody,
        *,
        events: list[NewEvent],
        results: dict[str, Any] | None = None,
        release: bool = False,
        clear_control: bool = False,
        wake_at: float | None = None,
        wait_keys: list[str] | None = None,
    ) -> Awaitable[Committed]:
        """Write a checkpoint of `execution`; the awaitable returned applies it to the
        execution's record once the store confirms it.

        The checkpoint goes to the store here and only what is needed afterwards is
        kept while the store works: with a thousand runs in flight, each one waiting on
        its commit, what a waiting commit holds on to is what the garbage collector
        walks again and again. Bad checkpoint data raises here, before anything is sent.
        """
        checkpoint = Checkpoint(
            status=status,
            body=body,
            at=events[-1].at if events else self.clock.now(),
            results=results or {},
            events=events,
            wake_at=wake_at,
            release_lease=release,
            clear_control=clear_control,
            wait_keys=wait_keys,
        )
        writing, merged = self.write(execution, checkpoint)
        return self._committed(execution, writing, status, body, merged, release)

    def write(
        self, execution: Execution, checkpoint: Checkpoint
    ) -> tuple[Awaitable[Committed], dict[str, Any]]:
        """Send `checkpoint` of `execution` to the store: the store's write to await,
        and the run's results as they are once it is applied (see `commit`)."""
        writing = self.store.commit(
            execution.run_id,
            expected_seq=execution.seq,
            token=execution.token,
            checkpoint=checkpoint,
        )
        results = checkpoint.results
        return writing, {**execution.results, **results} if results else execution.results

    async def _committed(
        self,
        execution: Execution,
        writing: Awaitable[Committed],
        status: RunStatus,
        body: RunBody,
        results: dict[str, Any],
        release: bool,
    ) -> Committed:
        try:
            committed = await writing
        except (StaleLease, SeqConflict) as exc:
            raise self._refused(execution, exc) from exc
        execution.confirm(committed, status, body, results, release=release)
        return committed

    @staticmethod
    def _refused(execution: Execution, exc: StaleLease | SeqConflict) -> LeaseLost:
        logger.warning("run %s: checkpoint refused: %s", execution.run_id, exc)
        return LeaseLost()
