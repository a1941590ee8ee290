"""The SQLite store when another process holds the file's write lock.

Statements run inline on the event loop while the file answers at once; a statement
that finds the file locked waits for it on a thread, and every other call on the same
store queues behind that one, so the connection is never used by two at once.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest

from holon.stores import SQLiteStore
from holon.stores.base import Cursor, RunBody, RunRecord, RunStatus

pytestmark = pytest.mark.anyio

NOW = 1_000.0


async def test_a_locked_file_is_waited_for_and_other_calls_queue_behind(tmp_path: Path) -> None:
    path = tmp_path / "holon.db"
    store = SQLiteStore(f"sqlite:///{path}")
    await store.open()
    record = RunRecord(
        run_id="r1",
        workflow="wf",
        version="v1",
        status=RunStatus.QUEUED,
        input={},
        body=RunBody(cursor=Cursor(step="A")),
        created_at=NOW,
        updated_at=NOW,
    )
    await store.create_run(record, [])
    other_process = sqlite3.connect(path, isolation_level=None)
    other_process.execute("BEGIN IMMEDIATE")  # holds the write lock
    done: list[str] = []

    async def lease() -> None:
        assert await store.acquire_lease("r1", "me", 10, NOW) is not None
        done.append("lease")

    async def read() -> None:
        loaded = await store.load_run("r1")
        assert loaded is not None and loaded.status == RunStatus.RUNNING
        done.append("read")

    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                group.start_soon(lease)
                await anyio.wait_all_tasks_blocked()  # the lease waits for the file on a thread
                group.start_soon(read)
                await anyio.wait_all_tasks_blocked()
                assert done == [], "a call ran while another waited with the connection"
                other_process.execute("COMMIT")
    finally:
        other_process.close()
        await store.close()
    assert done == ["lease", "read"]
