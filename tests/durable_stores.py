"""The `durable` fixture: a real SQLite file and a real Redis, for the tests that must
show a feature on both (import it into a test module: `from tests.durable_stores import
durable, same_data`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from holon.stores import open_store
from holon.stores.base import Store
from holon.stores.redis import RedisStore
from tests.conftest import STORE_FACTORIES
from tests.redis_support import delete_prefix

__all__ = ["durable", "same_data"]

_OTHERS: dict[int, list[Store]] = {}


@pytest.fixture(params=["sqlite", "redis"])
async def durable(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """An open store on a real SQLite file or a real Redis (a unique key prefix, whose
    keys are deleted afterwards). Stores opened on the same data with `same_data`, as
    another process would, are closed with it."""
    store = await STORE_FACTORIES[request.param](tmp_path)
    await store.open()
    try:
        yield store
    finally:
        for other in _OTHERS.pop(id(store), []):
            await other.close()
        await store.close()
        if isinstance(store, RedisStore):
            delete_prefix(store.url, store.key_prefix)


def same_data(store: Store) -> Store:
    """Another store object on the data of `store`, as another process would open it."""
    other = open_store(store.url, key_prefix=getattr(store, "key_prefix", ""))
    _OTHERS.setdefault(id(store), []).append(other)
    return other
