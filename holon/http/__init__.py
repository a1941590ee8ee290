"""The HTTP API, webhooks, notifications and dashboard of holon (`pip install
'holon[http]'`): `create_app(steward)` is an ASGI app; `serve(...)` runs it with
uvicorn."""

from holon.http.app import create_app, endpoints
from holon.http.auth import Auth, AuthConfigError, Identity, Rule, hash_token
from holon.http.notify import Notifier
from holon.http.serve import run_app, serve

__all__ = [
    "Auth",
    "AuthConfigError",
    "Identity",
    "Notifier",
    "Rule",
    "create_app",
    "endpoints",
    "hash_token",
    "run_app",
    "serve",
]
