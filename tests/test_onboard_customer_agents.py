"""`examples/onboard_customer_agents.py` runs as documented: research by a pydantic-ai
agent, an approval bound to the research's digest, outreach by a streaming agent
whose e-mail tool sends once; tokens summed in the run's usage."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from holon import RunStatus, payload_digest
from holon.stores import SQLiteStore

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "onboard_customer_agents.py"


async def test_the_agents_example_runs_offline(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HOLON_STORE"}
    with anyio.fail_after(60):
        done = await anyio.run_process(
            [sys.executable, str(EXAMPLE)],
            cwd=tmp_path,
            env=env,
            check=False,
            stdin=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
    output = done.stdout.decode()
    assert done.returncode == 0, output
    lines = output.splitlines()
    run_id = lines[0].split()[1]
    assert lines[1].startswith("waiting: Reach out to this customer?")
    assert "streamed: 'Welcome e-mail sent to Ana.'" in lines
    assert "completed: {'said': 'Welcome e-mail sent to Ana.', 'approved_by': ['maria']}" in lines
    assert "e-mails sent: 1" in lines

    store = SQLiteStore(f"sqlite:///{tmp_path / '.holon' / 'holon.db'}")
    await store.open()
    try:
        record = await store.load_run(run_id)
        assert record is not None and record.status == RunStatus.COMPLETED
        timeline = await store.timeline(run_id)
    finally:
        await store.close()
    decision = next(e for e in timeline if e.kind == "decision")
    assert decision.data["digest"] == payload_digest(record.results["Research"])
    requests = [e for e in timeline if e.kind == "model_request"]
    assert [e.step for e in requests] == ["Research", "Research", "Outreach", "Outreach"]
    assert record.body.usage["tokens"] == sum(e.data["tokens"] for e in requests)
    assert f"usage: {record.body.usage['tokens']} tokens in 4 requests" in lines
    assert record.body.budget == {"tokens": 20_000, "requests": 20}
