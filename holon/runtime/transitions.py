"""The writes that move a run on: a checkpoint, a halt, the end, a failure.

Every part of the runtime that changes a run goes through `Transitions`: the engine's
steps, the fan-out's branches, retries, compensation, waits, timers and versioning. It
makes the timeline events, sends the checkpoint to the store under the execution's
fencing token and expected sequence number, and applies it to the `Execution` once the
store confirms it. A refused checkpoint (another executor took the run, or something
else wrote it) raises `LeaseLost`: the execution writes nothing more.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable
from typing import Any

from holon._json import to_json_value
from holon.clock import Clock
from holon.errors import SeqConflict, StaleLease
from holon.runtime.context import Context
from holon.runtime.execution import CheckpointsLost, Execution, LeaseLost
from holon.sealing import redact, secret_name
from holon.stores.base import (
    Checkpoint,
    Committed,
    Cursor,
    ErrorInfo,
    NewEvent,
    RunBody,
    RunStatus,
    Store,
    evolve,
)

__all__ = ["Transitions", "step_of"]

logger = logging.getLogger("holon.engine")


def step_of(body: RunBody) -> str | None:
    """The step at the run's cursor, if any."""
    return body.cursor.step if body.cursor else None


class Transitions:
    """Writes the checkpoints of the runs one engine executes."""

    def __init__(self, store: Store, clock: Clock, owner: str) -> None:
        self.store = store
        self.clock = clock
        self.owner = owner
        """This executor's name, as its leases and timeline events give it."""
        self._cursors: dict[str, Cursor] = {}

    # -- what goes into a checkpoint ------------------------------------------------------

    def event(
        self, kind: str, step: str | None, *, at: float | None = None, **data: Any
    ) -> NewEvent:
        """A timeline event, at `at` (now when not given)."""
        return NewEvent(kind=kind, at=self.clock.now() if at is None else at, step=step, data=data)

    def step_events(
        self, events: list[NewEvent], step: str, ctx: Context[Any, Any], at: float
    ) -> None:
        """Append what `step` did besides its result: its state change and its logs."""
        patch = ctx.state_patch
        if patch:
            # The timeline shows no secret: sealed values and values named like secrets
            # are redacted (the state keeps them, sealed).
            redacted = ctx.rules.redacted_state
            if redacted is None:
                if any(map(secret_name, patch)):
                    patch = redact(patch)
            elif redacted and not redacted.isdisjoint(patch):
                patch = redact(patch)
            events.append(NewEvent("state_changed", at, step, {"patch": patch}))
        for entry in ctx.log_entries:
            # Made directly: a log entry's own fields may be called `at`, `kind`, `step`.
            data = to_json_value(redact(entry), what="log entry", run_id=ctx.RunId, step=step)
            events.append(NewEvent("log", at, step, data))

    def cursor_at(self, step: str) -> Cursor:
        """The cursor of a run about to execute `step` (not a fan-out). Made once per
        step name and shared: a cursor, like every record, is replaced and never changed
        in place."""
        cursor = self._cursors.get(step)
        if cursor is None:
            cursor = self._cursors[step] = Cursor(step=step)
        return cursor

    # -- writing --------------------------------------------------------------------------

    def send(self, execution: Execution, checkpoint: Checkpoint) -> Awaitable[Committed]:
        """Send `checkpoint` of `execution` to the store, under the execution's fencing
        token and the sequence number it last saw; return the store's answer to await.

        The execution keeps what the run becomes once the checkpoint is confirmed
        (`Execution.expect`); whoever awaits the answer applies it with
        `Execution.confirm`, or turns a refusal into `refused(...)`. The checkpoint
        itself is not kept while the store works: with a thousand runs in flight, each
        waiting on its commit, what waiting commits hold is what the garbage collector
        walks again and again.
        """
        execution.expect(checkpoint)
        return self.store.commit(
            execution.run_id,
            expected_seq=execution.seq,
            token=execution.token,
            checkpoint=checkpoint,
        )

    @staticmethod
    def refused(execution: Execution, error: StaleLease | SeqConflict) -> LeaseLost:
        """What a refused checkpoint means for its execution: it must write nothing
        more (another executor took the run, or something else wrote it); when the
        store lost checkpoints this executor wrote, the run is to be halted
        (`CheckpointsLost`, see `halt_lost`)."""
        if isinstance(error, SeqConflict) and error.lost:
            logger.error("run %s: checkpoint refused: %s", execution.run_id, error)
            return CheckpointsLost(error)
        logger.warning("run %s: checkpoint refused: %s", execution.run_id, error)
        execution.refusal = execution.refusal or ("commit_refused", str(error))
        return LeaseLost()

    async def halt_lost(self, execution: Execution, lost: CheckpointsLost) -> None:
        """Halt a run whose store lost checkpoints this executor wrote (a Redis that
        restarted from older data): paused where the store has it, with a
        `checkpoints_lost` event, for an operator to resume; never overwritten with
        this executor's newer state, nor redone behind anyone's back. Only while this
        executor's token still holds the run: otherwise it is another's, and nothing
        is written."""
        run_id = execution.run_id
        record = await self.store.load_run(run_id)
        if record is None or record.lease is None or record.lease.token != execution.token:
            logger.error("run %s: the store lost checkpoints and another executor holds it", run_id)
            return
        event = self.event(
            "checkpoints_lost",
            step_of(record.body),
            stored_seq=record.seq,
            executor_seq=lost.conflict.expected_seq,
            owner=record.lease.owner,
        )
        halted = Checkpoint(
            status=RunStatus.PAUSED,
            body=evolve(record.body, {"paused_from": None}),
            at=event.at,
            events=[event],
            release_lease=True,
            clear_control=True,
        )
        try:
            await self.store.commit(
                run_id, expected_seq=record.seq, token=execution.token, checkpoint=halted
            )
        except (StaleLease, SeqConflict) as exc:
            logger.error("run %s: could not halt it after lost checkpoints: %s", run_id, exc)
            return
        logger.error(
            "run %s: the store has checkpoint %s, older than %s which this executor wrote "
            "(it lost writes: restarted from older data?); the run is paused for an operator",
            run_id,
            record.seq,
            lost.conflict.expected_seq,
        )

    async def write(self, execution: Execution, checkpoint: Checkpoint) -> Committed:
        """Commit `checkpoint` of `execution` and apply it once the store confirms it.

        Raises `LeaseLost` when the store refuses it.
        """
        sending = self.send(execution, checkpoint)
        del checkpoint  # not kept while the store works (see `send`)
        try:
            committed = await sending
        except (StaleLease, SeqConflict) as exc:
            raise self.refused(execution, exc) from exc
        execution.confirm(committed)
        return committed

    async def commit(
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
        version: str | None = None,
    ) -> Committed:
        """Write a checkpoint of `execution` made of these parts (see `Checkpoint`)."""
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
            version=version,
        )
        return await self.write(execution, checkpoint)

    async def finish(
        self,
        execution: Execution,
        status: RunStatus,
        body: RunBody,
        *events: NewEvent,
        results: dict[str, Any] | None = None,
    ) -> Committed:
        """The last write of an execution: the run halts or ends, its lease is released
        and any operator request is answered."""
        return await self.commit(
            execution,
            status,
            body,
            events=list(events),
            results=results,
            release=True,
            clear_control=True,
        )

    async def halt(self, execution: Execution, status: RunStatus, kind: str) -> None:
        """Halt the run where it is, as an operator asked: `paused` or `stopped`."""
        by = execution.control.by if execution.control else None
        body = execution.body
        await self.finish(execution, status, body, self.event(kind, step_of(body), by=by))

    async def hand_back(self, execution: Execution) -> None:
        """Give the run back to the store `queued` at a step boundary, its lease let go,
        for another executor to continue as it would any queued run (this one is
        shutting down)."""
        body = execution.body
        event = self.event("handed_back", step_of(body), owner=self.owner)
        await self.commit(execution, RunStatus.QUEUED, body, events=[event], release=True)

    async def fail(self, execution: Execution, step: str | None, error: BaseException) -> None:
        """Record that the run failed in `step`.

        A run with completed compensable steps goes on `running`, compensating (the
        engine then undoes them, see `holon.runtime.compensation`); any other run ends
        `failed`.
        """
        info = ErrorInfo(
            type=type(error).__name__,
            message=str(error),
            step=step,
            traceback="".join(traceback.format_exception(error)),
        )
        logger.info("run %s failed in step %s: %s", execution.run_id, step, error)
        body = execution.body
        if body.compensations and not body.compensating:
            undo = [c.step for c in reversed(body.compensations)]
            compensating = evolve(body, {"error": info, "compensating": True, "retry_at": None})
            event = self.event(
                "compensating", step, error=info.type, message=info.message, undo=undo
            )
            await self.commit(execution, RunStatus.RUNNING, compensating, events=[event])
            return
        failed = evolve(body, {"error": info, "retry_at": None})
        event = self.event(
            "failed", step, error=info.type, message=info.message, traceback=info.traceback
        )
        await self.finish(execution, RunStatus.FAILED, failed, event)
