"""The three apps of examples/ run as their docstrings say, each process on its own, on
one SQLite file: an agent's draft approved from a process that knows only the run id; a
50-document batch paused, resumed and its worker killed; an incident that waits for the
event that resolves it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from holon import RunStatus
from tests.processes import REPO, child, stored

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

EXAMPLES = REPO / "examples"
COMMAND_TIMEOUT = 60.0


def store_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "HOLON_STORE": f"sqlite:///{tmp_path / 'apps.db'}"}


async def command(env: dict[str, str], example: str, *args: str) -> str:
    """Run one command of an example to its end; its output."""
    with anyio.fail_after(COMMAND_TIMEOUT):
        done = await anyio.run_process(
            [sys.executable, str(EXAMPLES / example), *args],
            cwd=REPO,
            env=env,
            check=False,
            stdin=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
    output = done.stdout.decode()
    assert done.returncode == 0, output
    return output


async def test_an_agents_draft_is_approved_from_a_process_that_knows_only_the_run_id(
    tmp_path: Path,
) -> None:
    env = store_env(tmp_path)
    script = str(EXAMPLES / "agent_approval.py")
    async with child(tmp_path, "serve", script, "serve", env=env) as serve:
        run_id = (await serve.expect_text("run ")).split()[1]
        await serve.expect_text("waiting for approval")
        approved = await command(env, "agent_approval.py", "approve", run_id)
        assert "question: Send this reply to ticket T-1042?" in approved
        assert "approved: the run is queued" in approved
        done = await serve.expect_text("completed: ")
        assert "'approved_by': ['support-lead']" in done
        assert await serve.finish() == 0
    record, timeline = await stored(tmp_path / "apps.db", run_id)
    assert record.status == RunStatus.COMPLETED and record.workflow == "support_reply"
    decision = next(e for e in timeline if e.kind == "decision")
    assert decision.data["by"] == "support-lead" and decision.data["digest"] is not None


async def test_a_batch_is_paused_resumed_and_survives_its_worker_being_killed(
    tmp_path: Path,
) -> None:
    env = store_env(tmp_path)
    script = str(EXAMPLES / "document_batch.py")
    done_by_first: list[str] = []
    async with child(tmp_path, "first", script, "work", env=env) as first:
        await first.expect_text("worker ready")
        assert "started batch" in await command(env, "document_batch.py", "start", "batch")
        await first.expect_text("summarised doc-03")
        paused = await command(env, "document_batch.py", "pause", "batch")
        count = int(paused.split("paused after ")[1].split()[0])
        assert 3 <= count < 50, paused
        record, _ = await stored(tmp_path / "apps.db", "batch")
        assert record.status == RunStatus.PAUSED and record.lease is None
        assert "resumed: queued" in await command(env, "document_batch.py", "resume", "batch")
        await first.expect_text(f"summarised doc-{count + 3:02d}")
        await first.kill()
        done_by_first = [line.split()[1] for line in first.said if line.startswith("summarised")]
    async with child(tmp_path, "second", script, "work", env=env) as second:
        await second.expect_text("worker ready")
        result = await command(env, "document_batch.py", "wait", "batch")
        assert "result: {'summarised': 50, 'last': 'doc-50: three key points'}" in result
    record, timeline = await stored(tmp_path / "apps.db", "batch")
    recorded = [name for name in record.results if name.startswith("summarise")]
    assert len(recorded) == 50
    completed = [e.step for e in timeline if e.kind == "step_completed"]
    assert len(completed) == len(set(completed)) == 50, "no recorded document ran again"
    kinds = [e.kind for e in timeline]
    assert "paused" in kinds and "resumed" in kinds and "recovered" in kinds
    assert len(done_by_first) >= count + 3


async def test_an_incident_waits_for_the_event_that_resolves_it(tmp_path: Path) -> None:
    env = store_env(tmp_path)
    script = str(EXAMPLES / "incident.py")
    async with child(tmp_path, "serve", script, "serve", env=env) as serve:
        run_id = (await serve.expect_text("run ")).split()[1]
        await serve.expect_text("waiting for incident.resolved")
        record, _ = await stored(tmp_path / "apps.db", run_id)
        assert record.status == RunStatus.WAITING and record.lease is None
        resolved = await command(env, "incident.py", "resolve", "INC-7", "maria")
        assert f"delivered to ['{run_id}']" in resolved
        done = await serve.expect_text("completed: ")
        assert "'resolved_by': 'maria'" in done and "checkout restored by maria" in done
        assert await serve.finish() == 0
