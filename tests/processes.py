"""Real child processes for the fault and cross-process tests.

A child reports on its stdout, one line per message, and the test waits on those
lines instead of sleeping. Every wait is bounded, and a failure shows what the child
said and its stderr. Children are killed on the way out, whatever happened.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from holon.stores import SQLiteStore
from holon.stores.base import RunRecord, TimelineEvent

REPO = Path(__file__).resolve().parent.parent
STEP_TIMEOUT = 15.0
"""Bound on every wait for a child: generous for a slow CI machine, yet a hang fails."""

Message = dict[str, Any]


class Child:
    """A running child process and what it has said so far."""

    def __init__(self, process: Process, name: str, stderr_path: Path) -> None:
        self.process = process
        self.name = name
        self.stderr_path = stderr_path
        assert process.stdout is not None
        self._stdout = BufferedByteReceiveStream(process.stdout)
        self.said: list[Any] = []

    def diagnosis(self) -> str:
        stderr = self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""
        return (
            f"child {self.name!r} (pid {self.process.pid}, exit code "
            f"{self.process.returncode}) said {self.said!r}\n--- its stderr ---\n{stderr}"
        )

    async def _line(self, what: str) -> bytes:
        try:
            return await self._stdout.receive_until(b"\n", 1 << 20)
        except (anyio.EndOfStream, anyio.IncompleteRead):
            await self.process.wait()
            pytest.fail(f"exited before {what}: {self.diagnosis()}")

    async def expect(self, what: str, matches: Callable[[Message], bool]) -> Message:
        """Read JSON messages until one matches; fail clearly on exit or timeout."""
        with anyio.move_on_after(STEP_TIMEOUT):
            while True:
                line = await self._line(what)
                try:
                    message = json.loads(line)
                except ValueError:
                    pytest.fail(f"printed a line that is not JSON, {line!r}: {self.diagnosis()}")
                self.said.append(message)
                if matches(message):
                    return dict(message)
        pytest.fail(f"no {what} within {STEP_TIMEOUT} s: {self.diagnosis()}")

    async def expect_text(self, prefix: str) -> str:
        """Read text lines until one starts with `prefix`; fail clearly otherwise."""
        with anyio.move_on_after(STEP_TIMEOUT):
            while True:
                line = (await self._line(f"a line starting {prefix!r}")).decode()
                self.said.append(line)
                if line.startswith(prefix):
                    return line
        pytest.fail(f"no line starting {prefix!r} within {STEP_TIMEOUT} s: {self.diagnosis()}")

    async def finish(self) -> int:
        """Wait for the child to exit by itself; its exit code."""
        with anyio.move_on_after(STEP_TIMEOUT):
            return await self.process.wait()
        pytest.fail(f"did not exit within {STEP_TIMEOUT} s: {self.diagnosis()}")

    async def kill(self) -> None:
        """SIGKILL: no cleanup, no `finally`, no lease release in the child."""
        self.process.kill()
        code = await self.process.wait()
        assert code == -signal.SIGKILL, f"expected death by SIGKILL: {self.diagnosis()}"


@asynccontextmanager
async def child(
    tmp_path: Path,
    name: str,
    *argv: str,
    stdin: int = subprocess.DEVNULL,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[Child]:
    """Start `python ARGV...` in the repository (e.g. `-m tests.crash_worker start`)."""
    stderr_path = tmp_path / f"{name}.stderr"
    with stderr_path.open("wb") as stderr:
        process = await anyio.open_process(
            [sys.executable, *argv],
            cwd=REPO,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
    try:
        yield Child(process, name, stderr_path)
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
                await process.wait()
            await process.aclose()


async def stored(db: Path, run_id: str) -> tuple[RunRecord, list[TimelineEvent]]:
    """A run's record and timeline, read from a SQLite file by this process."""
    store = SQLiteStore(f"sqlite:///{db}")
    await store.open()
    try:
        record = await store.load_run(run_id)
        assert record is not None, f"run {run_id!r} is not in {db}"
        return record, await store.timeline(run_id)
    finally:
        await store.close()
