"""JSON encoding shared by the stores: compact text in, validated records out."""

from __future__ import annotations

import json
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from holon.errors import CorruptRecord
from holon.stores.base import Control, Lease, RunBody

__all__ = ["dump", "encode_chunks", "load", "load_body", "load_control", "load_lease"]


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)

# The C encoder that `json.dumps` builds anew on every call, built once: building it
# costs more than encoding a timeline event, and stores encode several per step. It
# skips the circular-reference check, as values reach a store as JSON data already (the
# engine checked them); a cycle would end in RecursionError rather than ValueError.
_C_ENCODER = (
    None
    if c_make_encoder is None
    else c_make_encoder(
        None, _ENCODER.default, encode_basestring, None, ":", ",", False, False, False
    )
)


def _encode_whole(value: Any, _indent_level: int) -> tuple[str]:
    return (_ENCODER.encode(value),)


encode_chunks: Any = _C_ENCODER or _encode_whole
"""`encode_chunks(value, 0)`: compact JSON in pieces to join, for encoders that make
several texts per step and call it directly."""


def dump(value: Any) -> str:
    """Compact JSON. Values reaching a store were made JSON-safe by the engine."""
    return "".join(encode_chunks(value, 0))


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
