"""Child runs: a run that a step of another run started (`Child(...)` in a flow,
`ctx.Child(...)` in an `.Execute()` function) and that the parent waits for.

A `Parallel` of `Child` directives starts several children at once; the parent's wait
notes each child's end and closes when the last one ended.

The child is a run of its own: its record names its parent (`RunBody.parent`), the
parent's record lists its children (`RunBody.children`), and each timeline says so
(`started` with `parent`, `child_started`, `child_ended`). The parent waits like for any
condition (a wait of kind `child`), holding nothing.

The order of writes makes every crash harmless:

1. The child's record is created first, under an id made of the parent's run id, step
   and occurrence, so a parent step that runs again after a crash finds it instead of
   making another.
2. The parent's wait is committed. If a child ended before (it ran elsewhere, fast),
   nobody was there to tell: so once the wait is written, the parent's executor reads
   each child and, if it ended, takes it in itself (`Engine._tell_family`); and a child
   that ends later takes in its siblings that ended (`tell_parent`). Left open: a lone
   child that ended before its parent waited, when the parent's process dies between
   writing the wait and looking; `Resume(goto=...)` by an operator moves such a parent
   on.
3. When the child ends, its executor (or the operator that stopped it) closes the
   parent's wait (`tell_parent`), a compare-and-set on the parent's record: the one of
   the two that comes second finds the wait closed and writes nothing.
"""

from __future__ import annotations

from typing import Any

from holon._json import digest
from holon.clock import Clock
from holon.definition.builder import Workflow
from holon.definition.conditions import ChildRun
from holon.definition.directives import END, Child, Wait
from holon.errors import ChildFailed, RunConflict, WorkflowNotFound
from holon.runtime.compare_and_set import compare_and_set
from holon.runtime.decisions import close_wait
from holon.runtime.definitions import Definitions
from holon.runtime.starting import check_input_size, new_run, validate_input
from holon.stores.base import (
    Checkpoint,
    ErrorInfo,
    NewEvent,
    RunLink,
    RunRecord,
    RunStatus,
    Store,
    WaitRecord,
)

__all__ = [
    "child_failed",
    "child_names",
    "child_outcome",
    "child_run_id",
    "child_wait",
    "waited_children",
    "resolve_child",
    "start_child",
    "tell_parent",
]


def child_run_id(parent_run_id: str, step: str, occurrence: int) -> str:
    """The id of the child run that occurrence `occurrence` of `step` starts: the same
    whenever that step runs again, so a retried step finds its child."""
    return f"{parent_run_id}/{step}#{occurrence}"


def resolve_child(definitions: Definitions, child: Child) -> Workflow:
    """The workflow `child` names. A `Workflow` given as itself is added to what this
    process executes; a name must be one this process serves."""
    given = child.workflow
    if isinstance(given, Workflow):
        definitions.add(given)
        return given
    found = definitions.newest(child.workflow_name)
    if found is None:
        raise WorkflowNotFound(
            f"Child({child.workflow_name!r}, ...): no workflow of that name is served by "
            f"this process (it serves {definitions.names}); pass the Workflow itself, or "
            "run a worker that serves it",
            workflow=child.workflow_name,
        )
    return found


async def start_child(
    store: Store,
    workflow: Workflow,
    child_input: Any,
    run_id: str,
    parent: RunLink,
    now: float,
) -> RunRecord:
    """Create the child run `run_id` (queued), or find it when this step made it before.
    Its input is validated first: a bad one fails the parent's step and makes nothing."""
    run_input = validate_input(workflow, child_input)
    check_input_size(workflow, run_input)
    record, events = new_run(workflow, run_input, run_id, now, parent=parent)
    stored, created = await store.create_run(record, events)
    if not created and (stored.body.parent != parent or stored.workflow != workflow.name):
        raise RunConflict(
            f"run id {run_id!r}, the child of {parent.run_id!r} at step {parent.step!r}, is "
            f"taken by another run (of workflow {stored.workflow!r})",
            existing_workflow=stored.workflow,
            run_id=run_id,
            workflow=workflow.name,
        )
    return stored


def child_names(step: str, children: list[Child]) -> list[str]:
    """The names children's outputs are recorded under: the step's name for one child;
    in a `Parallel`, each child's `name`, else its workflow's name (`name#2`, ... when
    repeated). Raises `ValueError` for a name given twice."""
    if len(children) == 1:
        return [step]
    names: list[str] = []
    seen: dict[str, int] = {}
    for child in children:
        base = child.name or child.workflow_name
        seen[base] = seen.get(base, 0) + 1
        name = base if seen[base] == 1 else f"{base}#{seen[base]}"
        if name in names:
            raise ValueError(f"step {step!r}: Parallel names child {name!r} twice")
        names.append(name)
    return names


def child_wait(
    children: list[tuple[str, Workflow, str]], next: str, on_failure: str | None
) -> Wait:
    """The wait of the parent for its children: (name, workflow, run id) each."""
    listed = tuple((name, workflow.name, run_id) for name, workflow, run_id in children)
    return Wait(ChildRun(listed), next, on_reject=on_failure)


def waited_children(wait: WaitRecord | None) -> list[dict[str, str]]:
    """The children a wait is for, each `{"name", "workflow", "run_id"}`."""
    if wait is None or wait.kind != "child":
        return []
    return list(wait.spec.get("children") or [])


def child_failed(outcome: dict[str, Any], step: str | None = None) -> ChildFailed:
    """The error of a parent whose child (its `child_outcome`) ended other than
    completed."""
    error = outcome.get("error")
    message = f"child run {outcome['run_id']!r} ({outcome['workflow']}) ended {outcome['status']}"
    if isinstance(error, dict):
        message += f": {error.get('type')}: {error.get('message')}"
    return ChildFailed(
        message,
        child_run_id=str(outcome["run_id"]),
        status=str(outcome["status"]),
        error=error if isinstance(error, dict) else None,
        step=step,
    )


def child_outcome(child: RunRecord) -> dict[str, Any]:
    """What the parent reads of its ended child (`ctx.Decision`)."""
    error = child.body.error
    return {
        "run_id": child.run_id,
        "workflow": child.workflow,
        "status": child.status.value,
        "output": child.body.output if child.status == RunStatus.COMPLETED else None,
        "error": error.model_dump(mode="json") if error is not None else None,
    }


def _closing(parent: RunRecord, children: list[RunRecord], now: float) -> Checkpoint | None:
    """The checkpoint of `parent` that takes in its ended `children`: the wait notes
    them, and closes once every child it waits for ended. None when the parent does not
    wait for them (any more), or took them in already."""
    wait = parent.body.wait
    listed = waited_children(wait)
    ended_before: dict[str, Any] = dict(wait.spec.get("ended") or {}) if wait else {}
    new = [c for c in children if c.run_id in {e["run_id"] for e in listed} - set(ended_before)]
    if wait is None or parent.status not in (RunStatus.WAITING, RunStatus.PAUSED) or not new:
        return None
    ended = {**ended_before, **{c.run_id: child_outcome(c) for c in new}}
    events = [
        NewEvent(
            "child_ended",
            now,
            wait.step,
            {"child_run_id": c.run_id, "workflow": c.workflow, "status": c.status.value},
        )
        for c in new
    ]
    if len(ended) < len(listed):  # others still run: note this one, keep waiting
        noted = wait.model_copy(update={"spec": {**wait.spec, "ended": ended}})
        return Checkpoint(
            status=parent.status,
            body=parent.body.model_copy(update={"wait": noted}),
            at=now,
            events=events,
            wake_at=parent.wake_at,
        )
    outcomes = {c["name"]: ended[c["run_id"]] for c in listed}
    decision = next(iter(outcomes.values())) if len(outcomes) == 1 else {"children": outcomes}
    results = {
        name: outcome["output"]
        for name, outcome in outcomes.items()
        if outcome["status"] == RunStatus.COMPLETED.value
    }
    failed = [o for o in outcomes.values() if o["status"] != RunStatus.COMPLETED.value]
    if failed and wait.on_reject is None:
        error = child_failed(failed[0])
        info = ErrorInfo(type="ChildFailed", message=str(error), step=wait.step)
        fail = NewEvent("failed", now, wait.step, {"error": info.type, "message": info.message})
        body = parent.body.model_copy(
            update={
                "wait": None,
                "closed_wait": wait,
                "decision": decision,
                "cursor": None,
                "error": info,
                "paused_from": None,
            }
        )
        return Checkpoint(
            status=RunStatus.FAILED,
            body=body,
            at=now,
            results=results,
            events=[*events, fail],
            clear_control=True,
            release_lease=True,
            wait_keys=[],
        )
    if not failed and wait.next == END.value:
        output = decision["output"] if len(outcomes) == 1 else results
        done = NewEvent("completed", now, None, {"output_digest": digest(output)})
        body = parent.body.model_copy(
            update={
                "wait": None,
                "closed_wait": wait,
                "decision": decision,
                "cursor": None,
                "output": output,
                "paused_from": None,
            }
        )
        return Checkpoint(
            status=RunStatus.COMPLETED,
            body=body,
            at=now,
            results=results,
            events=[*events, done],
            clear_control=True,
            release_lease=True,
            wait_keys=[],
        )
    target = wait.on_reject if failed else wait.next
    how = "children_ended" if failed else "children_completed"
    checkpoint = close_wait(parent, wait, decision, target, events, now, how)
    checkpoint.results = results
    if parent.status == RunStatus.PAUSED:
        # Paused while it waited: it takes the children in and stays paused; Resume
        # continues with the next step.
        checkpoint.status = RunStatus.PAUSED
        checkpoint.body = checkpoint.body.model_copy(update={"paused_from": None})
    return checkpoint


async def tell_parent(store: Store, clock: Clock, child: RunRecord) -> RunRecord | None:
    """Take `child`, which ended, into its parent's wait; returns the parent's record as
    written (None: no parent, or it waits for something else).

    Its siblings that ended are taken in with it: one may have ended before the parent
    waited, and the parent's process died before it looked (see the module's
    docstring), so whichever child ends later brings it in."""
    link = child.body.parent
    if link is None or not child.status.terminal:
        return None
    parent = await store.load_run(link.run_id)
    ended = [child]
    for listed in waited_children(parent.body.wait if parent else None):
        if listed["run_id"] != child.run_id:
            sibling = await store.load_run(listed["run_id"])
            if sibling is not None and sibling.status.terminal:
                ended.append(sibling)
    closed: list[bool] = []

    def decide(parent: RunRecord) -> Checkpoint | None:
        checkpoint = _closing(parent, ended, clock.now())
        closed.append(checkpoint is not None)
        return checkpoint

    written = await compare_and_set(store, link.run_id, decide)
    return written if closed and closed[-1] else None
