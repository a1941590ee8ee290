"""Secrets in runs: sealed (AES-GCM) when they become JSON, opened when a step reads them.

A value typed `SecretStr` or `SecretBytes`, or a model field marked `Secret()`, is never
stored masked (pydantic's JSON would write `"**********"` and lose it) nor in plaintext:
it is stored as an envelope, `{"$holon:secret": 1, "kid": ..., "t": ..., "ct": ...}`,
the ciphertext of its value under the key named by `kid`. Opened, it is a `SecretStr` or
`SecretBytes` again (a marked field's plain value), so it stays masked in reprs and
logs. Without a key, storing a secret is refused with `SecretKeyError`, naming the step
and the field.

Keys come from `Workflow.Secrets(Keyring...)`, else from the environment variable
`HOLON_SECRET_KEYS`: `id:key[,id:key...]`, each key 16, 24 or 32 bytes in URL-safe
base64. The first key seals; every listed key opens, so keys rotate by putting the new
one first and keeping the old ones until nothing sealed with them is left. AES-GCM comes
from `cryptography` (`pip install holon[secrets]`).

Secrets are redacted where they would be shown: `redact` replaces envelopes, secret
values and the values of keys named like secrets (`password`, `api_key`, `token`, ...)
with `"[redacted]"`, for the timeline's log entries and state patches.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any, get_args

from pydantic import BaseModel, SecretBytes, SecretStr

from holon.errors import SecretKeyError

__all__ = [
    "ENVELOPE",
    "SECRET_KEYS_ENV",
    "Keyring",
    "Secret",
    "has_secrets",
    "is_envelope",
    "open_secrets",
    "redact",
    "redacted_fields",
    "seal_model",
    "seal_value",
    "secret_name",
]

SECRET_KEYS_ENV = "HOLON_SECRET_KEYS"
"""The environment variable a workflow's keys come from when `.Secrets()` gives none."""

ENVELOPE = "$holon:secret"
"""The key that marks a sealed value's envelope."""

REDACTED = "[redacted]"

_AAD = b"holon:secret:v1:"
"""Bound to every ciphertext with its key id: an envelope cannot pass for another key's."""

SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "secret",
        "token",
        "apikey",
        "credential",
        "credentials",
        "authorization",
        "cookie",
    }
)
"""Words that make a name secret (`password`, `client_secret`, `access_token`, `apiKey`,
`api_key`, `private_key`): its value is redacted in the timeline, whatever its type."""

_WORDS = re.compile(r"[a-z0-9]+")


@lru_cache(maxsize=4096)
def secret_name(name: str) -> bool:
    """Whether `name` is named like a secret (`tokens` or `author` are not)."""
    lowered = name.lower()
    if "api_key" in lowered or "private_key" in lowered or "privatekey" in lowered:
        return True
    return any(word in SECRET_WORDS for word in _WORDS.findall(lowered))


class Secret:
    """Marks a model field as secret: `api_key: Annotated[str, Secret()]`. Its value is
    stored sealed like a `SecretStr`, and read back as its plain value."""

    def __repr__(self) -> str:
        return "Secret()"


@dataclass(frozen=True)
class Keyring:
    """AES-GCM keys by id; `current` seals, every key opens.

    Args:
        keys: key id -> key of 16, 24 or 32 bytes.
        current: the id of the key that seals; by default the first.

    Example:
        ```python
        import os

        from holon import Keyring

        keyring = Keyring({"k1": os.urandom(32)})
        sealed = keyring.seal(b"hunter2", "str")
        assert keyring.open(sealed) == b"hunter2"
        ```
    """

    keys: Mapping[str, bytes]
    current: str = ""

    def __post_init__(self) -> None:
        if not self.keys:
            raise SecretKeyError("a Keyring needs at least one key")
        for kid, key in self.keys.items():
            if not kid or not isinstance(kid, str) or ":" in kid or "," in kid:
                raise SecretKeyError(f"secret key id {kid!r} must be non-empty, without : or ,")
            if not isinstance(key, bytes) or len(key) not in (16, 24, 32):
                size = len(key) if isinstance(key, bytes) else type(key).__name__
                raise SecretKeyError(
                    f"secret key {kid!r} must be 16, 24 or 32 bytes for AES-GCM, got {size}"
                )
        if not self.current:
            object.__setattr__(self, "current", next(iter(self.keys)))
        if self.current not in self.keys:
            raise SecretKeyError(f"the current key {self.current!r} is not among the keys")
        object.__setattr__(self, "keys", dict(self.keys))

    def __repr__(self) -> str:  # never the keys themselves
        return f"Keyring(ids={list(self.keys)}, current={self.current!r})"

    @classmethod
    def parse(cls, text: str) -> Keyring:
        """A keyring from `id:base64key[,id:base64key...]` (the first seals)."""
        keys: dict[str, bytes] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            kid, sep, encoded = part.partition(":")
            if not sep:
                raise SecretKeyError(
                    f"{SECRET_KEYS_ENV}: each entry is id:base64key, got one without ':'"
                )
            try:
                keys[kid] = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            except ValueError:
                raise SecretKeyError(f"{SECRET_KEYS_ENV}: key {kid!r} is not base64") from None
        return cls(keys)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Keyring | None:
        """The keyring `HOLON_SECRET_KEYS` describes, or None when it is unset."""
        text = (os.environ if environ is None else environ).get(SECRET_KEYS_ENV, "")
        return cls.parse(text) if text.strip() else None

    def seal(self, plaintext: bytes, kind: str) -> dict[str, Any]:
        """The envelope of `plaintext` (`kind`: `str`, `bytes` or `json`)."""
        kid = self.current
        nonce = os.urandom(12)
        sealed = _aesgcm(self.keys[kid]).encrypt(nonce, plaintext, _AAD + kid.encode())
        text = base64.urlsafe_b64encode(nonce + sealed).decode()
        return {ENVELOPE: 1, "kid": kid, "t": kind, "ct": text}

    def open(self, envelope: Mapping[str, Any]) -> bytes:
        """The plaintext of an envelope; `SecretKeyError` when its key is not here or it
        was tampered with."""
        kid = str(envelope.get("kid"))
        key = self.keys.get(kid)
        if key is None:
            raise SecretKeyError(
                f"a stored secret was sealed with key {kid!r}, which is not configured "
                f"(keys here: {list(self.keys)}); add it to {SECRET_KEYS_ENV}"
            )
        try:
            raw = base64.urlsafe_b64decode(str(envelope.get("ct", "")))
            opened: bytes = _aesgcm(key).decrypt(raw[:12], raw[12:], _AAD + kid.encode())
        except Exception:
            raise SecretKeyError(
                f"a stored secret sealed with key {kid!r} does not open: it was changed, "
                "or the key is not the one it was sealed with"
            ) from None
        return opened


def _aesgcm(key: bytes) -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:  # pragma: no cover - depends on the optional extra
        raise SecretKeyError(
            "secrets need the cryptography package: pip install 'holon[secrets]'"
        ) from None
    return AESGCM(key)


def is_envelope(value: Any) -> bool:
    return isinstance(value, dict) and ENVELOPE in value


# -- which models hold secrets -------------------------------------------------------------


def has_secrets(model: type[BaseModel] | None) -> bool:
    """Whether `model` has a field that is secret: typed `SecretStr`/`SecretBytes` or
    marked `Secret()`, directly or in a nested model, list, dict or union. Worked out
    once per model: models without secrets cost nothing more."""
    return model is not None and _has_secrets(model)


@cache
def _has_secrets(model: type[BaseModel]) -> bool:
    return any(
        _marked(field.metadata) or _annotation_has_secrets(field.annotation, {model})
        for field in model.model_fields.values()
    )


def redacted_fields(model: type[BaseModel]) -> frozenset[str]:
    """The fields of `model` whose values the timeline redacts: secret ones (typed,
    marked, or holding secrets in nested models) and those named like secrets."""
    return frozenset(
        name
        for name, field in model.model_fields.items()
        if secret_name(name)
        or _marked(field.metadata)
        or _annotation_has_secrets(field.annotation, {model})
    )


def _marked(metadata: list[Any]) -> bool:
    return any(isinstance(m, Secret) for m in metadata)


def _annotation_has_secrets(annotation: Any, seen: set[type]) -> bool:
    if isinstance(annotation, type):
        if issubclass(annotation, SecretStr | SecretBytes):
            return True
        if issubclass(annotation, BaseModel):
            if annotation in seen:
                return False
            return _marked_fields(annotation, seen | {annotation})
    return any(_annotation_has_secrets(arg, seen) for arg in get_args(annotation))


def _marked_fields(model: type[BaseModel], seen: set[type]) -> bool:
    return any(
        _marked(field.metadata) or _annotation_has_secrets(field.annotation, seen)
        for field in model.model_fields.values()
    )


# -- sealing ------------------------------------------------------------------------------

Refuse = Callable[[str], SecretKeyError]
"""Makes the error for a secret at a field path when there is no key to seal it."""


def seal_model(
    instance: BaseModel, dumped: dict[str, Any], keyring: Keyring | None, refuse: Refuse
) -> dict[str, Any]:
    """`dumped` (the model's JSON form, masked by pydantic) with each secret sealed from
    the value in `instance`."""
    return _seal_fields(instance, dumped, keyring, refuse, "")


def seal_value(value: Any, dumped: Any, keyring: Keyring | None, refuse: Refuse) -> Any:
    """`dumped` (the JSON form of `value`) with every secret in `value` sealed."""
    return _seal(value, dumped, keyring, refuse, "")


def _seal(value: Any, dumped: Any, keyring: Keyring | None, refuse: Refuse, path: str) -> Any:
    if isinstance(value, SecretStr):
        return _sealed(value.get_secret_value().encode(), "str", keyring, refuse, path)
    if isinstance(value, SecretBytes):
        return _sealed(value.get_secret_value(), "bytes", keyring, refuse, path)
    if isinstance(value, BaseModel) and isinstance(dumped, dict):
        return _seal_fields(value, dumped, keyring, refuse, path)
    if isinstance(value, list | tuple) and isinstance(dumped, list):
        return [
            _seal(v, d, keyring, refuse, f"{path}[{i}]")
            for i, (v, d) in enumerate(zip(value, dumped, strict=False))
        ]
    if dataclasses.is_dataclass(value) and not isinstance(value, type) and isinstance(dumped, dict):
        return {
            key: _seal(getattr(value, key, None), d, keyring, refuse, _join(path, key))
            for key, d in dumped.items()
        }
    if isinstance(value, Mapping) and isinstance(dumped, dict) and len(value) == len(dumped):
        return {
            key: _seal(v, d, keyring, refuse, _join(path, key))
            for (key, d), v in zip(dumped.items(), value.values(), strict=True)
        }
    return dumped


def _seal_fields(
    instance: BaseModel, dumped: dict[str, Any], keyring: Keyring | None, refuse: Refuse, path: str
) -> dict[str, Any]:
    out = dict(dumped)
    for name, field in type(instance).model_fields.items():
        if name not in out:
            continue
        where = _join(path, name)
        value = getattr(instance, name)
        if value not in (None, "") and _marked(field.metadata):
            text = json.dumps(out[name], separators=(",", ":"), ensure_ascii=False)
            out[name] = _sealed(text.encode(), "json", keyring, refuse, where)
        else:
            out[name] = _seal(value, out[name], keyring, refuse, where)
    return out


def _sealed(
    plaintext: bytes, kind: str, keyring: Keyring | None, refuse: Refuse, path: str
) -> dict[str, Any] | str:
    if not plaintext and kind != "json":
        return ""  # an empty secret (a default) tells nothing: stored as it is
    if keyring is None:
        raise refuse(path or "(the value itself)")
    return keyring.seal(plaintext, kind)


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


# -- opening ------------------------------------------------------------------------------


def open_secrets(value: Any, keyring: Keyring | None) -> Any:
    """`value` (JSON data) with every envelope opened: a `SecretStr` or `SecretBytes`,
    or the plain value of a marked field. `SecretKeyError` when one cannot be opened
    (no key configured, a key not configured, or a changed ciphertext)."""
    if isinstance(value, dict):
        if ENVELOPE in value:
            if keyring is None:
                raise SecretKeyError(
                    f"a stored secret needs a key to be read, and none is configured: set "
                    f"{SECRET_KEYS_ENV} or pass Workflow.Secrets(...)"
                )
            plaintext = keyring.open(value)
            kind = value.get("t")
            if kind == "bytes":
                return SecretBytes(plaintext)
            if kind == "json":
                return json.loads(plaintext)
            return SecretStr(plaintext.decode())
        return {k: open_secrets(v, keyring) for k, v in value.items()}
    if isinstance(value, list):
        return [open_secrets(v, keyring) for v in value]
    return value


def holds_envelope(value: Any) -> bool:
    """Whether any envelope is in `value` (JSON data)."""
    if isinstance(value, dict):
        return ENVELOPE in value or any(holds_envelope(v) for v in value.values())
    if isinstance(value, list):
        return any(holds_envelope(v) for v in value)
    return False


# -- redacting ----------------------------------------------------------------------------


def redact(value: Any) -> Any:
    """`value` with envelopes, secret values and the values of keys named like secrets
    replaced by `"[redacted]"`: what the timeline shows."""
    if isinstance(value, SecretStr | SecretBytes):
        return REDACTED
    if isinstance(value, dict):
        if ENVELOPE in value:
            return REDACTED
        return {
            k: REDACTED if isinstance(k, str) and secret_name(k) else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value
