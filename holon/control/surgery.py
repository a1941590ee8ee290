"""Run surgery: re-run one step in a sandbox, replay a whole run in a sandbox, fork a
new run from a recorded checkpoint (`RunHandle.Rerun`, `Replay`, `Fork`; `Retry` is an
operator verb, `holon.control.operator`).

Each reads the run's record and timeline and never writes the run itself. `Rerun` and
`Replay` execute the workflow's code in this process (it must be here: registered with
the `Steward` a `Client` was given, or the workflow of a `WorkflowRunner`), in sandboxes
(`holon.control.sandbox`). `Fork` makes an ordinary run that workers execute.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from holon.clock import Clock
from holon.control.history import (
    StepTrace,
    check_whole,
    snapshot_before,
    step_starts,
    traces,
)
from holon.control.operator import Operator
from holon.control.sandbox import (
    SANDBOX_PREFIX,
    create_with_results,
    execute_sandbox,
    initial_state,
    new_sandbox_id,
    replay_variant,
    rerun_variant,
    sandbox_record,
)
from holon.definition.builder import Workflow
from holon.definition.directives import START
from holon.errors import HolonError, UnknownStepError
from holon.runtime.execution import EXECUTE_STEP
from holon.sealing import redact
from holon.stores import MemoryStore
from holon.stores.base import (
    Cursor,
    NewEvent,
    Origin,
    RunBody,
    RunRecord,
    RunStatus,
    TimelineEvent,
)

__all__ = ["Divergence", "ReplayReport", "RerunReport", "fork", "replay", "rerun"]


@dataclass
class RerunReport:
    """What a step did when run again from its recorded snapshot, beside what it did
    then. `diff` holds the fields that differ, each as `{"recorded": ..., "rerun": ...}`."""

    run_id: str
    """The original run (untouched)."""
    step: str
    seq: int
    """The `step_started` event of the original the snapshot was taken before."""
    outcome: str | None
    """Where the step went: a step name, `END`, `waiting for ...`, `parallel ...`, or
    `failed: TYPE: message`."""
    state_patch: dict[str, Any]
    output: Any
    output_digest: str | None
    recorded: dict[str, Any]
    diff: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def same(self) -> bool:
        return not self.diff


@dataclass
class Divergence:
    """The first step at which a replay did something else than the original."""

    index: int
    """Its position among the steps each run completed (0: the first)."""
    fields: list[str]
    """What differs: `step`, `outcome`, `output_digest`, `state_patch`, or `missing`
    (one run has no step there)."""
    original: dict[str, Any] | None
    replay: dict[str, Any] | None


@dataclass
class ReplayReport:
    """A replay's sandbox run and how it compares with the original."""

    run_id: str
    """The sandbox run (`sandbox-...`), kept in the store and flagged as a sandbox."""
    source: str
    status: RunStatus
    steps: int
    """Steps the replay completed."""
    divergence: Divergence | None
    played: dict[str, int]
    """External calls answered from the recording, by name, with how often."""
    error: str | None = None

    @property
    def diverged(self) -> bool:
        return self.divergence is not None


def code_for(operator: Operator, record: RunRecord, verb: str) -> Workflow:
    """The workflow code that executes `record` in this process, or a clear error."""
    workflow = operator.definitions.pick(record) or operator.definitions.newest(record.workflow)
    if workflow is None:
        raise HolonError(
            f"{verb}() of run {record.run_id!r} runs the code of workflow "
            f"{record.workflow!r}, which is not in this process: give it to the Client "
            "(Client(store, workflows=[...])), or use its WorkflowRunner",
            run_id=record.run_id,
            workflow=record.workflow,
        )
    return workflow


async def _history(operator: Operator, run_id: str) -> tuple[RunRecord, list[TimelineEvent]]:
    record = await operator.load(run_id)
    if record.workflow.startswith(SANDBOX_PREFIX):
        raise HolonError(f"run {run_id!r} is a sandbox run; operate on its original", run_id=run_id)
    events = await operator.store.timeline(run_id)
    check_whole(record, events)
    return record, events


# -- rerun -------------------------------------------------------------------------------


async def rerun(
    operator: Operator, run_id: str, step: str, seq: int | None, *, lease_ttl: float
) -> RerunReport:
    """Run `step` again from the snapshot recorded before it (see `RunHandle.Rerun`)."""
    record, events = await _history(operator, run_id)
    workflow = code_for(operator, record, "Rerun")
    if workflow.execute_fn is not None:
        raise HolonError(
            f"Rerun() re-runs a step of a flow; run {run_id!r} is an .Execute() workflow "
            "(use Replay() to run it again in a sandbox)",
            run_id=run_id,
        )
    if step not in workflow.steps:
        known = sorted(workflow.steps)
        raise UnknownStepError(
            f"Rerun({step!r}): not a step of workflow {record.workflow!r}; steps: {known}",
            run_id=run_id,
            step=step,
        )
    starts = [e for e in step_starts(events) if e.step == step]
    if seq is None:
        if not starts:
            raise HolonError(f"run {run_id!r} never started step {step!r}", run_id=run_id)
        seq = starts[-1].seq
    elif seq not in {e.seq for e in starts}:
        choices = [e.seq for e in starts]
        raise HolonError(
            f"Rerun({step!r}, seq={seq}): step {step!r} of run {run_id!r} started at "
            f"timeline events {choices}, not {seq}",
            run_id=run_id,
            step=step,
        )
    snapshot = snapshot_before(record, events, seq, initial_state(workflow, run_id))
    recorded = _recorded_after(events, seq)
    sandbox_id = new_sandbox_id()
    clock = operator.clock
    now = clock.now()
    body = RunBody(
        cursor=Cursor(step=step),
        state=snapshot.state,
        counts=snapshot.counts,
        decision=record.body.decision,
        origin=Origin(run_id=run_id, kind="rerun", seq=seq, sandbox=True),
    )
    sandbox = sandbox_record(
        record, run_id=sandbox_id, workflow=SANDBOX_PREFIX + record.workflow, body=body, now=now
    ).model_copy(update={"results": snapshot.results})
    # In a store of its own, in memory: nothing of a re-run reaches the real store.
    store = MemoryStore()
    await store.open()
    try:
        await execute_sandbox(
            store,
            rerun_variant(workflow, record, step),
            sandbox,
            [NewEvent("started", now), NewEvent("step_started", now, step)],
            clock=clock,
            lease_ttl=lease_ttl,
        )
        rerun_events = await store.timeline(sandbox_id)
        rerun_record = await store.load_run(sandbox_id)
    finally:
        await store.close()
    new = next((t for t in traces(rerun_events) if t.step == step), None)
    output = rerun_record.results.get(step) if rerun_record is not None else None
    report = RerunReport(
        run_id=run_id,
        step=step,
        seq=seq,
        outcome=new.outcome if new else None,
        state_patch=new.state_patch if new else {},
        output=output if new and new.output_digest is not None else None,
        output_digest=new.output_digest if new else None,
        recorded=recorded.compared() if recorded else {},
    )
    if recorded is not None and recorded.has_output:
        report.recorded["output"] = recorded.output
    mine = new.compared() if new else {}
    for key in ("outcome", "output_digest", "state_patch"):
        if report.recorded.get(key) != mine.get(key):
            report.diff[key] = {"recorded": report.recorded.get(key), "rerun": mine.get(key)}
    return report


def _recorded_after(events: list[TimelineEvent], seq: int) -> StepTrace | None:
    """What the step that started at `seq` did in the original run."""
    after = [e for e in events if e.seq > seq]
    found = traces(after)
    return found[0] if found else None


# -- replay ------------------------------------------------------------------------------


async def replay(
    operator: Operator, run_id: str, *, by: str | None, lease_ttl: float
) -> ReplayReport:
    """Run the whole workflow again on the run's input, in a sandbox (see
    `RunHandle.Replay`)."""
    record, events = await _history(operator, run_id)
    workflow = code_for(operator, record, "Replay")
    variant, cassette = replay_variant(workflow, record, events)
    sandbox_id = new_sandbox_id()
    clock = operator.clock
    now = clock.now()
    first = EXECUTE_STEP if workflow.execute_fn is not None else START.value
    body = RunBody(
        cursor=Cursor(step=first),
        state=initial_state(workflow, sandbox_id),
        started_by=by,
        origin=Origin(run_id=run_id, kind="replay", by=by, sandbox=True),
    )
    started = {"workflow": variant.name, "version": variant.version, "replay_of": run_id}
    if by is not None:
        started["by"] = by
    executed = await execute_sandbox(
        operator.store,
        variant,
        sandbox_record(record, run_id=sandbox_id, workflow=variant.name, body=body, now=now),
        [NewEvent("started", now, data=started), NewEvent("step_started", now, first)],
        clock=clock,
        lease_ttl=lease_ttl,
    )
    original = traces(events)
    replayed = traces(await operator.store.timeline(sandbox_id))
    error = executed.body.error
    return ReplayReport(
        run_id=sandbox_id,
        source=run_id,
        status=executed.status,
        steps=sum(1 for t in replayed if t.occurrence),
        divergence=first_divergence(original, replayed, finished=executed.status.terminal),
        played=dict(cassette.played),
        error=f"{error.type}: {error.message}" if error else None,
    )


def first_divergence(
    original: list[StepTrace], replayed: list[StepTrace], *, finished: bool
) -> Divergence | None:
    """The first step the two runs did differently. A replay that halted (at a wait)
    before the original's end has not diverged for stopping there."""
    for index in range(max(len(original), len(replayed))):
        mine = original[index].compared() if index < len(original) else None
        theirs = replayed[index].compared() if index < len(replayed) else None
        if mine is None or theirs is None:
            if theirs is None and not finished:
                return None
            return Divergence(index, ["missing"], mine, theirs)
        differs = [k for k in mine if mine[k] != theirs[k]]
        if differs:
            return Divergence(index, differs, mine, theirs)
    return None


# -- fork --------------------------------------------------------------------------------


async def fork(
    operator: Operator,
    run_id: str,
    at: int,
    state: Mapping[str, Any] | None,
    *,
    by: str | None,
    clock: Clock,
) -> RunRecord:
    """A new, real run from the checkpoint before the step started at timeline event
    `at` (see `RunHandle.Fork`)."""
    record, events = await _history(operator, run_id)
    workflow = operator.definitions.pick(record) or operator.definitions.newest(record.workflow)
    new_id = uuid.uuid4().hex
    origin = Origin(run_id=run_id, kind="fork", seq=at, by=by)
    defaults = initial_state(workflow, new_id) if workflow is not None else {}
    if _is_execute(record, workflow):
        cursor, results, base = _execute_fork(record, events, at, defaults)
        counts: dict[str, int] = {}
    else:
        snapshot = snapshot_before(record, events, at, defaults)
        cursor, results, base, counts = (
            Cursor(step=snapshot.step),
            snapshot.results,
            snapshot.state,
            snapshot.counts,
        )
    patch = None
    if state is not None:
        patch, base = operator.patched_state(record, workflow, state, "Fork", base=base)
    now = clock.now()
    body = RunBody(cursor=cursor, state=base, counts=counts, started_by=by, origin=origin)
    forked = RunRecord(
        run_id=new_id,
        workflow=record.workflow,
        version=record.current_version,
        status=RunStatus.QUEUED,
        input=record.input,
        body=body,
        results=results,
        created_at=now,
        updated_at=now,
    )
    data: dict[str, Any] = {
        "workflow": record.workflow,
        "version": record.current_version,
        "forked_from": run_id,
        "at": at,
    }
    if by is not None:
        data["by"] = by
    if patch is not None:
        data["state"] = redact(patch)
    return await create_with_results(
        operator.store,
        forked,
        [NewEvent("started", now, data=data), NewEvent("step_started", now, cursor.step)],
    )


def _is_execute(record: RunRecord, workflow: Workflow | None) -> bool:
    if workflow is not None:
        return workflow.execute_fn is not None
    cursor = record.body.cursor
    return (cursor is not None and cursor.step == EXECUTE_STEP) or any(
        isinstance(e, dict) and isinstance(e.get("at"), int) for e in record.results.values()
    )


def _execute_fork(
    record: RunRecord, events: list[TimelineEvent], at: int, defaults: dict[str, Any]
) -> tuple[Cursor, dict[str, Any], dict[str, Any]]:
    """For an `.Execute()` run: the journal entries made before event `at` (the
    longest run of positions from the first), and the state they leave."""
    done = {
        e.data["position"]
        for e in events
        if e.seq < at and e.kind == "step_completed" and isinstance(e.data.get("position"), int)
    }
    closed = {e.step for e in events if e.seq < at and e.kind == "wait_closed"}
    journal = {
        name: entry
        for name, entry in record.results.items()
        if isinstance(entry, dict) and isinstance(entry.get("at"), int)
    }
    kept: dict[str, Any] = {}
    state = dict(defaults)
    for name, entry in sorted(journal.items(), key=lambda item: item[1]["at"]):
        if entry["at"] != len(kept) or not (entry["at"] in done or name in closed):
            break
        kept[name] = entry
        changes = entry.get("state") or {}
        state.update(changes.get("set") or {})
        for gone in changes.get("unset") or []:
            state.pop(gone, None)
    return Cursor(step=EXECUTE_STEP), kept, state
