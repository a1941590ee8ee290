"""Durable timers: what happens when a waiting run's wake-up time comes.

A waiting run stores `wake_at`, the earliest of its wait's deadline and escalation time.
It holds no task meanwhile. Once the time has passed, `Store.claim` hands the run to an
executor (any runner or worker of its workflow, on its next look, or at once with
`runner.recover_now()`), still `waiting` and now leased, and the engine calls `wake`:

* an escalation that is due adds the `escalate_to` approvers and records `escalated`;
* a `Sleep`/`Until` timer that is due goes on to the wait's `next` step;
* any other wait whose timeout passed goes to `on_timeout`, else the run ends `expired`;
* otherwise the run waits on, with its next wake-up time.

The time is the runner's clock, so tests move a `ManualClock` instead of sleeping.
"""

from __future__ import annotations

from typing import Any

from holon.runtime.decisions import close_wait
from holon.runtime.execution import Execution
from holon.runtime.transitions import Transitions
from holon.runtime.waits import approvers, wait_keys, wake_time
from holon.stores.base import Checkpoint, NewEvent, RunRecord, RunStatus

__all__ = ["Timers", "on_wake"]


def on_wake(record: RunRecord, now: float) -> Checkpoint | None:
    """The checkpoint for a waiting run looked at `now`; None if it waits for nothing.

    A wait that closes continues as `running` (the caller holds the run's lease).
    """
    wait = record.body.wait
    if record.status != RunStatus.WAITING or wait is None:
        return None
    events: list[NewEvent] = []
    keys: list[str] | None = None
    spec = wait.spec
    if wait.escalate_at is not None and wait.escalated_at is None and now >= wait.escalate_at:
        before = set(approvers(wait))
        wait = wait.model_copy(update={"escalated_at": now})
        events.append(
            NewEvent(
                kind="escalated",
                at=now,
                step=wait.step,
                data={
                    "wait_id": wait.wait_id,
                    "added": [a for a in approvers(wait) if a not in before],
                    "approvers": approvers(wait),
                },
            )
        )
        keys = wait_keys(wait)
    if wait.deadline is not None and now >= wait.deadline:
        if wait.kind == "timer":
            fired = NewEvent(
                kind="timer_fired", at=now, step=wait.step, data={"wait_id": wait.wait_id}
            )
            decision: Any = {"fired_at": now, "due": wait.deadline}
            return close_wait(
                record,
                wait,
                decision,
                wait.next,
                [*events, fired],
                now,
                "timer",
                status=RunStatus.RUNNING,
            )
        timed_out = NewEvent(
            kind="timed_out",
            at=now,
            step=wait.step,
            data={"wait_id": wait.wait_id, "deadline": wait.deadline, "next": wait.on_timeout},
        )
        summary = {
            "timed_out": True,
            "approved": False,
            "by": [],
            "digest": spec.get("digest"),
            "wait_id": wait.wait_id,
            "question": spec.get("question"),
            "decisions": [d.model_dump(mode="json") for d in wait.decisions],
        }
        return close_wait(
            record,
            wait,
            summary,
            wait.on_timeout,
            [*events, timed_out],
            now,
            "timed_out",
            status=RunStatus.RUNNING,
            ended=RunStatus.EXPIRED,
        )
    return Checkpoint(
        status=RunStatus.WAITING,
        body=record.body.model_copy(update={"wait": wait}),
        at=now,
        events=events,
        wake_at=wake_time(wait),
        release_lease=True,
        wait_keys=keys,
    )


class Timers:
    """Applies `on_wake` to a waiting run handed over because its wake-up time passed."""

    def __init__(self, transitions: Transitions) -> None:
        self.transitions = transitions

    async def wake(self, execution: Execution) -> None:
        """Commit what the run's wake-up means, with the executor's lease. A run that
        goes on is left `running` for the engine to continue."""
        transitions = self.transitions
        checkpoint = on_wake(execution.record, transitions.clock.now())
        if checkpoint is None:
            await transitions.store.release_lease(execution.run_id, execution.token)
            return
        await transitions.write(execution, checkpoint)
