"""Turning step values into JSON, and the canonical digest of a JSON value."""

from __future__ import annotations

import hashlib
import json
import math
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticSerializationError, to_jsonable_python

from holon.errors import StepOutputError

__all__ = ["canonical_json", "digest", "to_json_value"]


def to_json_value(value: Any, *, what: str, run_id: str, step: str | None) -> Any:
    """`value` as plain JSON data (models dumped, datetimes as ISO strings, ...).

    Raises `StepOutputError` naming the step and the offending type when the value has
    no JSON form: holon stores JSON only, never pickles.
    """
    if value is None or isinstance(value, (str, int, float, bool)):
        if isinstance(value, float) and not math.isfinite(value):
            raise StepOutputError(
                f"{what} of step {step!r} in run {run_id!r} is {value!r}, which JSON cannot hold",
                run_id=run_id,
                step=step,
            )
        return value
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    try:
        converted = to_jsonable_python(value)
        json.dumps(converted, allow_nan=False)
    except (PydanticSerializationError, TypeError, ValueError):
        raise StepOutputError(
            f"{what} of step {step!r} in run {run_id!r} is a {type(value).__name__}, which "
            "cannot be stored as JSON; return dicts, lists, strings, numbers, booleans, None "
            "or pydantic models",
            run_id=run_id,
            step=step,
        ) from None
    return converted


_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
# The C encoder `json.dumps` builds anew on every call, built once (every step that
# records an output, and every run's end, digests one). No circular-reference check:
# values are JSON data already; a cycle ends in RecursionError rather than ValueError.
_CANONICAL_CHUNKS = (
    None
    if c_make_encoder is None
    else c_make_encoder(
        None, _CANONICAL.default, encode_basestring, None, ":", ",", True, False, False
    )
)


def canonical_json(value: Any) -> bytes:
    """Keys sorted, separators `,` and `:`, UTF-8: any client can compute the same bytes."""
    if _CANONICAL_CHUNKS is None:  # pragma: no cover - Python without the C encoder
        return _CANONICAL.encode(value).encode("utf-8")
    return "".join(_CANONICAL_CHUNKS(value, 0)).encode("utf-8")


def digest(value: Any) -> str:
    """Hex SHA-256 of the canonical JSON of `value`."""
    return hashlib.sha256(canonical_json(value)).hexdigest()
