"""Turning step values into JSON, and the canonical digest of a JSON value."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
from collections.abc import Callable
from functools import partial
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

from pydantic import BaseModel, SecretBytes, SecretStr
from pydantic_core import PydanticSerializationError, to_jsonable_python

from holon.errors import SecretKeyError, StepOutputError
from holon.sealing import SECRET_KEYS_ENV, Keyring, has_secrets, seal_model, seal_value

__all__ = ["canonical_json", "compact_encoder", "digest", "to_json_value"]


def to_json_value(
    value: Any, *, what: str, run_id: str, step: str | None, keyring: Keyring | None = None
) -> Any:
    """`value` as plain JSON data (models dumped, datetimes as ISO strings, ...), every
    secret in it (`SecretStr`, `SecretBytes`, a field marked `Secret()`) sealed with
    `keyring` (see `holon.sealing`).

    Raises `StepOutputError` naming the step and the offending type when the value has
    no JSON form: holon stores JSON only, never pickles. Raises `SecretKeyError` naming
    the step and the field for a secret when there is no key to seal it: a secret is
    never stored masked or in plaintext.
    """
    if value is None or isinstance(value, (str, int, float, bool)):
        if isinstance(value, float) and not math.isfinite(value):
            raise StepOutputError(
                f"{what} of step {step!r} in run {run_id!r} is {value!r}, which JSON cannot hold",
                run_id=run_id,
                step=step,
            )
        return value
    refuse = partial(_no_key, what=what, run_id=run_id, step=step)
    if isinstance(value, BaseModel):
        dumped = value.model_dump(mode="json")
        if has_secrets(type(value)):
            return seal_model(value, dumped, keyring, refuse)
        return dumped
    problem = _first_non_json(value, "")
    if problem is None:
        try:
            converted = to_jsonable_python(value)
            json.dumps(converted, allow_nan=False)
        except (PydanticSerializationError, TypeError, ValueError):
            problem = ("", value)  # a model or dataclass inside that has no JSON form
    if problem is not None:
        path, bad = problem
        where = f" at {path}" if path else ""
        raise StepOutputError(
            f"{what} of step {step!r} in run {run_id!r} holds{where} a value of type "
            f"{type(bad).__name__} ({_short(bad)}), which JSON cannot hold as it is; use "
            f"dicts with string keys, lists, strings, numbers, booleans, None or pydantic "
            f"models{_hint(bad)}",
            run_id=run_id,
            step=step,
        ) from None
    # A secret inside a list or dict was masked by the conversion: seal it instead.
    return seal_value(value, converted, keyring, refuse)


_JSON_SCALARS = (str, int, float, bool, type(None))


def _first_non_json(value: Any, path: str) -> tuple[str, Any] | None:
    """The path to the first value that JSON cannot hold as it is, and that value; None
    when there is none.

    Plain dicts, lists and tuples must hold JSON values all the way down: a set, a
    datetime or bytes would be turned into a list or a string and read back as one,
    silently another type. A pydantic model (or a dataclass) declares its own JSON
    form, and is read back through its model where the workflow names one.
    """
    if isinstance(value, _JSON_SCALARS):
        if isinstance(value, float) and not math.isfinite(value):
            return path, value
        return None
    if isinstance(value, BaseModel | SecretStr | SecretBytes):
        return None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path or '(root)'} (a key)", key
            found = _first_non_json(item, f"{path}.{key}" if path else key)
            if found is not None:
                return found
        return None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _first_non_json(item, f"{path}[{index}]")
            if found is not None:
                return found
        return None
    return path, value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _hint(value: Any) -> str:
    if isinstance(value, set | frozenset):
        return " (a set would come back as a list: store sorted(...) or a list)"
    if isinstance(value, datetime.date | datetime.time):
        return (
            " (it would come back as a string: store value.isoformat(), or a model "
            "field typed datetime)"
        )
    if isinstance(value, _JSON_SCALARS):
        return ""
    return "; a model field of this type is stored and read back as one"


def _no_key(path: str, *, what: str, run_id: str, step: str | None) -> SecretKeyError:
    where = f"{what} of step {step!r} in run {run_id!r}" if step else f"{what} of run {run_id!r}"
    return SecretKeyError(
        f"{where}: field {path!r} holds a secret, and no key is configured to seal it;"
        f" set {SECRET_KEYS_ENV} or Workflow.Secrets(...) (a secret is "
        "never stored masked or in plaintext)",
        run_id=run_id,
        step=step,
    )


def compact_encoder(*, sort_keys: bool = False) -> Callable[[Any], str]:
    """A compact JSON encoder (separators `,` and `:`, text left unescaped, NaN and
    infinities refused) built once, for values that are JSON data already.

    It is the C encoder that `json.dumps` builds anew on every call: building it costs
    more than encoding a small value, and stores and digests encode several per step.
    It skips the circular-reference check; a cycle ends in RecursionError rather than
    ValueError.
    """
    python = json.JSONEncoder(
        sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    if c_make_encoder is None:  # pragma: no cover - Python without the C encoder
        return python.encode
    chunks = c_make_encoder(
        None, python.default, encode_basestring, None, ":", ",", sort_keys, False, False
    )

    def encode(value: Any) -> str:
        return "".join(chunks(value, 0))

    return encode


_canonical = compact_encoder(sort_keys=True)


def canonical_json(value: Any) -> bytes:
    """Keys sorted, separators `,` and `:`, UTF-8: any client can compute the same bytes."""
    return _canonical(value).encode("utf-8")


def digest(value: Any) -> str:
    """Hex SHA-256 of the canonical JSON of `value`."""
    return hashlib.sha256(canonical_json(value)).hexdigest()
