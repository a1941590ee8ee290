"""Two real processes share one SQLite file: one registers a workflow and executes its
runs; the other, without the workflow's code, discovers it and starts a run by name."""

from __future__ import annotations

import subprocess
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from holon.stores import SQLiteStore
from tests.processes import Child, child

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def process(tmp_path: Path, command: str, db: Path) -> AbstractAsyncContextManager[Child]:
    """`python -m tests.steward_process COMMAND --db DB`, killed on the way out."""
    return child(
        tmp_path,
        command,
        "-m",
        "tests.steward_process",
        command,
        "--db",
        str(db),
        stdin=subprocess.PIPE,
    )


async def test_one_process_registers_another_discovers_and_starts_by_name(
    tmp_path: Path,
) -> None:
    db = tmp_path / "holon.db"
    async with process(tmp_path, "serve", db) as server:
        registered = await server.expect("registration", lambda m: m["event"] == "registered")
        async with process(tmp_path, "start", db) as client:
            listed = await client.expect("the listing", lambda m: m["event"] == "listed")
            result = await client.expect("the result", lambda m: m["event"] == "result")
            assert await client.finish() == 0, client.diagnosis()
        assert server.process.stdin is not None
        await server.process.stdin.send(b"stop\n")
        assert await server.finish() == 0, server.diagnosis()

    [entry] = listed["workflows"]
    assert entry["name"] == "greeter" and entry["version"] == registered["version"]
    assert (entry["owner"], entry["tags"]) == ("greetings-team", ["demo"])
    assert entry["input_schema"]["required"] == ["name"]
    assert entry["steps"] == ["__start__", "Choose", "Greet"]
    assert result["value"] == {"greeting": "Hello, Ada!", "pid": registered["pid"]}
    assert not result["executes"] and not result["imported_the_code"]
    assert result["pid"] != registered["pid"]

    store = SQLiteStore(f"sqlite:///{db}")
    await store.open()
    try:
        record = await store.load_run(result["run_id"])
        assert record is not None and record.version == registered["version"]
        kinds = [e.kind for e in await store.timeline(result["run_id"])]
        assert kinds[0] == "started" and kinds[-1] == "completed"
    finally:
        await store.close()
