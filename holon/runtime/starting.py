"""The record of a new run: its input validated against the workflow, its first state
and cursor, and the events that open its timeline. The runner starts runs with it, and
the engine starts child runs with it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from holon._json import to_json_value
from holon.definition.budget import Budget
from holon.definition.builder import Workflow
from holon.definition.directives import START
from holon.errors import InputValidationError
from holon.runtime.execution import EXECUTE_STEP
from holon.stores.base import Cursor, NewEvent, RunBody, RunLink, RunRecord, RunStatus

__all__ = ["check_input_size", "new_run", "validate_input"]


def validate_input(workflow: Workflow, value: Any) -> Any:
    """`value` as a run of `workflow` stores it (its JSON form, secrets sealed);
    `InputValidationError` when it does not match the Input model."""
    model = workflow.input_model
    keyring = workflow.plan.rules.keyring
    if model is None:
        stored = to_json_value(value, what="input", run_id="(new)", step=None, keyring=keyring)
    else:
        if isinstance(value, BaseModel) and not isinstance(value, model):
            value = value.model_dump()
        try:
            validated = model.model_validate(value)
        except PydanticValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
            raise InputValidationError(
                f"input of workflow {workflow.name!r} does not match {model.__name__}: {problems}",
                errors=[dict(e) for e in exc.errors(include_url=False)],
                workflow=workflow.name,
            ) from None
        stored = to_json_value(validated, what="input", run_id="(new)", step=None, keyring=keyring)
    return stored


def check_input_size(workflow: Workflow, run_input: Any) -> None:
    """`ValueTooLarge` when a validated input is over the workflow's input limit."""
    name = workflow.name
    workflow.size_limits.check(
        "input", run_input, what=f"the input of a run of workflow {name!r}", workflow=name
    )


def new_run(
    workflow: Workflow,
    run_input: Any,
    run_id: str,
    now: float,
    *,
    started_by: str | None = None,
    parent: RunLink | None = None,
    budget: Budget | None = None,
) -> tuple[RunRecord, list[NewEvent]]:
    """The record of a queued run of `workflow` with a validated input, and the events
    that open its timeline (`started`, naming the parent of a child run). `budget`
    replaces the workflow's `.Budget(...)` for this run."""
    run_budget = budget if budget is not None else workflow.run_budget
    state_model = workflow.state_model
    keyring = workflow.plan.rules.keyring
    first_step = EXECUTE_STEP if workflow.execute_fn else START.value
    record = RunRecord(
        run_id=run_id,
        workflow=workflow.name,
        version=workflow.version,
        status=RunStatus.QUEUED,
        input=run_input,
        body=RunBody(
            cursor=Cursor(step=first_step),
            state=to_json_value(
                state_model(), what="state", run_id="(new)", step=None, keyring=keyring
            )
            if state_model
            else {},
            started_by=started_by,
            parent=parent,
            budget=run_budget.as_dict() if run_budget is not None else None,
        ),
        created_at=now,
        updated_at=now,
    )
    started: dict[str, Any] = {"workflow": record.workflow, "version": record.version}
    if started_by is not None:
        started["started_by"] = started_by
    if parent is not None:
        started["parent"] = parent.model_dump(mode="json")
    events = [
        NewEvent(kind="started", at=now, data=started),
        NewEvent(kind="step_started", at=now, step=first_step),
    ]
    return record, events
