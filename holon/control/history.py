"""What a run's timeline says of its past: the steps it took and the checkpoint before
each of them.

A store keeps a run's latest checkpoint and its timeline. Run surgery (`Rerun`, `Fork`,
`Replay`) needs more of the past than the latest checkpoint: the state before a given
step, and what each step did. Both are read back from the timeline: every step's
`step_completed` event (with its output digest, and its output for a step marked
external), its `state_changed` patch, and the event that says where the run went next.

State values the timeline redacts (secrets) are rebuilt from the run's current state:
a snapshot holds the latest value of a secret field, not the one it had then.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from holon.errors import HolonError
from holon.sealing import REDACTED
from holon.stores.base import RunRecord, TimelineEvent

__all__ = ["Snapshot", "StepTrace", "check_whole", "snapshot_before", "step_starts", "traces"]

_NEXT_KINDS = frozenset({"step_started", "waiting", "parallel_started", "completed"})
_STATE_PATCHES = {"state_changed": "patch", "resumed": "state", "retried": "state"}


@dataclass
class StepTrace:
    """One step a run completed (or failed in), as its timeline tells it."""

    step: str
    seq: int
    """The sequence number of its `step_completed` (or `failed`) event."""
    occurrence: int
    """1 for the step's first completion in the run, 2 for its second, ..."""
    outcome: str | None = None
    """Where the run went next: a step name, `END`, `waiting for KIND then STEP`,
    `parallel [A, B] then JOIN`, `failed: TYPE: message`; None when the timeline does
    not say (the tasks of an `.Execute()` function follow one another in code)."""
    output_digest: str | None = None
    output: Any = None
    has_output: bool = False
    """True when `output` holds the recorded output (a step marked external)."""
    state_patch: dict[str, Any] = field(default_factory=dict)

    def compared(self) -> dict[str, Any]:
        """The fields two runs' traces are compared on."""
        return {
            "step": self.step,
            "outcome": self.outcome,
            "output_digest": self.output_digest,
            "state_patch": self.state_patch,
        }


def check_whole(record: RunRecord, events: Sequence[TimelineEvent]) -> None:
    """Raise unless the timeline is whole from the run's start (a store that caps
    timelines may have dropped its oldest events)."""
    if not events or events[0].kind != "started":
        raise HolonError(
            f"the timeline of run {record.run_id!r} no longer starts at the run's start "
            "(its oldest events were trimmed), so its past checkpoints cannot be rebuilt",
            run_id=record.run_id,
        )


def traces(events: Sequence[TimelineEvent]) -> list[StepTrace]:
    """Every step completion (and step failure) of the timeline, in order; a failure
    that an operator retried is left out (the run went on from there)."""
    found: list[StepTrace] = []
    counts: dict[str, int] = {}
    open_trace: StepTrace | None = None
    for event in events:
        if event.kind == "step_completed" and event.step is not None:
            counts[event.step] = counts.get(event.step, 0) + 1
            open_trace = StepTrace(
                step=event.step,
                seq=event.seq,
                occurrence=counts[event.step],
                output_digest=event.data.get("output_digest"),
                output=event.data.get("output"),
                has_output="output" in event.data,
            )
            found.append(open_trace)
        elif event.kind == "retried" and found and found[-1].occurrence == 0:
            found.pop()  # the failure an operator retried is not where the run went
            open_trace = None
        elif event.kind == "failed":
            error = f"failed: {event.data.get('error')}: {event.data.get('message')}"
            found.append(StepTrace(step=event.step or "", seq=event.seq, occurrence=0))
            found[-1].outcome = error
            open_trace = None
        elif open_trace is not None and event.kind == "state_changed":
            open_trace.state_patch = dict(event.data.get("patch") or {})
        elif open_trace is not None and event.kind in _NEXT_KINDS:
            open_trace.outcome = _outcome(event)
            open_trace = None
    return found


def _outcome(event: TimelineEvent) -> str:
    if event.kind == "step_started":
        return event.step or ""
    if event.kind == "completed":
        return "END"
    if event.kind == "waiting":
        return f"waiting for {event.data.get('wait_kind')} then {event.data.get('next')}"
    return f"parallel {event.data.get('branches')} then {event.data.get('join')}"


def step_starts(events: Sequence[TimelineEvent]) -> list[TimelineEvent]:
    """The `step_started` events: the checkpoints a run can be forked or re-run from."""
    return [e for e in events if e.kind == "step_started" and e.step is not None]


@dataclass
class Snapshot:
    """A run's checkpoint just before a step started, rebuilt from its timeline."""

    step: str
    seq: int
    state: dict[str, Any]
    results: dict[str, Any]
    counts: dict[str, int]


def snapshot_before(
    record: RunRecord,
    events: Sequence[TimelineEvent],
    seq: int,
    initial_state: dict[str, Any],
) -> Snapshot:
    """The checkpoint before the step whose `step_started` event has sequence `seq`.

    Its state is `initial_state` with every state patch recorded before `seq`; its
    results are those of the steps completed before `seq` (their recorded output, else
    the output the run holds if it has the same digest). Raises `HolonError` naming the
    sequence numbers that would do when `seq` is not a `step_started` event.
    """
    starts = {e.seq: e for e in step_starts(events)}
    start = starts.get(seq)
    if start is None or start.step is None:
        choices = ", ".join(f"{e.seq} ({e.step})" for e in starts.values()) or "none"
        raise HolonError(
            f"run {record.run_id!r} has no step starting at timeline event {seq}; the "
            f"steps started at: {choices}",
            run_id=record.run_id,
        )
    state = dict(initial_state)
    results: dict[str, Any] = {}
    counts: dict[str, int] = {}
    for event in events:
        if event.seq >= seq:
            break
        key = _STATE_PATCHES.get(event.kind)
        if key is not None and isinstance(event.data.get(key), dict):
            for name, value in event.data[key].items():
                # A redacted secret: the run's current value stands in for it.
                state[name] = record.body.state.get(name) if value == REDACTED else value
        if event.kind == "step_completed" and event.step is not None:
            counts[event.step] = counts.get(event.step, 0) + 1
            if "output" in event.data:
                results[event.step] = event.data["output"]
            elif event.data.get("output_digest") is not None and event.step in record.results:
                results[event.step] = record.results[event.step]
    return Snapshot(step=start.step, seq=seq, state=state, results=results, counts=counts)
