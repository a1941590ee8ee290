"""The HTTP API, webhooks, notifications and dashboard of holon (`pip install
'holon[http]'`): `create_app(steward)` is an ASGI app; `serve(...)` runs it with
uvicorn."""

from holon.http.app import create_app, endpoints
from holon.http.auth import Auth, AuthConfigError, Identity, Rule, hash_token
from holon.http.serve import serve

__all__ = [
    "Auth",
    "AuthConfigError",
    "Identity",
    "Rule",
    "create_app",
    "endpoints",
    "hash_token",
    "serve",
]
