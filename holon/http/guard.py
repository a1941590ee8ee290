"""What every request passes before an endpoint acts: its size, its caller, its rate.

`caller(request)` authenticates: a bearer token, or the dashboard's session cookie
(which for a write also needs the session's CSRF token in `X-CSRF-Token` or a form's
`csrf` field). Either way the identity is the token's. Each caller (an identity, or
the client's address before it is known) gets `rate` requests a second with bursts of
`burst`; past that, 429 with `Retry-After`. `BodyLimit` answers 413 to a body over the
app's limit without reading more of it than the limit.
"""

from __future__ import annotations

import hmac
import json
import math
import time
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from holon.http.auth import Auth, Identity
from holon.http.problems import HttpProblem, from_pydantic, problem

__all__ = ["BodyLimit", "RateLimiter", "caller", "limit", "read_body"]

BodyT = TypeVar("BodyT", bound=BaseModel)

_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_MAX_BUCKETS = 10_000
"""Callers remembered before those with full buckets are forgotten (bounds memory when
many addresses call)."""


class RateLimiter:
    """A token bucket per caller: `rate` requests a second, bursts of up to `burst`."""

    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate must be positive and burst at least 1; got {rate}, {burst}")
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """Spend one request of `key`'s allowance: 0.0 if allowed, else the seconds until
        the next request would be."""
        now = time.monotonic()
        if len(self._buckets) > _MAX_BUCKETS:
            self._forget_full(now)
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        """Drop the buckets that have filled up again: a caller that comes back gets a
        full one, which is what it would have."""
        refill = self.burst / self.rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < refill}


def limit(request: Request, key: str) -> None:
    limiter: RateLimiter | None = request.app.state.limiter
    if limiter is None:
        return
    delay = limiter.take(key)
    if delay > 0:
        raise HttpProblem(
            429,
            f"too many requests from {key}; allowed {limiter.rate:g} a second",
            headers={"Retry-After": str(max(1, math.ceil(delay)))},
        )


async def caller(request: Request) -> Identity:
    """The authenticated identity of the request (401 without one, 429 over its rate)."""
    auth: Auth = request.app.state.auth
    header = request.headers.get("authorization", "")
    identity: Identity | None = None
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        identity = auth.identify(token.strip())
    elif "session" in request.scope:
        digest = request.session.get("token_sha256")
        if isinstance(digest, str):
            identity = auth.knows_digest(digest)
            if identity is not None and request.method not in _SAFE:
                await _check_csrf(request)
    if identity is None:
        client = request.client.host if request.client else "unknown"
        limit(request, f"address {client}")
        raise HttpProblem(
            401,
            "a valid bearer token is needed (Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    limit(request, f"identity {identity.name!r}")
    return identity


async def _check_csrf(request: Request) -> None:
    expected = request.session.get("csrf")
    given = request.headers.get("x-csrf-token")
    if given is None and request.headers.get("content-type", "").startswith(
        "application/x-www-form-urlencoded"
    ):
        form = await request.form()
        field = form.get("csrf")
        given = field if isinstance(field, str) else None
    if not isinstance(expected, str) or given is None or not hmac.compare_digest(expected, given):
        raise HttpProblem(403, "missing or wrong CSRF token for a request with a session cookie")


async def read_body(request: Request, model: type[BodyT]) -> BodyT:
    """The JSON body validated as `model` (an empty body is `{}`): 400 for one that is
    not JSON, 422 naming each field at fault."""
    raw = await request.body()
    data: Any = {}
    if raw.strip():
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise HttpProblem(400, f"the body is not JSON: {exc}") from None
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        raise from_pydantic(exc) from None


class BodyLimit:
    """ASGI middleware: 413 for a request body over `max_bytes`."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HttpProblem(413, self._detail())
            return message

        await self.app(scope, counted, send)

    def _detail(self) -> str:
        return f"the request body is over the limit of {self.max_bytes} bytes"

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        await problem(413, self._detail())(scope, receive, send)
