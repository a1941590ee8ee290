"""What an executor does once an execution of a run ends, outside its lease: record a
write of this executor the store turned away, hand a kept event to a run that now waits
for it, and tell a parent its child ended (or take in a child that ended before its
parent waited). Each is a look at the other side of a race that the other side also
looks at, so a failure here is logged and left to that side or to an operator."""

from __future__ import annotations

import logging
from collections.abc import Callable

from holon.runtime.children import tell_parent, waited_children
from holon.runtime.definitions import Definitions
from holon.runtime.execution import Execution
from holon.runtime.inbox import take_kept_event
from holon.runtime.transitions import Transitions, step_of
from holon.stores.base import RunRecord, RunStatus

__all__ = ["Aftermath"]

logger = logging.getLogger("holon.engine")


class Aftermath:
    """The looks an engine takes after each execution (see the module docstring)."""

    def __init__(
        self,
        transitions: Transitions,
        definitions: Definitions,
        on_ready: Callable[[str, str], None],
    ) -> None:
        self.transitions = transitions
        self.store = transitions.store
        self.clock = transitions.clock
        self.owner = transitions.owner
        self.definitions = definitions
        self.on_ready = on_ready
        """Told of a run (id, workflow) made ready to go on, to execute it at once."""

    async def after(self, execution: Execution) -> None:
        await self._take_kept_event(execution)
        await self._tell_family(execution)

    async def _tell_family(self, execution: Execution) -> None:
        """A child run that ended closes its parent's wait for it; a parent that just
        opened its wait for a child takes it in if it already ended, and otherwise
        executes it here at once if it is queued (see `holon.runtime.children`)."""
        status = execution.status
        body = execution.body
        wait = body.wait
        try:
            if status.terminal and body.parent is not None:
                parent = await tell_parent(self.store, self.clock, execution.record)
                self._ready(parent)
            elif status == RunStatus.WAITING and wait is not None and wait.kind == "child":
                for listed in waited_children(wait):
                    child = await self.store.load_run(listed["run_id"])
                    if child is not None and child.status.terminal:
                        self._ready(await tell_parent(self.store, self.clock, child))
                    else:
                        self._ready(child)
        except Exception:
            # The other side's own look (its executor, at its end or its wait) or an
            # operator's Retry settles it.
            logger.exception("run %s: telling its parent or child failed", execution.run_id)

    def _ready(self, record: RunRecord | None) -> None:
        # Only a run of a workflow served here: taking the lease of another would only
        # give it back, and leave it for the claim loops of those that serve it.
        if (
            record is not None
            and record.status == RunStatus.QUEUED
            and record.workflow in self.definitions
        ):
            self.on_ready(record.run_id, record.workflow)

    async def note_refusal(self, execution: Execution) -> None:
        """Record in the run's timeline that the store turned this executor away (a
        commit refused, or its lease found taken), beside the checkpoints of the
        executor that holds the run now."""
        if execution.refusal is None:
            return
        kind, reason = execution.refusal
        event = self.transitions.event(
            kind,
            step_of(execution.body),
            owner=self.owner,
            token=execution.token,
            reason=reason,
        )
        try:
            await self.store.append_timeline(execution.run_id, [event])
        except Exception as exc:  # the store may be what failed: the log has it then
            logger.warning("run %s: could not record %s: %s", execution.run_id, kind, exc)

    async def _take_kept_event(self, execution: Execution) -> None:
        """A run that now waits for an event sent before (kept in an inbox) gets it at
        once, and is handed to `on_ready` to go on."""
        wait = execution.body.wait
        if execution.status != RunStatus.WAITING or wait is None or wait.kind != "event":
            return
        try:
            record = await take_kept_event(self.store, self.clock, execution.run_id)
        except Exception:
            # The event stays kept; the sender's own attempt, or an operator, delivers it.
            logger.exception("run %s: delivering a kept event failed", execution.run_id)
            return
        if record is not None and record.status == RunStatus.QUEUED:
            self.on_ready(record.run_id, record.workflow)
