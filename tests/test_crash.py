"""Fault injection with real processes on a real SQLite file.

A child process (`tests/crash_worker.py`) runs a workflow and tells this test, on its
stdout, when it is inside the step to crash in; the test SIGKILLs it there, and a
second, fresh process picks the run up. The steps log every attempt with its
idempotency key, so the test proves what ran again and what did not.
"""

from __future__ import annotations

import json
import uuid
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from holon import WorkflowRunner
from holon.stores.base import RunStatus, TimelineEvent
from tests.crash_worker import WORKFLOWS
from tests.processes import STEP_TIMEOUT, Child, Message, child, stored

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def worker(tmp_path: Path, name: str, *args: str) -> AbstractAsyncContextManager[Child]:
    """`python -m tests.crash_worker ARGS`, killed on the way out."""
    return child(tmp_path, name, "-m", "tests.crash_worker", *args)


def attempts(log: Path) -> list[Message]:
    """Every step attempt the children (and the in-test runs) logged, in order."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def by_step(log: Path) -> dict[str, list[Message]]:
    grouped: dict[str, list[Message]] = {}
    for entry in attempts(log):
        grouped.setdefault(entry["step"], []).append(entry)
    return grouped


async def run_without_crash(tmp_path: Path, workflow: str) -> Any:
    """The same workflow, start to end, in this process: the result a crash must not
    change."""
    db = tmp_path / "reference.db"
    log = tmp_path / "reference.log"
    async with WorkflowRunner(WORKFLOWS[workflow], store=f"sqlite:///{db}") as runner:
        handle = await runner.Run({"log": str(log)})
        return await handle.Result(timeout=STEP_TIMEOUT)


def kinds(events: list[TimelineEvent], *wanted: str) -> list[tuple[str, str | None]]:
    return [(e.kind, e.step) for e in events if e.kind in wanted]


async def test_sigkill_inside_a_step_resumes_from_the_last_checkpoint(tmp_path: Path) -> None:
    db, log, run_id = tmp_path / "runs.db", tmp_path / "steps.log", f"crash-{uuid.uuid4().hex}"
    common = ["--db", str(db), "--workflow", "linear", "--run-id", run_id]

    async with worker(
        tmp_path, "first", "start", *common, "--log", str(log), "--hang-in", "S3"
    ) as first:
        inside = await first.expect("step S3", lambda m: m.get("event") == "inside")
        assert inside["step"] == "S3"
        await first.kill()
    assert [e["step"] for e in attempts(log)] == ["S1", "S2", "S3"]
    crashed, _ = await stored(db, run_id)
    assert crashed.status == RunStatus.RUNNING and crashed.lease is not None
    assert crashed.body.cursor is not None and crashed.body.cursor.step == "S3"

    async with worker(tmp_path, "second", "resume", *common) as second:
        result = await second.expect("the result", lambda m: m.get("event") == "result")
        assert await second.finish() == 0, second.diagnosis()

    steps = by_step(log)
    assert [len(steps[s]) for s in ("S1", "S2", "S3", "S4", "S5")] == [1, 1, 2, 1, 1], steps
    first_try, second_try = steps["S3"]
    assert first_try["key"] == second_try["key"] == f"{run_id}:S3:1"
    assert (first_try["attempt"], second_try["attempt"]) == (1, 2)
    assert first_try["pid"] != second_try["pid"]
    assert {e["pid"] for e in steps["S1"] + steps["S2"]} == {first_try["pid"]}
    assert {e["pid"] for e in steps["S4"] + steps["S5"]} == {second_try["pid"]}

    assert result["value"] == await run_without_crash(tmp_path, "linear")
    assert result["value"] == {
        "trail": ["S1", "S2", "S3", "S4", "S5"],
        "total": 11_111,
        "base": 0,
        "draft": None,
    }
    record, timeline = await stored(db, run_id)
    assert record.status == RunStatus.COMPLETED and record.lease is None
    assert record.fence > crashed.fence, "the successor must hold a newer fencing token"
    assert kinds(timeline, "step_completed", "recovered") == [
        ("step_completed", "__start__"),
        ("step_completed", "S1"),
        ("step_completed", "S2"),
        ("recovered", "S3"),
        ("step_completed", "S3"),
        ("step_completed", "S4"),
        ("step_completed", "S5"),
    ]
    recovered = next(e for e in timeline if e.kind == "recovered")
    assert recovered.data["attempt"] == 2
    assert timeline[-1].kind == "completed"


async def test_sigkill_inside_a_parallel_branch_reruns_only_that_branch(tmp_path: Path) -> None:
    db, log, run_id = tmp_path / "runs.db", tmp_path / "steps.log", f"crash-{uuid.uuid4().hex}"
    common = ["--db", str(db), "--workflow", "fan", "--run-id", run_id]

    async with worker(
        tmp_path, "first", "start", *common, "--log", str(log), "--hang-in", "Slow"
    ) as first:
        # Both must hold before the kill: Fast's result is durable, Slow is mid-flight.
        await first.expect(
            "Fast's checkpoint",
            lambda m: m.get("event") == "committed" and ["branch_completed", "Fast"] in m["events"],
        )
        if not any(m.get("event") == "inside" for m in first.said):
            await first.expect("branch Slow", lambda m: m.get("event") == "inside")
        await first.kill()
    crashed, _ = await stored(db, run_id)
    cursor = crashed.body.cursor
    assert cursor is not None and cursor.done == ["Fast"] and cursor.join == "Join"
    assert crashed.results["Fast"] == {"branch": "Fast", "value": 41}

    async with worker(tmp_path, "second", "resume", *common) as second:
        result = await second.expect("the result", lambda m: m.get("event") == "result")
        assert await second.finish() == 0, second.diagnosis()

    steps = by_step(log)
    assert {s: len(a) for s, a in steps.items()} == {"Prep": 1, "Fast": 1, "Slow": 2, "Join": 1}
    first_try, second_try = steps["Slow"]
    assert first_try["key"] == second_try["key"] == f"{run_id}:Slow:1"
    assert first_try["pid"] != second_try["pid"] == steps["Join"][0]["pid"]
    assert steps["Fast"][0]["pid"] == first_try["pid"]

    expected = {
        "Fast": {"branch": "Fast", "value": 41},
        "Slow": {"branch": "Slow", "value": 42},
    }
    assert result["value"] == expected == await run_without_crash(tmp_path, "fan")
    record, timeline = await stored(db, run_id)
    assert record.status == RunStatus.COMPLETED
    assert kinds(timeline, "branch_completed", "recovered") == [
        ("branch_completed", "Fast"),
        ("recovered", "Fan"),
        ("branch_completed", "Slow"),
    ]


async def test_a_waiting_run_outlives_its_process_and_a_new_process_approves_it(
    tmp_path: Path,
) -> None:
    db, log, run_id = tmp_path / "runs.db", tmp_path / "steps.log", f"wait-{uuid.uuid4().hex}"
    common = ["--db", str(db), "--workflow", "approval", "--run-id", run_id]

    async with worker(tmp_path, "first", "start", *common, "--log", str(log)) as first:
        await first.expect("the wait", lambda m: m.get("event") == "waiting")
        assert await first.finish() == 0, first.diagnosis()
    waiting, _ = await stored(db, run_id)
    assert waiting.status == RunStatus.WAITING
    assert waiting.lease is None, "a waiting run must hold no lease, so no process is needed"
    assert waiting.body.wait is not None and waiting.body.wait.spec["approvers"] == ["editor"]

    async with worker(tmp_path, "second", "approve", *common, "--by", "editor") as second:
        result = await second.expect("the result", lambda m: m.get("event") == "result")
        assert await second.finish() == 0, second.diagnosis()

    assert result["value"] == {"draft": "v1", "approved_by": ["editor"]}
    steps = by_step(log)
    assert {s: len(a) for s, a in steps.items()} == {"Draft": 1, "Publish": 1}
    assert steps["Draft"][0]["pid"] != steps["Publish"][0]["pid"]
    record, timeline = await stored(db, run_id)
    assert record.status == RunStatus.COMPLETED
    assert [e.kind for e in timeline if e.kind in ("waiting", "decision", "completed")] == [
        "waiting",
        "decision",
        "completed",
    ]
    decision = next(e for e in timeline if e.kind == "decision")
    assert decision.step == "Gate"
    assert decision.data["by"] == "editor" and decision.data["verdict"] == "approve"
    assert decision.data["comment"] == "looks good"
    waited = next(e for e in timeline if e.kind == "waiting")
    assert waited.seq < decision.seq < timeline[-1].seq


async def test_sigkill_during_a_backoff_waits_out_only_what_is_left(tmp_path: Path) -> None:
    db, log, run_id = tmp_path / "runs.db", tmp_path / "steps.log", f"backoff-{uuid.uuid4().hex}"
    common = ["--db", str(db), "--workflow", "backoff", "--run-id", run_id]

    async with worker(tmp_path, "first", "start", *common, "--log", str(log)) as first:
        await first.expect(
            "the failed attempt's checkpoint",
            lambda m: m.get("event") == "committed" and ["attempt_failed", "Call"] in m["events"],
        )
        await first.kill()  # during the 1.5 s backoff
    waiting, _ = await stored(db, run_id)
    assert waiting.body.attempt == 2 and waiting.body.retry_at is not None

    async with worker(tmp_path, "second", "resume", *common) as second:
        result = await second.expect("the result", lambda m: m.get("event") == "result")
        assert await second.finish() == 0, second.diagnosis()
    assert result["value"] == {"attempts": 2}
    calls = attempts(log)
    assert [(c["step"], c["attempt"]) for c in calls] == [("Call", 1), ("Call", 2)]
    assert calls[0]["pid"] != calls[1]["pid"]
    assert calls[1]["at"] >= waiting.body.retry_at, "the second attempt waited for its backoff"
    _, events = await stored(db, run_id)
    recovered = next(e for e in events if e.kind == "recovered")
    assert recovered.data["attempt"] == 2, "the crash during the backoff was not an attempt"


async def test_sigkill_during_compensation_resumes_and_finishes_it(tmp_path: Path) -> None:
    db, log, run_id = tmp_path / "runs.db", tmp_path / "steps.log", f"saga-{uuid.uuid4().hex}"
    common = ["--db", str(db), "--workflow", "saga", "--run-id", run_id]

    async with worker(
        tmp_path, "first", "start", *common, "--log", str(log), "--hang-in", "undo:Flight"
    ) as first:
        await first.expect("the second undo", lambda m: m.get("event") == "inside")
        await first.kill()
    steps = [c["step"] for c in attempts(log)]
    assert steps == ["Flight", "Hotel", "Car", "undo:Hotel", "undo:Flight"]
    compensating, _ = await stored(db, run_id)
    assert compensating.body.compensating and len(compensating.body.compensations) == 1

    async with worker(tmp_path, "second", "resume", *common) as second:
        outcome = await second.expect("the end", lambda m: m.get("event") == "failed")
        assert await second.finish() == 0, second.diagnosis()
    assert outcome == {"event": "failed", "status": "failed", "compensated": True}
    undos = [c for c in attempts(log) if c["step"].startswith("undo:")]
    assert [u["step"] for u in undos] == ["undo:Hotel", "undo:Flight", "undo:Flight"]
    assert undos[1]["key"] == undos[2]["key"] == f"{run_id}:Flight:1"
    assert undos[2]["output"] == {"booked": "Flight"}
    record, events = await stored(db, run_id)
    assert record.body.error is not None and record.body.error.step == "Car"
    assert [e.kind for e in events if e.kind in ("compensated", "failed")] == [
        "compensated",
        "compensated",
        "failed",
    ]
