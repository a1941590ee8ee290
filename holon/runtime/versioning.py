"""Runs in flight meet a changed definition: continue, migrate, or pause.

A run records the version of the definition it started on (`RunRecord.version`). When
an executor picks a run up, `adopt` fits the run to the executor's definition before any
step runs:

* versions match: the stored input and state are validated against the definition's
  schemas; a record that fails them is never handed to a step (the run pauses with
  reason `invalid stored state`, and the message gives the path to the bad field);
* the definition has a `.Migrate(from_version, fn)` for the run's version: `fn`
  upgrades the stored state, which is validated and checkpointed (`state_migrated`);
* the step at the cursor (and every step the run is committed to: the join and pending
  branches of a fan-out, the targets of an open wait) exists in the new definition, and
  input and state validate: the run continues on the new version (`version_changed`);
* otherwise the run is paused with reason `incompatible definition`, the problems listed
  in the `paused` event. An operator decides with `Resume(goto=..., state=...)`; the
  check runs again then. A run is never crash-looped and never sent to a wrong step.

A run adopted by a new version records it in `RunBody.version`; `RunRecord.version`
keeps the version it started on.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from holon._json import to_json_value
from holon.definition.builder import Workflow
from holon.errors import HolonError, InputValidationError, SecretKeyError, StateValidationError
from holon.runtime.context import validate_state
from holon.runtime.execution import Execution, wants
from holon.runtime.transitions import Transitions, step_of
from holon.sealing import has_secrets, open_secrets
from holon.stores.base import RunBody, RunRecord, RunStatus, evolve

__all__ = [
    "INCOMPATIBLE",
    "INVALID_STATE",
    "adopt",
    "cursor_problems",
    "parse_input",
]

INCOMPATIBLE = "incompatible definition"
"""Reason of the pause when a run cannot continue on the definition that met it."""

INVALID_STATE = "invalid stored state"
"""Reason of the pause when a run's stored data fails its own version's schemas."""


def parse_input(workflow: Workflow, record: RunRecord) -> Any:
    """The run's stored input as the Input model; `InputValidationError` names the path."""
    model = workflow.input_model
    if model is None:
        return record.input
    stored = record.input
    try:
        if has_secrets(model):
            stored = open_secrets(stored, workflow.plan.rules.keyring)
        return model.model_validate(stored)
    except SecretKeyError as exc:
        raise InputValidationError(
            f"stored input of run {record.run_id!r}: {exc.message}",
            run_id=record.run_id,
            workflow=workflow.name,
        ) from None
    except PydanticValidationError as exc:
        raise InputValidationError(
            f"stored input of run {record.run_id!r} does not match {model.__name__}: {_paths(exc)}",
            errors=[dict(e) for e in exc.errors(include_url=False)],
            run_id=record.run_id,
            workflow=workflow.name,
        ) from None


def cursor_problems(workflow: Workflow, body: RunBody) -> list[str]:
    """What the run is committed to that the definition does not have."""
    if workflow.execute_fn is not None:
        return []  # `.Execute()` replays from the top; its own check guards the steps
    wanted: list[tuple[str, str]] = []
    cursor = body.cursor
    if cursor is not None:
        wanted.append(("the step at the cursor", cursor.step))
        if cursor.join is not None:
            wanted.append(("the join", cursor.join))
            wanted += [("the pending branch", b) for b in cursor.branches if b not in cursor.done]
    if body.wait is not None:
        for what, target in (
            ("the wait's next step", body.wait.next),
            ("the wait's on_reject step", body.wait.on_reject),
            ("the wait's on_timeout step", body.wait.on_timeout),
        ):
            if target is not None:
                wanted.append((what, target))
    for compensation in body.compensations:
        if compensation.undo is None:
            wanted.append(("the compensable step", compensation.step))
    problems = []
    for what, name in dict.fromkeys(wanted):
        if name not in workflow.steps:
            problems.append(f"{what} {name!r} is not a step of version {workflow.version!r}")
    return problems


async def adopt(transitions: Transitions, execution: Execution) -> bool:
    """Fit a leased run to the executor's definition before it executes.

    Sets `execution.input_value`. Returns False when the run was paused or failed
    instead.
    """
    workflow = execution.workflow
    record = execution.record
    try:
        execution.input_value = parse_input(workflow, record)
    except InputValidationError as exc:
        bad_input: InputValidationError | None = exc
    else:
        bad_input = None
    if record.status not in (RunStatus.RUNNING, RunStatus.WAITING):
        return True
    if wants(execution.control, "stop") or execution.stop_requested:
        return True  # the engine stops it; nothing of it needs to fit
    started_on = record.current_version
    changed = started_on != workflow.version
    if bad_input is not None and not changed:
        # Its own definition refuses the input: no operator action can make it run.
        await transitions.fail(execution, None, bad_input)
        return execution.status == RunStatus.RUNNING  # compensating
    problems = [bad_input.message] if bad_input else []
    body = record.body
    events = []
    if changed and started_on in workflow.migrations:
        try:
            migrated = _migrate(workflow, started_on, body.state, record.run_id)
        except HolonError as exc:
            problems.append(exc.message)
        else:
            body = evolve(body, {"state": migrated})
            events.append(
                transitions.event(
                    "state_migrated",
                    step_of(body),
                    from_version=started_on,
                    to_version=workflow.version,
                )
            )
    try:
        state = validate_state(
            workflow.state_model,
            body.state,
            run_id=record.run_id,
            step=None,
            keyring=workflow.plan.rules.keyring,
        )
    except (StateValidationError, SecretKeyError) as exc:
        problems.append(exc.message)
        state = body.state
    if changed:
        problems += cursor_problems(workflow, body)
    if problems:
        await _pause(transitions, execution, INCOMPATIBLE if changed else INVALID_STATE, problems)
        return False
    if not changed:
        return True
    events.append(
        transitions.event(
            "version_changed",
            step_of(body),
            from_version=started_on,
            to_version=workflow.version,
            state_fields_added=sorted(set(state) - set(record.body.state)),
            state_fields_dropped=sorted(set(record.body.state) - set(state)),
        )
    )
    new_body = evolve(body, {"state": state, "version": workflow.version})
    await transitions.commit(
        execution,
        record.status,
        new_body,
        events=events,
        wake_at=record.wake_at,
        version=workflow.version,
    )
    return True


def _migrate(workflow: Workflow, from_version: str, state: dict[str, Any], run_id: str) -> Any:
    fn = workflow.migrations[from_version]
    try:
        upgraded = fn(dict(state))
    except Exception as exc:
        raise HolonError(
            f"the migration of run {run_id!r} from version {from_version!r} raised "
            f"{type(exc).__name__}: {exc}",
            run_id=run_id,
            workflow=workflow.name,
        ) from exc
    if isinstance(upgraded, BaseModel):
        upgraded = upgraded.model_dump(mode="json")
    if not isinstance(upgraded, dict):
        raise HolonError(
            f"the migration of run {run_id!r} from version {from_version!r} returned "
            f"{type(upgraded).__name__}, not a dict or State model",
            run_id=run_id,
            workflow=workflow.name,
        )
    return to_json_value(upgraded, what="migrated state", run_id=run_id, step=None)


async def _pause(
    transitions: Transitions, execution: Execution, reason: str, problems: list[str]
) -> None:
    record = execution.record
    paused_from = RunStatus.WAITING if record.status == RunStatus.WAITING else None
    await transitions.finish(
        execution,
        RunStatus.PAUSED,
        evolve(record.body, {"paused_from": paused_from}),
        transitions.event(
            "paused",
            step_of(record.body),
            reason=reason,
            problems=problems,
            from_version=record.current_version,
            to_version=execution.workflow.version,
        ),
    )


def _paths(exc: PydanticValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
        for e in exc.errors(include_url=False)
    )
