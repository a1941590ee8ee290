"""Child runs across real processes, on a SQLite file and on Redis: a parent starts two
children in Parallel, the executor of one is killed (SIGKILL) in the middle of its step,
another process takes that child over and completes it, and the parent goes on; a
parent is stopped from another process while its two children wait, and they are
stopped with it."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.conftest import REDIS_URL
from tests.processes import child
from tests.redis_support import delete_prefix, redis_answers

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture(params=["sqlite", "redis"])
def store_args(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    if request.param == "sqlite":
        return ["--store", f"sqlite:///{tmp_path / 'runs.db'}"]
    if not redis_answers(REDIS_URL):
        pytest.skip(f"no Redis answers at {REDIS_URL} (scripts/test starts one)")
    prefix = f"holon-test:{uuid.uuid4().hex[:12]}:"
    request.addfinalizer(lambda: delete_prefix(REDIS_URL, prefix))
    return ["--store", REDIS_URL, "--prefix", prefix]


async def test_a_child_whose_executor_is_killed_is_taken_over_and_its_parent_goes_on(
    tmp_path: Path, store_args: list[str]
) -> None:
    run_id = f"parent-{uuid.uuid4().hex[:8]}"
    args = ["-m", "tests.children_worker"]
    async with child(tmp_path, "start", *args, "start", *store_args, "--run-id", run_id) as first:
        running = await first.expect("the child's step", lambda m: m["event"] == "child_running")
        assert running["attempt"] == 1 and running["run_id"] == f"{run_id}/__start__#1/slow"
        await first.kill()
    async with child(
        tmp_path, "finish", *args, "finish", *store_args, "--run-id", run_id
    ) as second:
        retried = await second.expect("the retry", lambda m: m["event"] == "child_running")
        assert retried["attempt"] == 2
        done = await second.expect("the child's end", lambda m: m["event"] == "child_done")
        assert done["result"] == {"items": 3, "attempt": 2}
        parent = await second.expect("the parent's end", lambda m: m["event"] == "parent_done")
        assert parent["result"] == {"slow": {"items": 3, "attempt": 2}, "quick": "quick"}
        assert await second.finish() == 0


async def test_a_parent_stopped_from_another_process_stops_its_waiting_children(
    tmp_path: Path, store_args: list[str]
) -> None:
    run_id = f"holder-{uuid.uuid4().hex[:8]}"
    args = ["-m", "tests.children_worker"]
    async with child(tmp_path, "hold", *args, "hold", *store_args, "--run-id", run_id) as holder:
        await holder.expect("both waiting", lambda m: m["event"] == "waiting")
        assert await holder.finish() == 0
    async with child(tmp_path, "stop", *args, "stop", *store_args, "--run-id", run_id) as stopper:
        said = await stopper.expect("the stop", lambda m: m["event"] == "stopped")
        assert said == {"event": "stopped", "parent": "stopped", "children": ["stopped"] * 2}
        assert await stopper.finish() == 0
