"""The research pipeline example, crashed for real: SIGKILL inside step 3, resume in a
fresh process. Steps 1 and 2 are not run again; step 3 runs again with the same
idempotency key; the result is that of a run with no crash."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.processes import REPO, child

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

EXAMPLE = "examples/research_pipeline.py"


async def run_example(tmp_path: Path, name: str, *args: str, env: dict[str, str]) -> str:
    """Run the example to its end; its last line (the result)."""
    async with child(tmp_path, name, EXAMPLE, *args, env=env) as example:
        await example.expect_text("run ")
        line = await example.expect_text("{")
        assert await example.finish() == 0, example.diagnosis()
    return line


async def test_crash_in_step_three_resumes_without_redoing_steps_one_and_two(
    tmp_path: Path,
) -> None:
    log = tmp_path / "steps.jsonl"
    store = f"sqlite:///{tmp_path / 'holon.db'}"
    env = {**os.environ, "RESEARCH_LOG": str(log), "PYTHONPATH": str(REPO)}
    common = ["qc", "--store", store, "--run-id", "r-1", "--lease-ttl", "0.5"]

    async with child(
        tmp_path, "first", EXAMPLE, *common, "--hold-in", "synthesis", env=env
    ) as first:
        await first.expect_text("holding in synthesis")
        await first.kill()
    before = [json.loads(line) for line in log.read_text().splitlines()]
    assert [s["step"] for s in before] == ["fetch_papers", "analyze_papers", "generate_synthesis"]

    result = await run_example(tmp_path, "second", *common, env=env)
    after = [json.loads(line) for line in log.read_text().splitlines()]
    assert [s["step"] for s in after] == [
        "fetch_papers",
        "analyze_papers",
        "generate_synthesis",
        "generate_synthesis",
    ]
    assert after[2]["key"] == after[3]["key"] == "r-1:generate_synthesis:1"
    clean = await run_example(
        tmp_path,
        "clean",
        "qc",
        "--store",
        f"sqlite:///{tmp_path / 'clean.db'}",
        "--run-id",
        "r-2",
        env={**env, "RESEARCH_LOG": ""},
    )
    assert (
        json.loads(result)
        == json.loads(clean)
        == {"topic": "qc", "synthesis": "2 papers, the newest from 2025"}
    )
