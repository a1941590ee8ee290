"""holon installs and works next to the current redis-py (8.x): the declared range
admits it, and a run goes through a real Redis with the client that is installed."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import redis
from packaging.requirements import Requirement

from holon import END, START, Next, Workflow, WorkflowRunner
from holon.stores import RedisStore
from tests.conftest import REDIS_URL, _test_prefix
from tests.redis_support import redis_answers

pytestmark = pytest.mark.anyio

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def declared_redis() -> Requirement:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    return next(r for r in map(Requirement, project["dependencies"]) if r.name == "redis")


def test_the_declared_range_admits_redis_py_8_and_the_installed_client() -> None:
    declared = declared_redis()
    assert declared.specifier.contains("8.1.0") and declared.specifier.contains("5.0.0")
    assert not declared.specifier.contains("9.0.0"), "a major release is tried before it is let in"
    assert declared.specifier.contains(redis.__version__)


async def test_a_run_goes_through_redis_with_the_installed_client() -> None:
    if not redis_answers(REDIS_URL):
        pytest.skip(f"no Redis answers at {REDIS_URL} (scripts/test starts one)")
    wf = Workflow("redis-client").Flow(
        {START: lambda ctx: "Echo", "Echo": lambda ctx: Next(END, output=redis.__version__)}
    )
    store = RedisStore(REDIS_URL, key_prefix=_test_prefix())
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        assert await handle.Result(timeout=10) == redis.__version__
        assert [e.kind for e in await handle.Timeline()][-1] == "completed"
    await store.close()
