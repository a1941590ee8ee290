"""JSON encoding shared by the stores: compact text in, validated records out."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from holon._json import compact_encoder
from holon.errors import CorruptRecord
from holon.stores.base import Control, Lease, RunBody

__all__ = ["dump", "load", "load_body", "load_control", "load_lease"]


dump = compact_encoder()
"""Compact JSON. Values reaching a store were made JSON-safe by the engine."""


def load(text: str | bytes, *, run_id: str, what: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, TypeError) as exc:
        raise CorruptRecord(
            f"run {run_id!r}: stored {what} is not valid JSON ({exc})", run_id=run_id
        ) from None


def load_body(text: str | bytes, *, run_id: str) -> RunBody:
    try:
        return RunBody.model_validate_json(text)
    except PydanticValidationError as exc:
        raise CorruptRecord(
            f"run {run_id!r}: stored body does not match the record schema: {_first_error(exc)}",
            run_id=run_id,
        ) from None


def load_control(text: str | bytes | None, *, run_id: str) -> Control | None:
    if not text:
        return None
    try:
        return Control.model_validate_json(text)
    except PydanticValidationError as exc:
        raise CorruptRecord(
            f"run {run_id!r}: stored control request is invalid: {_first_error(exc)}",
            run_id=run_id,
        ) from None


def load_lease(owner: str | None, token: int, expires_at: float | None) -> Lease | None:
    if owner is None or expires_at is None:
        return None
    return Lease(owner=owner, token=token, expires_at=expires_at)


def _first_error(exc: PydanticValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(root)"
    return f"{where}: {err['msg']}"
