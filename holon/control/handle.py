"""`RunHandle`: watch and steer one run, from any process that reaches its store."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal, Protocol, overload

import anyio

from holon._naming import snake_case_aliases
from holon.clock import Clock
from holon.control.operator import Operator
from holon.control.surgery import ReplayReport, RerunReport, fork, replay, rerun
from holon.control.watch import RunWatch
from holon.definition.budget import Budget
from holon.errors import HolonError, InvalidRunState, ResultTimeout, RunFailed, RunNotFound
from holon.runtime.children import tell_parent
from holon.runtime.decisions import edited_args
from holon.runtime.inbox import KEEP_EVENTS_FOR
from holon.runtime.waits import WaitInfo, describe
from holon.stores.base import Emitted, RunProgress, RunRecord, RunStatus, Store, TimelineEvent

__all__ = ["HandleSource", "RunHandle"]


class HandleSource(Protocol):
    """What a handle needs of the object that made it (a `WorkflowRunner` or a
    `Client`): the store and its operator verbs, the time, and the process's own
    executor, if any."""

    @property
    def store(self) -> Store:
        """The store the run is in (a closed source raises `HolonError` here)."""

    @property
    def operator(self) -> Operator:
        """The verbs that write the run without a lease."""

    clock: Clock
    poll_interval: float
    """Seconds between re-reads while waiting on a run changed by another process."""
    lease_ttl: float

    def kick(self, run_id: str) -> None:
        """Try to execute a run that became ready in this process, if it executes."""

    def cancel_here(self, run_id: str) -> None:
        """Cancel the step of `run_id` now if it is executing in this process."""


@snake_case_aliases
class RunHandle:
    """One run. Every method reads or writes the store, so a handle obtained with
    `runner.Get(run_id)` in another process steers the same run."""

    def __init__(self, runner: HandleSource, run_id: str) -> None:
        self._source = runner
        self.run_id = run_id
        self.RunId = run_id

    @property
    def _runner(self) -> HandleSource:
        """What made this handle, as long as it is open: a closed runner's store is
        closed (or, in memory, executed by nobody), so a verb would fail obscurely or
        wait forever; it fails saying so instead. (A maker with no `closed` flag is
        open as long as it lives.)"""
        source = self._source
        if getattr(source, "closed", False):
            maker = "Client" if type(source).__name__ == "Client" else "runner"
            raise HolonError(
                f"run handle {self.run_id!r}: the {maker} that made it was closed, so it is "
                "closed too; make a new runner (or a Client) and Get() the run to reach it",
                run_id=self.run_id,
            )
        return source

    def __repr__(self) -> str:
        return f"RunHandle({self.run_id!r})"

    async def Record(self) -> RunRecord:
        """Everything stored about the run."""
        return await self._runner.operator.load(self.run_id)

    async def _progress(self) -> RunProgress:
        progress = await self._runner.store.run_progress(self.run_id)
        if progress is None:
            raise RunNotFound(
                f"no run {self.run_id!r} in {self._runner.store.url}", run_id=self.run_id
            )
        return progress

    async def Status(self) -> RunStatus:
        return (await self._progress()).status

    def _change(self) -> anyio.Event:
        """Set by this process's next write to the run. Take it before reading; other
        processes' writes are seen by reading again after `poll_interval`."""
        return self._runner.store.signals.event(self.run_id)

    async def _changed(self, change: anyio.Event, timeout: float) -> None:
        await self._runner.store.signals.wait(change, timeout)

    async def WaitUntil(
        self, *statuses: RunStatus | str, timeout: float | None = None
    ) -> RunRecord:
        """Wait until the run is in one of `statuses` (or terminal); returns the record.

        Raises `ResultTimeout` (a `TimeoutError`) naming the run's status when `timeout`
        seconds pass first; the run goes on.
        """
        wanted = {RunStatus(s) for s in statuses}
        status: RunStatus | None = None
        with anyio.move_on_after(timeout):
            while True:
                change = self._change()
                # The cheap read: a long run must not be reloaded whole at every step.
                progress = await self._progress()
                status = progress.status
                if status in wanted or status.terminal:
                    record = await self.Record()
                    if record.status in wanted or record.status.terminal:
                        return record
                    continue  # it moved on between the two reads
                await self._changed(change, self._runner.poll_interval)
        now = status.value if status is not None else "unknown"
        goal = ", ".join(sorted(s.value for s in wanted)) or "a terminal status"
        raise ResultTimeout(
            f"run {self.run_id!r} is still {now} after {timeout} s (waited for {goal}); "
            "it goes on: call again to wait longer, or Waiting() to see what it waits for",
            status=now,
            run_id=self.run_id,
        )

    async def Result(self, timeout: float | None = None) -> Any:
        """Wait for the run to end and return its result.

        The result is the `output` of `Next(END, output=...)` (or the `.Execute()`
        function's return value), else the final state as a dict. A run that ended
        otherwise raises `RunFailed` with its status and error; one still going after
        `timeout` seconds raises `ResultTimeout` (a `TimeoutError`) with its status.
        """
        record = await self.WaitUntil(timeout=timeout)
        if record.status == RunStatus.COMPLETED:
            return record.body.output
        error = record.body.error
        detail = f": {error.type}: {error.message}" if error else ""
        raise RunFailed(
            f"run {self.run_id!r} ended {record.status.value}"
            f"{f' in step {error.step!r}' if error and error.step else ''}{detail}",
            status=record.status.value,
            error=error.model_dump() if error else None,
            run_id=self.run_id,
            step=error.step if error else None,
        )

    async def Pause(self, by: str | None = None) -> RunStatus:
        """Pause the run at its next step boundary: the running step finishes and is
        checkpointed first. A waiting or queued run pauses at once. Returns the status
        right after the request (`running` until the executor reaches the boundary)."""
        return (await self._runner.operator.pause(self.run_id, by)).status

    async def Resume(
        self,
        goto: str | None = None,
        state: Mapping[str, Any] | None = None,
        by: str | None = None,
        budget: Budget | Mapping[str, Any] | None = None,
    ) -> RunStatus:
        """Continue a paused run.

        Args:
            goto: run this step next instead of the one at the cursor (also abandons a
                wait, so it works on a waiting run too).
            state: fields to change in the state first, validated against the State model.
            budget: the run's new budget (a run paused with `budget exhausted` goes on
                once it has room again).
        """
        record = await self._runner.operator.resume(
            self.run_id, goto=goto, state=state, by=by, budget=budget
        )
        if record.status == RunStatus.QUEUED:
            self._runner.kick(self.run_id)
        return record.status

    async def Stop(self, by: str | None = None, timeout: float | None = None) -> RunStatus:
        """End the run as `stopped`, cancelling a running step.

        A step running in this process is cancelled at once; one running in another
        process is cancelled at that executor's next heartbeat (a third of the lease
        TTL), or, if that executor died, once its lease expires. Waits at most `timeout`
        seconds (default: twice the lease TTL) and returns the status.
        """
        operator = self._runner.operator
        record = await operator.load(self.run_id)
        if record.status == RunStatus.STOPPED:
            await self._stopped_family(record, by, timeout)
            return record.status
        if record.status.terminal:
            raise InvalidRunState(
                f"run {self.run_id!r} already ended {record.status.value}; cannot stop it",
                status=record.status.value,
                run_id=self.run_id,
            )
        await operator.request_stop(self.run_id, by)
        self._runner.cancel_here(self.run_id)
        limit = timeout if timeout is not None else 2 * self._runner.lease_ttl
        with anyio.move_on_after(limit):
            while True:
                change = self._change()
                record = await operator.load(self.run_id)
                if record.status.terminal:
                    break
                if not record.lease_live(self._runner.clock.now()):
                    record = await operator.stop_idle(self.run_id, by)
                    break
                await self._changed(change, self._runner.poll_interval)
        await self._stopped_family(record, by, timeout)
        return record.status

    async def _stopped_family(
        self, record: RunRecord, by: str | None, timeout: float | None
    ) -> None:
        """After a Stop: the run's children that have not ended are stopped too (their
        own children with them), and a stopped child closes its parent's wait."""
        source = self._runner
        for child_id in record.body.children:
            child = await source.store.load_run(child_id)
            if child is not None and not child.status.terminal:
                await RunHandle(source, child_id).Stop(by=by, timeout=timeout)
        if record.status.terminal and record.body.parent is not None:
            parent = await tell_parent(source.store, source.clock, record)
            if parent is not None and parent.status == RunStatus.QUEUED:
                source.kick(parent.run_id)

    def _kicked(self, record: RunRecord) -> RunStatus:
        if record.status == RunStatus.QUEUED:
            self._runner.kick(self.run_id)
        return record.status

    async def _ended_child(self, record: RunRecord) -> RunStatus:
        """After a decision: a child run it ended (rejected, say) closes its parent's
        wait for it."""
        if record.status.terminal and record.body.parent is not None:
            source = self._runner
            parent = await tell_parent(source.store, source.clock, record)
            if parent is not None and parent.status == RunStatus.QUEUED:
                source.kick(parent.run_id)
        return self._kicked(record)

    async def Approve(
        self,
        by: str,
        comment: str | None = None,
        digest: str | None = None,
        *,
        roles: Iterable[str] = (),
        wait_id: str | None = None,
        args: Mapping[str, Any] | None = None,
    ) -> RunStatus:
        """Approve the gate the run waits at, as identity `by`; returns the run's status.

        Args:
            by: who approves; listed among the approvers, or holding one of the listed
                `role:` entries in `roles`.
            comment: recorded with the decision.
            digest: the SHA-256 of the payload the approver saw (`Waiting().digest`, or
                computed from the payload); refused with `DigestMismatch` if the wait's
                payload has another digest.
            roles: the roles `by` holds, as the caller's authenticator vouches.
            wait_id: the wait meant (`Waiting().wait_id`); a decision for a wait that is
                no longer open is refused with `NotWaiting`.
            args: for a gate on an agent's tool call: the arguments to run the tool with
                instead of the model's (what is approved is then these).

        Raises `NotAnApprover` (not listed, or the run's starter when self-approval is
        forbidden), `DigestMismatch`, `NotWaiting`, or `DecisionConflict` when another
        decision closed the gate first. Refusals are recorded in the timeline; approving
        twice is recorded once.
        """
        return await self._decide("approve", by, comment, digest, roles, wait_id, args)

    async def Reject(
        self,
        by: str,
        comment: str | None = None,
        digest: str | None = None,
        *,
        roles: Iterable[str] = (),
        wait_id: str | None = None,
    ) -> RunStatus:
        """Reject the gate: the run goes to the wait's `on_reject` step, or ends
        `rejected`. Same arguments and refusals as `Approve`."""
        return await self._decide("reject", by, comment, digest, roles, wait_id, None)

    async def _decide(
        self,
        verdict: Literal["approve", "reject"],
        by: str,
        comment: str | None,
        digest: str | None,
        roles: Iterable[str],
        wait_id: str | None,
        args: Mapping[str, Any] | None,
    ) -> RunStatus:
        record = await self._runner.operator.decide(
            self.run_id,
            verdict=verdict,
            by=by,
            comment=comment,
            digest=digest,
            roles=roles,
            wait_id=wait_id,
            value=edited_args(self.run_id, verdict, args),
        )
        return await self._ended_child(record)

    async def Answer(
        self,
        value: Any,
        by: str,
        comment: str | None = None,
        *,
        wait_id: str | None = None,
    ) -> RunStatus:
        """Answer the `HumanInput` the run waits at; the next step reads the answer as
        `ctx.Decision`.

        An answer outside the options, of the wrong type, or failing the schema is
        refused with `InvalidAnswer` (the reason in its message, recorded in the
        timeline) and the run keeps waiting.
        """
        record = await self._runner.operator.answer(
            self.run_id, value=value, by=by, comment=comment, wait_id=wait_id
        )
        return await self._ended_child(record)

    async def Send(
        self,
        event: str,
        payload: Any = None,
        event_id: str | None = None,
        *,
        keep_for: float | None = KEEP_EVENTS_FOR,
    ) -> RunStatus:
        """Deliver `event` to this run. The same `event_id` again is recorded once.

        A run that waits on it (with a matching payload) goes on at once. A run that
        does not wait for it yet, still running or waiting for something else, keeps it
        in its inbox for `keep_for` seconds (an hour by default) and gets it when it
        opens a wait for it; `keep_for=None` refuses it instead (`NotWaiting`), as does a
        run that has finished. Returns the run's status after the delivery (unchanged
        when the event was kept); `InboxFull` when the run keeps as many as it may."""
        record = await self._runner.operator.send(
            self.run_id, name=event, payload=payload, event_id=event_id, keep_for=keep_for
        )
        return self._kicked(record)

    # -- run surgery ---------------------------------------------------------------------

    async def Retry(
        self,
        goto: str | None = None,
        state: Mapping[str, Any] | None = None,
        by: str | None = None,
    ) -> RunStatus:
        """Continue a `failed`, `stopped` or `expired` run from its last checkpoint.

        The step it failed in runs again as a new attempt with the same idempotency key;
        completed steps are not run again. For an `.Execute()` run the function replays
        its journal, so a run that failed with `NonDeterminismError` continues once the
        code is fixed. A run stopped while waiting waits again; an expired wait's step
        runs again and opens a new wait. `goto` and `state` are as for `Resume`. A
        completed run (or one whose compensations undid its steps) is refused with
        `InvalidRunState`. Recorded in the timeline (`retried`) with `by`.
        """
        record = await self._runner.operator.retry(self.run_id, goto=goto, state=state, by=by)
        return self._kicked(record)

    async def Rerun(self, step: str, seq: int | None = None) -> RerunReport:
        """Run one step of a flow again, in a sandbox, from the snapshot recorded before
        it (the input, the state and the results of the steps before it), and compare
        what it does now with what it did then (`RerunReport.diff`).

        `seq` is the timeline event at which the step started (default: its last
        start). The run is untouched: the step runs here, against a store in memory,
        with idempotency keys of a sandbox run of its own; it runs for real, external or
        not. Needs the workflow's code in this process.
        """
        operator = self._runner.operator
        return await rerun(operator, self.run_id, step, seq, lease_ttl=self._runner.lease_ttl)

    async def Replay(self, by: str | None = None) -> ReplayReport:
        """Run the whole workflow again on the run's input, as a new sandbox run.

        Steps and tasks marked `external=True` are answered with what this run recorded
        (a cassette) instead of running; a call with no recording fails the sandbox run
        instead of running. Every other step runs fresh, here, until the sandbox run
        ends or halts at a wait. The report gives the first divergence from this run
        (another step, next step, output or state patch), with both sides. The sandbox
        run stays in the store (`sandbox-...`, workflow `sandbox:<name>`), executed by
        no worker. Needs the workflow's code in this process.
        """
        operator = self._runner.operator
        return await replay(operator, self.run_id, by=by, lease_ttl=self._runner.lease_ttl)

    async def Fork(
        self, at: int, state: Mapping[str, Any] | None = None, by: str | None = None
    ) -> RunHandle:
        """Start a new, real run from a recorded checkpoint of this one: the one before
        the step whose `step_started` event has sequence `at` (for an `.Execute()` run,
        the journal up to that event), with an optional `state` patch validated against
        the State model. The new run records where it came from (`body.origin`) and is
        executed by whoever executes runs of the workflow; returns its handle."""
        record = await fork(
            self._runner.operator, self.run_id, at, state, by=by, clock=self._runner.clock
        )
        self._runner.kick(record.run_id)
        return RunHandle(self._runner, record.run_id)

    async def Waiting(self) -> WaitInfo | None:
        """What the run waits for (kind, approvers and approvals still needed, payload
        digest, deadline), or None when it waits for nothing."""
        return describe(await self.Record())

    async def Timeline(self, after: int = 0) -> list[TimelineEvent]:
        """The run's timeline events with sequence number above `after`."""
        return await self._runner.store.timeline(self.run_id, after)

    @overload
    def Watch(
        self, after: int = 0, timeout: float | None = None, *, emitted: Literal[True] = True
    ) -> RunWatch[TimelineEvent | Emitted]: ...

    @overload
    def Watch(
        self, after: int = 0, timeout: float | None = None, *, emitted: Literal[False]
    ) -> RunWatch[TimelineEvent]: ...

    def Watch(
        self, after: int = 0, timeout: float | None = None, *, emitted: bool = True
    ) -> RunWatch[Any]:
        """The run's events as they happen: its timeline events from sequence `after`,
        and what its steps send with `ctx.Emit(...)` (`Emitted`; leave them out with
        `emitted=False`); ends after the events of a terminal status. `timeout` bounds
        the whole watch (TimeoutError). Subscribed from this call on: iterate it with
        `async for`, and `aclose()` it if you stop early."""
        return RunWatch(
            self._runner.store,
            self.run_id,
            after=after,
            timeout=timeout,
            poll_interval=self._runner.poll_interval,
            progress=self._progress,
            emitted=emitted,
        )

    # The snake_case twins, as real members a type checker sees (`snake_case_aliases`
    # checks that every PascalCase verb has one).
    record = Record
    status = Status
    wait_until = WaitUntil
    result = Result
    pause = Pause
    resume = Resume
    stop = Stop
    approve = Approve
    reject = Reject
    answer = Answer
    send = Send
    waiting = Waiting
    timeline = Timeline
    watch = Watch
    retry = Retry
    rerun = Rerun
    replay = Replay
    fork = Fork
