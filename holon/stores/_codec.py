"""JSON encoding shared by the stores: compact text in, validated records out.

A stored value that cannot be read back is a `CorruptRecord` naming the run and what is
wrong: text that is not UTF-8, JSON that is truncated or invalid, a body that does not
match the record schema or has a schema version this holon does not know, or a value
larger than the store's `max_value_bytes` (bigger than anything holon writes, whose
size limits stop values well below it: see `holon.limits`)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from holon._json import compact_encoder
from holon.errors import CorruptRecord
from holon.limits import MAX_LIMIT
from holon.stores.base import BODY_SCHEMA_VERSION, Control, Lease, RunBody

__all__ = [
    "MAX_VALUE_BYTES",
    "dump",
    "load",
    "load_body",
    "load_control",
    "load_lease",
    "readable",
]

MAX_VALUE_BYTES = MAX_LIMIT
"""The largest stored value (a body, an input, a result) a store reads by default: a
larger one is corrupt, for no limit of `holon.limits` lets one be written."""


dump = compact_encoder()
"""Compact JSON. Values reaching a store were made JSON-safe by the engine."""


def load(text: str | bytes, *, run_id: str, what: str, max_bytes: int | None = None) -> Any:
    if max_bytes is not None:
        _check_size(text, run_id=run_id, what=what, max_bytes=max_bytes)
    try:
        return json.loads(text)
    except UnicodeDecodeError as exc:
        raise CorruptRecord(
            f"run {run_id!r}: stored {what} is not UTF-8 text ({exc})", run_id=run_id
        ) from None
    except (ValueError, TypeError) as exc:
        raise CorruptRecord(
            f"run {run_id!r}: stored {what} is not valid JSON ({exc})", run_id=run_id
        ) from None


def load_body(text: str | bytes, *, run_id: str, max_bytes: int | None = None) -> RunBody:
    if max_bytes is not None:
        _check_size(text, run_id=run_id, what="body", max_bytes=max_bytes)
    try:
        body = RunBody.model_validate_json(text)
    except PydanticValidationError as exc:
        if exc.errors()[0]["type"] == "json_invalid":
            problem = f"is not valid JSON ({exc.errors()[0]['msg']})"
            if isinstance(text, bytes):
                try:
                    text.decode()
                except UnicodeDecodeError as undecodable:
                    problem = f"is not UTF-8 text ({undecodable})"
            raise CorruptRecord(f"run {run_id!r}: stored body {problem}", run_id=run_id) from None
        raise CorruptRecord(
            f"run {run_id!r}: stored body does not match the record schema: {_first_error(exc)}",
            run_id=run_id,
        ) from None
    if body.schema_version != BODY_SCHEMA_VERSION:
        raise CorruptRecord(
            f"run {run_id!r}: stored body has schema version {body.schema_version}; this "
            f"holon reads version {BODY_SCHEMA_VERSION}",
            run_id=run_id,
        )
    return body


def readable(data: str | bytes, max_bytes: int) -> bool:
    """Whether a stored JSON value reads back (text, within `max_bytes`, JSON): what a
    quarantine keeps of a record must, so that the failed run can be read."""
    try:
        _check_size(data, run_id="-", what="value", max_bytes=max_bytes)
        json.loads(data)
    except (CorruptRecord, ValueError, TypeError):
        return False
    return True


def _check_size(text: str | bytes, *, run_id: str, what: str, max_bytes: int) -> None:
    # A str's length counts characters, at most a quarter of its UTF-8 bytes: encode
    # only when the characters alone do not settle it.
    size = len(text)
    if size > max_bytes // 4 and isinstance(text, str):
        size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise CorruptRecord(
            f"run {run_id!r}: stored {what} is {size:,} bytes, more than the {max_bytes:,} "
            "a store reads (max_value_bytes)",
            run_id=run_id,
        )


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
