"""HMAC-SHA256 signatures of webhook deliveries and notices.

The signed text is `"<timestamp>.<body>"`: the timestamp (whole seconds since the
epoch, sent as `X-Holon-Timestamp`) is inside the signature, so an old delivery cannot
be replayed with a fresh timestamp. The signature is sent as
`X-Holon-Signature: sha256=<hex>`.
"""

from __future__ import annotations

import hashlib
import hmac

from holon.errors import HolonError

__all__ = ["SignatureError", "sign", "verify"]


class SignatureError(HolonError):
    """A delivery whose signature or timestamp does not hold (the message says why)."""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def verify(
    secret: str,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    *,
    now: float,
    tolerance: float,
) -> None:
    """Raise `SignatureError` unless `signature` signs `body` at `timestamp` with
    `secret`, and `timestamp` is within `tolerance` seconds of `now`."""
    if not timestamp or not signature:
        raise SignatureError("X-Holon-Timestamp and X-Holon-Signature are required")
    try:
        sent_at = float(timestamp)
    except ValueError:
        raise SignatureError(f"X-Holon-Timestamp is not a time: {timestamp!r}") from None
    if abs(now - sent_at) > tolerance:
        raise SignatureError(
            f"X-Holon-Timestamp is {abs(now - sent_at):.0f} s away from now; "
            f"deliveries are accepted within {tolerance:g} s"
        )
    if not hmac.compare_digest(sign(secret, timestamp, body), signature):
        raise SignatureError("X-Holon-Signature does not match the body")
