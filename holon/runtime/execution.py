"""What a process keeps about a run it executes, and the small rules every part of the
runtime shares: idempotency keys, step names, the step a directive leads to."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio

from holon.definition.builder import Workflow
from holon.definition.directives import END, Marker
from holon.errors import SeqConflict, UnknownStepError
from holon.runtime.context import Context
from holon.stores.base import Checkpoint, Committed, Control, RunBody, RunRecord, RunStatus, evolve

__all__ = [
    "EXECUTE_STEP",
    "CheckpointsLost",
    "Execution",
    "LeaseLost",
    "branch_name",
    "idempotency_key",
    "next_step",
    "unknown_step",
    "wants",
]


_log = logging.getLogger("holon.runs")
"""A line per change of a run's status (info), and per checkpoint (debug)."""

EXECUTE_STEP = "__execute__"
"""The cursor of an `.Execute()` run: its function, replayed from the top."""


def idempotency_key(run_id: str, step: str, occurrence: int) -> str:
    """Stable for a run, step and occurrence; the same across retries and crashes."""
    return f"{run_id}:{step}:{occurrence}"


class LeaseLost(Exception):
    """Internal: the run was taken over or changed under us; stop writing."""


class CheckpointsLost(LeaseLost):
    """Internal: the store holds an older checkpoint than this executor wrote (it lost
    writes): stop, and halt the run where the store has it (`Transitions.halt_lost`)."""

    def __init__(self, conflict: SeqConflict) -> None:
        super().__init__(str(conflict))
        self.conflict = conflict


class Execution:
    """One run being executed in this process.

    `record` is the run as last confirmed by the store. The parts of it that every step
    changes (`status`, `body`, `seq`, `event_seq`, `results`) are kept as attributes,
    always current; `confirm` updates them from each confirmed checkpoint, and the
    record is made anew from them only when something reads it (see `confirm`).
    """

    __slots__ = (
        "_expected",
        "_lock",
        "_record",
        "_record_control",
        "_stale",
        "body",
        "branch_functions",
        "control",
        "event_seq",
        "hand_back",
        "input_value",
        "lease_lost",
        "plan",
        "refusal",
        "results",
        "run_id",
        "seq",
        "services",
        "status",
        "step_scope",
        "stop_requested",
        "token",
        "workflow",
    )

    status: RunStatus
    body: RunBody
    seq: int
    event_seq: int
    results: dict[str, Any]
    _record: RunRecord
    _record_control: Control | None
    _stale: bool
    _expected: tuple[RunStatus, RunBody, dict[str, Any], bool]

    def __init__(
        self,
        run_id: str,
        token: int,
        workflow: Workflow,
        record: RunRecord,
        control: Control | None = None,
        input_value: Any = None,
    ) -> None:
        self.run_id = run_id
        self.token = token
        self.workflow = workflow
        self.plan = workflow.plan
        """What every step reads of the workflow (`Workflow.plan`)."""
        self.control = control
        self.step_scope: anyio.CancelScope | None = None
        self.stop_requested = False
        self.hand_back = False
        """Set when this process shuts down: the run goes back to the store at its next
        step boundary, for another executor to continue."""
        self.lease_lost = False
        self.refusal: tuple[str, str] | None = None
        """Why the store refused this executor (a timeline event kind and the reason):
        recorded in the run's timeline when the execution ends, for operators to see a
        stale executor's write turned away."""
        self.input_value = input_value
        self.branch_functions: dict[str, Callable[..., Any]] = {}
        self._lock: anyio.Lock | None = None
        self.services: Any = None
        """The services its steps' contexts reach (`holon.runtime.journal.RunServices`),
        set by the engine."""
        self.record = record

    @property
    def record(self) -> RunRecord:
        """The run as last confirmed by the store."""
        if self._stale:
            self._record = evolve(
                self._record,
                {
                    "status": self.status,
                    "body": self.body,
                    "seq": self.seq,
                    "event_seq": self.event_seq,
                    "control": self._record_control,
                    "results": self.results,
                },
            )
            self._stale = False
        return self._record

    @record.setter
    def record(self, record: RunRecord) -> None:
        self._record = record
        self._stale = False
        self.status = record.status
        self.body = record.body
        self.seq = record.seq
        self.event_seq = record.event_seq
        self.results = record.results
        self._record_control = record.control

    def expect(self, checkpoint: Checkpoint) -> None:
        """Remember what the run becomes once the store confirms `checkpoint` (sent
        now): its status, body and results, and whether the lease is let go."""
        added = checkpoint.results
        results = {**self.results, **added} if added else self.results
        self._expected = (checkpoint.status, checkpoint.body, results, checkpoint.release_lease)

    def confirm(self, committed: Committed) -> None:
        """Apply the checkpoint the store just confirmed as `committed` (the one given
        to `expect` last).

        A checkpoint that keeps the lease (every step's) updates the current parts in
        place and leaves the record to be made when read: a record made at every step
        cost 11 % more instructions per step (167,100 against 150,500, a sync step on the
        memory store), and with a thousand runs in flight it is one more object per run
        for the garbage collector to walk. One that releases the lease ends this
        execution and makes the record at once.
        """
        status, body, results, release = self._expected
        if status is not self.status:
            _log.info("run %s (%s): %s -> %s", self.run_id, self.workflow.name, self.status, status)
        elif _log.isEnabledFor(logging.DEBUG):
            cursor = body.cursor
            _log.debug(
                "run %s (%s): checkpoint %d, next %s",
                self.run_id,
                self.workflow.name,
                committed.seq,
                cursor.step if cursor else None,
            )
        control = committed.control
        self.control = control
        if release:
            self.record = evolve(
                self.record,
                {
                    "status": status,
                    "body": body,
                    "seq": committed.seq,
                    "event_seq": committed.event_seq,
                    "control": control,
                    "results": results,
                    "lease": None,
                },
            )
            return
        self.status = status
        self.body = body
        self.seq = committed.seq
        self.event_seq = committed.event_seq
        self.results = results
        self._record_control = control
        self._stale = True

    def __repr__(self) -> str:
        return f"Execution(run_id={self.run_id!r}, token={self.token}, seq={self.seq})"

    def context(
        self, step: str, attempt: int | None = None, key: str | None = None
    ) -> Context[Any, Any]:
        """The `ctx` for `step`; the attempt and idempotency key default to the cursor's."""
        body = self.body
        plan = self.plan
        occurrence = body.counts.get(step, 0) + 1
        return Context(
            run_id=self.run_id,
            step=step,
            attempt=body.attempt if attempt is None else attempt,
            idempotency_key=key or idempotency_key(self.run_id, step, occurrence),
            input=self.input_value,
            state=body.state,
            state_model=plan.state_model,
            results=self.results,
            decision=body.decision,
            agents=plan.agents,
            rules=plan.rules,
            services=self.services,
        )

    @property
    def lock(self) -> anyio.Lock:
        """Serialises commits of concurrent branches and tasks of this run. Made when
        first needed: most runs never have two commits under way at once."""
        if self._lock is None:
            self._lock = anyio.Lock()
        return self._lock

    @contextmanager
    def cancellable(self, own: bool = True) -> Iterator[anyio.CancelScope]:
        """A cancel scope around step code. With `own`, it is the run's step scope: an
        operator's Stop and a lost lease cancel it (code nested in another step scope,
        like a fan-out's branches, passes False and is cancelled with its parent)."""
        with anyio.CancelScope() as scope:
            if own:
                self.step_scope = scope
                if self.stop_requested:
                    scope.cancel()
            try:
                yield scope
            finally:
                if own:
                    self.step_scope = None

    def stopped(self, scope: anyio.CancelScope) -> bool:
        """After a `cancellable` scope: True when an operator's Stop cancelled it, False
        when it was not cancelled; raises `LeaseLost` when the lease was lost."""
        if not scope.cancelled_caught:
            return False
        if self.stop_requested and not self.lease_lost:
            return True
        raise LeaseLost()

    def request_stop(self) -> None:
        """Cancel the running step now (an operator's Stop in this process)."""
        self.stop_requested = True
        if self.step_scope is not None:
            self.step_scope.cancel()

    def lose_lease(self, refusal: tuple[str, str] | None = None) -> None:
        """Another executor owns the run now (`refusal` says how this one learned it),
        or this one lets go of it (it stops at once): cancel the step, write nothing
        more."""
        self.lease_lost = True
        self.refusal = self.refusal or refusal
        if self.step_scope is not None:
            self.step_scope.cancel()


def wants(control: Control | None, kind: str) -> bool:
    """Whether an operator's pending request is `kind` (`pause` or `stop`)."""
    return control is not None and control.kind == kind


def unknown_step(workflow: Workflow, step: str, value: str, how: str) -> UnknownStepError:
    known = sorted(n for n in workflow.steps if n != "__start__")
    return UnknownStepError(
        f"workflow {workflow.name!r}: step {step!r} {how} {value!r}, which is not a step of "
        f"the flow; known steps: {known}",
        step=step,
        workflow=workflow.name,
    )


def next_step(workflow: Workflow, step: str, outcome: Any, how: str = "returned") -> str:
    """The step (or `END`) that `outcome`, named by `step`, leads to.

    Raises `TypeError` when `outcome` is no step name, `UnknownStepError` when it names
    a step the flow does not have."""
    if isinstance(outcome, Marker):
        outcome = outcome.value
    if not isinstance(outcome, str):
        raise TypeError(
            f"step {step!r} returned {outcome!r}; a step returns the next step's name, "
            "END, Next(...), Wait(...) or Parallel(...)"
        )
    if outcome == EXECUTE_STEP and workflow.execute_fn is not None:
        return outcome
    if outcome != END and outcome not in workflow.steps:
        raise unknown_step(workflow, step, outcome, how)
    return outcome


def branch_name(workflow: Workflow, fn: Callable[..., Any]) -> str:
    for name, spec in workflow.steps.items():
        if spec.fn is fn:
            return name
    return str(getattr(fn, "__name__", None) or repr(fn))
