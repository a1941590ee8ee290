"""`examples/onboard_customer.py` runs as documented: it halts for approval, a stale
digest is refused, the approval bound to the research digest lets outreach go out."""

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
EXAMPLE = REPO / "examples" / "onboard_customer.py"


async def test_the_example_runs_on_the_embedded_store(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HOLON_STORE"}
    with anyio.fail_after(30):
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
    assert lines[1].startswith("waiting: Send this outreach")
    assert any(line.startswith("refused: 'maria'") and "changed" in line for line in lines)
    assert "completed: {'sent_to': 'ana@northwind.example', 'approved_by': ['maria']}" in lines

    store = SQLiteStore(f"sqlite:///{tmp_path / '.holon' / 'holon.db'}")
    await store.open()
    try:
        record = await store.load_run(run_id)
        assert record is not None and record.status == RunStatus.COMPLETED
        timeline = await store.timeline(run_id)
    finally:
        await store.close()
    research = record.results["Research"]
    decision = next(e for e in timeline if e.kind == "decision")
    assert decision.data["digest"] == payload_digest(research)
    assert decision.data["roles"] == ["account-manager"]
    kinds = [e.kind for e in timeline]
    assert kinds.index("waiting") < kinds.index("decision_refused") < kinds.index("decision")
    assert kinds[-1] == "completed"
