"""Where a workflow's runs are stored (`Workflow.Persistence`): the settings, and the
mapping form the reference DSL writes them in."""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

if typing.TYPE_CHECKING:
    from holon.stores.base import Store

__all__ = ["PersistenceConfig", "persistence_settings"]


@dataclass(frozen=True)
class PersistenceConfig:
    """Where and whether runs of a workflow are stored."""

    store: str | Store | None = None
    """A store URL or object; None means `HOLON_STORE`, else `.holon/holon.db`."""
    key_prefix: str = ""
    enabled: bool = True
    """False keeps runs in memory only: nothing survives the process."""


def persistence_settings(settings: Mapping[str, Any]) -> tuple[Any, str, bool]:
    """(store, key_prefix, enabled) from `{"Store": ..., "KeyPrefix": ..., "Enabled": ...}`
    (or the snake_case keys); raises ValueError naming an unknown setting."""
    known = {"store": "store", "keyprefix": "key_prefix", "key_prefix": "key_prefix"}
    known["enabled"] = "enabled"
    chosen: dict[str, Any] = {"store": None, "key_prefix": "", "enabled": True}
    for key, value in settings.items():
        field = known.get(str(key).lower()) if isinstance(key, str) else None
        if field is None:
            raise ValueError(
                f".Persistence({{...}}) has an unknown setting {key!r}; known: Store, "
                "KeyPrefix, Enabled (or store, key_prefix, enabled)"
            )
        chosen[field] = value
    return chosen["store"], chosen["key_prefix"], chosen["enabled"]
