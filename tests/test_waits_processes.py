"""Waits across process lifetimes, with real processes on one SQLite file: a run waits
for approval after its process exited and is approved from another process; a timer
set by one process fires in a process started after the deadline."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

from holon import RunStatus, payload_digest
from tests.processes import REPO, stored

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CHILD_TIMEOUT = 30.0
T0 = 1_800_000_000.0


async def run_child(tmp_path: Path, *args: str) -> list[dict[str, Any]]:
    """Run `python -m tests.waits_worker ARGS` to its end; its JSON messages."""
    with anyio.fail_after(CHILD_TIMEOUT):
        done = await anyio.run_process(
            [sys.executable, "-m", "tests.waits_worker", *args],
            cwd=REPO,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode == 0, f"child {args} exited {done.returncode}:\n{stderr}"
    return [json.loads(line) for line in done.stdout.decode().splitlines() if line.strip()]


async def test_a_run_waits_for_approval_across_a_process_exit(tmp_path: Path) -> None:
    db, run_id = tmp_path / "runs.db", f"approve-{uuid.uuid4().hex}"
    common = ["--db", str(db), "--run-id", run_id, "--workflow", "approval"]

    [waiting] = await run_child(tmp_path, "start", *common, "--now", str(T0))
    assert waiting["event"] == "waiting" and waiting["wait_id"] == "Gate#1"
    assert waiting["payload"] == {"draft": "Q3 price list", "lines": 12}
    record, _ = await stored(db, run_id)
    assert record.status == RunStatus.WAITING and record.lease is None
    assert record.body.started_by == "sam"

    # The approver computes the digest from the payload it was shown.
    seen = payload_digest(waiting["payload"])
    assert seen == waiting["digest"]
    said = await run_child(
        tmp_path, "approve", *common, "--now", str(T0 + 600), "--by", "editor", "--digest", seen
    )
    assert said[0] == {"event": "refused", "by": "sam", "error": "NotAnApprover"}
    assert said[-1]["value"] == {"published": "Q3 price list", "by": ["editor"]}

    record, timeline = await stored(db, run_id)
    assert record.status == RunStatus.COMPLETED
    decisions = [e for e in timeline if e.kind in ("decision", "decision_refused")]
    assert [(e.kind, e.data["by"]) for e in decisions] == [
        ("decision_refused", "sam"),
        ("decision", "editor"),
    ]
    assert decisions[1].data["digest"] == seen
    assert decisions[1].data["comment"] == "from another process"
    assert decisions[1].at == T0 + 600


async def test_a_timer_fires_in_a_process_started_after_the_deadline(tmp_path: Path) -> None:
    db, run_id = tmp_path / "runs.db", f"timer-{uuid.uuid4().hex}"
    common = ["--db", str(db), "--run-id", run_id, "--workflow", "timer"]

    [waiting] = await run_child(tmp_path, "start", *common, "--now", str(T0))
    assert waiting["deadline"] == T0 + 3600
    record, _ = await stored(db, run_id)
    assert record.status == RunStatus.WAITING and record.wake_at == T0 + 3600

    [early] = await run_child(tmp_path, "look", *common, "--now", str(T0 + 3599))
    assert early["status"] == "waiting", "not due yet: nothing happens"

    said = await run_child(tmp_path, "resume", *common, "--now", str(T0 + 7200))
    assert said[-1]["value"] == {"fired_at": T0 + 7200}
    record, timeline = await stored(db, run_id)
    assert record.status == RunStatus.COMPLETED
    kinds = [e.kind for e in timeline]
    assert kinds.index("waiting") < kinds.index("timer_fired") < kinds.index("completed")
