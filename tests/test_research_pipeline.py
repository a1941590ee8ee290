"""The research pipeline example, crashed for real: SIGKILL inside step 3, resume in a
fresh process. Steps 1 and 2 are not run again; step 3 runs again with the same
idempotency key; the result is that of a run with no crash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "research_pipeline.py"
BOUND = 15.0


async def run_example(*args: str, env: dict[str, str], until: str | None = None) -> list[str]:
    """Run the example; with `until`, SIGKILL it once it prints a line starting so."""
    lines: list[str] = []
    process = await anyio.open_process(
        [sys.executable, str(EXAMPLE), *args], env=env, stderr=subprocess.STDOUT
    )
    try:
        assert process.stdout is not None
        stdout = BufferedByteReceiveStream(process.stdout)
        with anyio.fail_after(BOUND):
            while True:
                try:
                    line = (await stdout.receive_until(b"\n", 1 << 16)).decode()
                except (anyio.EndOfStream, anyio.IncompleteRead):
                    break
                lines.append(line)
                if until is not None and line.startswith(until):
                    process.send_signal(signal.SIGKILL)
                    break
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if until is None:
        assert code == 0, f"the example failed: {lines}"
    else:
        assert code == -signal.SIGKILL, f"the example was not killed where expected: {lines}"
    return lines


async def test_crash_in_step_three_resumes_without_redoing_steps_one_and_two(
    tmp_path: Path,
) -> None:
    log = tmp_path / "steps.jsonl"
    store = f"sqlite:///{tmp_path / 'holon.db'}"
    env = {**os.environ, "RESEARCH_LOG": str(log), "PYTHONPATH": str(REPO)}
    common = ["qc", "--store", store, "--run-id", "r-1", "--lease-ttl", "0.5"]

    await run_example(*common, "--hold-in", "synthesis", env=env, until="holding in synthesis")
    before = [json.loads(line) for line in log.read_text().splitlines()]
    assert [s["step"] for s in before] == ["fetch_papers", "analyze_papers", "generate_synthesis"]

    lines = await run_example(*common, env=env)
    after = [json.loads(line) for line in log.read_text().splitlines()]
    assert [s["step"] for s in after] == [
        "fetch_papers",
        "analyze_papers",
        "generate_synthesis",
        "generate_synthesis",
    ]
    assert after[2]["key"] == after[3]["key"] == "r-1:generate_synthesis:1"
    crashed_result = json.loads(lines[-1])

    clean = await run_example(
        "qc",
        "--store",
        f"sqlite:///{tmp_path / 'clean.db'}",
        "--run-id",
        "r-2",
        env={**env, "RESEARCH_LOG": ""},
    )
    assert (
        crashed_result
        == json.loads(clean[-1])
        == {"topic": "qc", "synthesis": "2 papers, the newest from 2025"}
    )
