"""Fixtures shared by the suite: the `store` fixture runs a test on every store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from holon.stores import MemoryStore, SQLiteStore
from holon.stores.base import Store

StoreFactory = Callable[[Path], Awaitable[Store]]


async def _memory(tmp_path: Path) -> Store:
    return MemoryStore()


async def _sqlite(tmp_path: Path) -> Store:
    return SQLiteStore(f"sqlite:///{tmp_path / 'holon.db'}")


STORE_FACTORIES: dict[str, StoreFactory] = {"memory": _memory, "sqlite": _sqlite}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=sorted(STORE_FACTORIES))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """An open store of each kind, fresh for each test."""
    opened = await STORE_FACTORIES[request.param](tmp_path)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()
