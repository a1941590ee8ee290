"""Fixtures shared by the suite: the `store` fixture runs a test on every store."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import fakeredis
import pytest

from holon.stores import MemoryStore, SQLiteStore
from holon.stores.base import Store
from holon.stores.redis import RedisStore
from tests.redis_support import delete_prefix, have_redis_server, redis_answers, running_cluster

StoreFactory = Callable[[Path], Awaitable[Store]]

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")


async def _memory(tmp_path: Path) -> Store:
    return MemoryStore()


async def _sqlite(tmp_path: Path) -> Store:
    return SQLiteStore(f"sqlite:///{tmp_path / 'holon.db'}")


async def _fakeredis(tmp_path: Path) -> Store:
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(), decode_responses=True)
    # Tests drive time with the `now` they pass, so leases follow the caller's clock.
    return RedisStore("redis://fakeredis/0", client=client, lease_clock="caller")


def _test_prefix() -> str:
    return f"holon-test:{uuid.uuid4().hex[:12]}:"


async def _redis(tmp_path: Path) -> Store:
    if not redis_answers(REDIS_URL):
        pytest.skip(f"no Redis answers at {REDIS_URL} (scripts/test starts one)")
    return RedisStore(REDIS_URL, key_prefix=_test_prefix(), lease_clock="caller")


STORE_FACTORIES: dict[str, StoreFactory] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "fakeredis": _fakeredis,
    "redis": _redis,
}
"""Every store the `store` fixture opens. `redis-cluster` is made from the session's
Cluster (`redis_cluster_url`), which needs a fixture, so it is listed apart."""

CLUSTER_STORE = "redis-cluster"


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A three-master Redis Cluster on loopback ports, for the whole session."""
    if not have_redis_server():
        pytest.skip("redis-server is not installed")
    with running_cluster(tmp_path_factory.mktemp("cluster")) as nodes:
        yield f"redis+cluster://127.0.0.1:{nodes[0].port}"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=[*sorted(STORE_FACTORIES), CLUSTER_STORE])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """An open store of each kind, fresh for each test (real Redis: a unique key prefix,
    whose keys are deleted afterwards)."""
    if request.param == CLUSTER_STORE:
        url = request.getfixturevalue("redis_cluster_url")
        opened: Store = RedisStore(url, key_prefix=_test_prefix(), lease_clock="caller")
    else:
        opened = await STORE_FACTORIES[request.param](tmp_path)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
        if isinstance(opened, RedisStore) and request.param != "fakeredis":
            delete_prefix(opened.url, opened.key_prefix)
