"""Stores: where runs live. `open_store(url)` picks one from a URL.

| URL | store |
| --- | --- |
| `memory://` | `MemoryStore`: this process only; for tests |
| `sqlite:///path/to/file.db` | `SQLiteStore`: the embedded default, `.holon/holon.db` |
| `redis://host:port/db`, `rediss://...` | `RedisStore`: many workers on many machines |
| `redis+cluster://host:port` | `RedisStore` on a Redis Cluster |

A bare name stands for its usual URL: `"redis"` for `redis://localhost:6379/0`,
`"sqlite"` for the embedded default, `"memory"` for `memory://`.
"""

from __future__ import annotations

import os

from holon.errors import StoreError
from holon.stores.base import (
    TERMINAL_STATUSES,
    Checkpoint,
    Committed,
    Control,
    Cursor,
    Decision,
    ErrorInfo,
    Lease,
    LeaseGrant,
    NewEvent,
    Page,
    RunBody,
    RunRecord,
    RunStatus,
    RunSummary,
    Store,
    TimelineEvent,
    WaitRecord,
)
from holon.stores.memory import MemoryStore
from holon.stores.redis import RedisStore, safe_url
from holon.stores.sqlite import SQLiteStore

__all__ = [
    "DEFAULT_STORE_URL",
    "TERMINAL_STATUSES",
    "Checkpoint",
    "Committed",
    "Control",
    "Cursor",
    "Decision",
    "ErrorInfo",
    "Lease",
    "LeaseGrant",
    "MemoryStore",
    "NewEvent",
    "Page",
    "RedisStore",
    "RunBody",
    "RunRecord",
    "RunStatus",
    "RunSummary",
    "SHORT_NAMES",
    "SQLiteStore",
    "Store",
    "TimelineEvent",
    "WaitRecord",
    "default_store_url",
    "open_store",
]

DEFAULT_STORE_URL = "sqlite:///.holon/holon.db"

SHORT_NAMES = {
    "redis": "redis://localhost:6379/0",
    "sqlite": DEFAULT_STORE_URL,
    "memory": "memory://",
}
"""What a bare store name stands for (`.Persistence(store="redis")`)."""


def default_store_url() -> str:
    """`HOLON_STORE` when set, else the embedded SQLite file `.holon/holon.db`."""
    return os.environ.get("HOLON_STORE") or DEFAULT_STORE_URL


def open_store(url: str | None = None, *, key_prefix: str = "") -> Store:
    """Make the store a URL names (not yet opened: `await store.open()`).

    Args:
        url: `memory://`, `sqlite:///path`, `redis://host:port/db` or
            `redis+cluster://host:port`, or a bare name of `SHORT_NAMES` (`"redis"`);
            None means `default_store_url()`.
        key_prefix: keeps deployments that share one database apart.
    """
    url = url or default_store_url()
    url = SHORT_NAMES.get(url, url)
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme == "memory":
        return MemoryStore(url)
    if scheme == "sqlite":
        return SQLiteStore(url, namespace=key_prefix)
    if scheme in ("redis", "rediss", "redis+cluster", "rediss+cluster"):
        return RedisStore(url, key_prefix=key_prefix)
    raise StoreError(
        f"unknown store URL {safe_url(url)!r}: expected memory://, sqlite:///path/to/file.db, "
        "redis://host:port/db or redis+cluster://host:port"
    )
