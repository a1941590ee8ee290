"""Child runs: a run that a step of another run started (`Child(...)` in a flow,
`ctx.Child(...)` in an `.Execute()` function) and that the parent waits for.

The child is a run of its own: its record names its parent (`RunBody.parent`), the
parent's record lists its children (`RunBody.children`), and each timeline says so
(`started` with `parent`, `child_started`, `child_ended`). The parent waits like for any
condition (a wait of kind `child`), holding nothing.

The order of writes makes every crash harmless:

1. The child's record is created first, under an id made of the parent's run id, step
   and occurrence, so a parent step that runs again after a crash finds it instead of
   making another.
2. The parent's wait is committed. If the child ended before (it ran elsewhere, fast),
   nobody was there to tell: so once the wait is written, the parent's executor reads
   the child and, if it ended, closes the wait itself (`check_child`).
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
)

__all__ = [
    "check_child",
    "child_failed",
    "child_outcome",
    "child_run_id",
    "child_wait",
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


def child_wait(child: Child, workflow: Workflow, run_id: str) -> Wait:
    """The wait of the parent for its child `run_id`."""
    return Wait(ChildRun(workflow.name, run_id), child.next, on_reject=child.on_failure)


def child_failed(child: RunRecord, step: str | None = None) -> ChildFailed:
    """The error of a parent whose child ended other than completed."""
    error = child.body.error
    message = f"child run {child.run_id!r} ({child.workflow}) ended {child.status.value}"
    if error is not None:
        message += f": {error.type}: {error.message}"
    return ChildFailed(
        message,
        child_run_id=child.run_id,
        status=child.status.value,
        error=error.model_dump(mode="json") if error is not None else None,
        run_id=child.body.parent.run_id if child.body.parent else None,
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


def _closing(parent: RunRecord, child: RunRecord, now: float) -> Checkpoint | None:
    """The checkpoint of `parent` that takes in its ended `child`, or None when the
    parent does not wait for it (any more)."""
    wait = parent.body.wait
    if (
        wait is None
        or wait.kind != "child"
        or wait.spec.get("child_run_id") != child.run_id
        or parent.status not in (RunStatus.WAITING, RunStatus.PAUSED)
    ):
        return None
    outcome = child_outcome(child)
    ended = NewEvent(
        "child_ended",
        now,
        wait.step,
        {"child_run_id": child.run_id, "workflow": child.workflow, "status": child.status.value},
    )
    if child.status == RunStatus.COMPLETED and wait.next == END.value:
        output = child.body.output
        done = NewEvent("completed", now, None, {"output_digest": digest(output)})
        body = parent.body.model_copy(
            update={
                "wait": None,
                "closed_wait": wait,
                "decision": outcome,
                "cursor": None,
                "output": output,
                "paused_from": None,
            }
        )
        return Checkpoint(
            status=RunStatus.COMPLETED,
            body=body,
            at=now,
            results={wait.step: output},
            events=[ended, done],
            clear_control=True,
            release_lease=True,
            wait_keys=[],
        )
    if child.status == RunStatus.COMPLETED:
        checkpoint = close_wait(parent, wait, outcome, wait.next, [ended], now, "child_completed")
        checkpoint.results = {wait.step: child.body.output}
    elif wait.on_reject is not None:
        checkpoint = close_wait(parent, wait, outcome, wait.on_reject, [ended], now, "child_ended")
    else:
        message = str(child_failed(child))
        error = ErrorInfo(type="ChildFailed", message=message, step=wait.step)
        failed = NewEvent("failed", now, wait.step, {"error": error.type, "message": message})
        body = parent.body.model_copy(
            update={
                "wait": None,
                "closed_wait": wait,
                "decision": outcome,
                "cursor": None,
                "error": error,
                "paused_from": None,
            }
        )
        return Checkpoint(
            status=RunStatus.FAILED,
            body=body,
            at=now,
            events=[ended, failed],
            clear_control=True,
            release_lease=True,
            wait_keys=[],
        )
    if parent.status == RunStatus.PAUSED:
        # Paused while it waited: it takes the child in and stays paused; Resume
        # continues with the next step.
        checkpoint.status = RunStatus.PAUSED
        checkpoint.body = checkpoint.body.model_copy(update={"paused_from": None})
    return checkpoint


async def tell_parent(store: Store, clock: Clock, child: RunRecord) -> RunRecord | None:
    """Close the wait of `child`'s parent for it, now that `child` ended; returns the
    parent's record as written (None: no parent, or it waits for something else)."""
    link = child.body.parent
    if link is None or not child.status.terminal:
        return None
    closed: list[bool] = []

    def decide(parent: RunRecord) -> Checkpoint | None:
        checkpoint = _closing(parent, child, clock.now())
        closed.append(checkpoint is not None)
        return checkpoint

    parent = await compare_and_set(store, link.run_id, decide)
    return parent if closed and closed[-1] else None


async def check_child(store: Store, clock: Clock, parent: RunRecord) -> RunRecord | None:
    """After `parent` opened its wait for a child: the child as it is now, and, when it
    has already ended, the parent's wait closed (see step 2 of the module's docstring)."""
    wait = parent.body.wait
    if parent.status != RunStatus.WAITING or wait is None or wait.kind != "child":
        return None
    child = await store.load_run(str(wait.spec.get("child_run_id")))
    if child is not None and child.status.terminal:
        await tell_parent(store, clock, child)
    return child
