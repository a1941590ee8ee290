"""Sandboxes: runs made from a recorded run to look at it again without touching it.

A sandbox run executes a *variant* of the run's workflow (`Workflow.variant`) under the
name `sandbox:<workflow>`. No worker or runner serves that name, so nothing but the
process that made the sandbox ever executes it, and its run id (`sandbox-...`) is also
the namespace of its idempotency keys: a system that honours `ctx.IdempotencyKey` tells
its calls apart from the original's. Listings show both the id and the name, and the
run's `origin` says which run it came from.

* A replay's variant answers the steps marked `external=True` from the original run's
  recording (its cassette, `holon.runtime.cassette`), and runs every other step fresh.
* A re-run's variant runs one step and stops the run at the next one.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from holon._json import digest, to_json_value
from holon.clock import Clock
from holon.control.history import StepTrace, traces
from holon.definition.builder import Workflow
from holon.definition.directives import END, Next
from holon.definition.policies import NonRetryable
from holon.definition.steps import StepFunction
from holon.errors import HolonError
from holon.runtime.cassette import Cassette, NoRecording, playing
from holon.runtime.context import Context
from holon.runtime.definitions import Definitions
from holon.runtime.engine import Engine
from holon.sealing import REDACTED
from holon.stores.base import (
    Checkpoint,
    NewEvent,
    RunBody,
    RunRecord,
    RunStatus,
    Store,
    TimelineEvent,
)

__all__ = [
    "SANDBOX_PREFIX",
    "SandboxStop",
    "execute_sandbox",
    "initial_state",
    "is_sandbox",
    "new_sandbox_id",
    "replay_variant",
    "rerun_variant",
    "sandbox_record",
]

SANDBOX_PREFIX = "sandbox:"
"""Put before the workflow name of a sandbox run: a name no worker serves."""


class SandboxStop(NonRetryable):
    """Ends a re-run's sandbox at the step after the one re-run."""


def is_sandbox(record: RunRecord) -> bool:
    """Whether `record` is a sandbox run (`holon show` and listings flag it)."""
    return record.workflow.startswith(SANDBOX_PREFIX) or bool(
        record.body.origin and record.body.origin.sandbox
    )


def new_sandbox_id() -> str:
    return f"sandbox-{uuid.uuid4().hex}"


def initial_state(workflow: Workflow, run_id: str) -> dict[str, Any]:
    """The state a new run of `workflow` starts with (its State model's defaults)."""
    model = workflow.state_model
    if model is None:
        return {}
    state = to_json_value(
        model(), what="state", run_id=run_id, step=None, keyring=workflow.plan.rules.keyring
    )
    return dict(state) if isinstance(state, dict) else {}


def sandbox_record(
    source: RunRecord,
    *,
    run_id: str,
    workflow: str,
    body: RunBody,
    now: float,
) -> RunRecord:
    """The record of a new sandbox run of `source`'s input, queued."""
    return RunRecord(
        run_id=run_id,
        workflow=workflow,
        version=source.current_version,
        status=RunStatus.QUEUED,
        input=source.input,
        body=body,
        created_at=now,
        updated_at=now,
    )


# -- replay ------------------------------------------------------------------------------


def replay_variant(
    workflow: Workflow, record: RunRecord, events: Sequence[TimelineEvent]
) -> tuple[Workflow, Cassette]:
    """The variant that replays `record`: its external steps (or tasks) answered from
    the cassette made of what `record` recorded."""
    name = SANDBOX_PREFIX + record.workflow
    version = record.current_version
    fn = workflow.execute_fn
    if fn is not None:
        journaled = {  # the tasks' results, as `.Execute()` journals them
            task: entry.get("value")
            for task, entry in record.results.items()
            if isinstance(entry, dict) and isinstance(entry.get("at"), int)
        }
        cassette = Cassette(record.run_id, journaled)
        replayed = workflow.variant(name=name, version=version, execute=_playing(fn, cassette))
        return replayed, cassette
    recordings: dict[str, StepTrace] = {}
    external = {n for n, spec in workflow.steps.items() if spec.external}
    for trace in traces(events):
        if trace.step in external and trace.occurrence:
            recordings[f"{trace.step}#{trace.occurrence}"] = trace
    cassette = Cassette(record.run_id, recordings)
    answers = {step: _answer(step, cassette, record, workflow) for step in sorted(external)}
    return workflow.variant(name=name, version=version, steps=answers), cassette


def _playing(fn: StepFunction, cassette: Cassette) -> StepFunction:
    """The `.Execute()` function with `cassette` answering its external tasks."""

    async def replayed(ctx: Any) -> Any:
        with playing(cassette):
            value = fn(ctx)
            if inspect.isawaitable(value):
                value = await value
            return value

    replayed.__qualname__ = getattr(fn, "__qualname__", "replayed")
    return replayed


def _answer(
    step: str, cassette: Cassette, record: RunRecord, workflow: Workflow
) -> Callable[[Context[Any, Any]], Any]:
    """A step function that answers `step` from the cassette: the recorded state patch,
    next step and output of the same occurrence of the step."""

    def recorded(ctx: Context[Any, Any]) -> Any:
        occurrence = ctx.IdempotencyKey.rsplit(":", 1)[1]
        trace: StepTrace = cassette.play(f"{step}#{occurrence}")
        patch = {k: v for k, v in trace.state_patch.items() if v != REDACTED}
        if patch:
            ctx.SetState(**patch)
        if trace.outcome == "END":
            target: Any = END
        elif trace.outcome in workflow.steps:
            target = trace.outcome
        else:
            raise NoRecording(
                f"step {step!r} of run {record.run_id!r} went on to {trace.outcome!r}, "
                "which a replay cannot answer from the recording"
            )
        if trace.output_digest is None:
            return target
        if trace.has_output:
            return Next(target, output=trace.output)
        kept = record.results.get(step)
        if digest(kept) == trace.output_digest:
            return Next(target, output=kept)
        raise NoRecording(
            f"the output of step {step!r} (occurrence {occurrence}) of run "
            f"{record.run_id!r} is not recorded; a replay does not run external steps"
        )

    return recorded


# -- re-run ------------------------------------------------------------------------------


def rerun_variant(workflow: Workflow, record: RunRecord, step: str) -> Workflow:
    """The variant that runs `step` alone: every other step stops the sandbox."""

    def stop(ctx: Context[Any, Any]) -> Any:
        raise SandboxStop(f"the re-run of step {step!r} stops before step {ctx.StepName!r}")

    others = {name: stop for name in workflow.steps if name != step}
    return workflow.variant(
        name=SANDBOX_PREFIX + record.workflow, version=record.current_version, steps=others
    )


# -- executing a sandbox -----------------------------------------------------------------


async def create_with_results(
    store: Store, record: RunRecord, events: Sequence[NewEvent]
) -> RunRecord:
    """Create the queued run `record` with the step results it holds already (a run made
    from another run's checkpoint). A store creates a run without results, so it is
    created `paused`, where no executor takes it, and queued with its results in one
    checkpoint after; `events` go with that checkpoint."""
    if not record.results:
        stored, _ = await store.create_run(record, events)
        return stored
    held = record.model_copy(update={"status": RunStatus.PAUSED, "results": {}})
    stored, _ = await store.create_run(held, [])
    await store.commit(
        record.run_id,
        expected_seq=stored.seq,
        token=None,
        checkpoint=Checkpoint(
            status=record.status,
            body=record.body,
            at=record.created_at,
            results=record.results,
            events=list(events),
        ),
    )
    loaded = await store.load_run(record.run_id)
    assert loaded is not None
    return loaded


async def execute_sandbox(
    store: Store,
    variant: Workflow,
    record: RunRecord,
    events: list[NewEvent],
    *,
    clock: Clock,
    lease_ttl: float,
) -> RunRecord:
    """Create the sandbox run `record` in `store` and execute it here, on `variant`,
    until it ends or halts (a wait); returns its record."""
    await create_with_results(store, record, events)
    owner = f"sandbox:{uuid.uuid4().hex[:8]}"
    engine = Engine(store, Definitions([variant]), owner=owner, lease_ttl=lease_ttl, clock=clock)
    grant = await store.acquire_lease(record.run_id, owner, lease_ttl, clock.now())
    if grant is None:
        raise HolonError(f"could not lease the new sandbox run {record.run_id!r}")
    await engine.execute(grant)
    executed = await store.load_run(record.run_id)
    assert executed is not None
    return executed
