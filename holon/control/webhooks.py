"""`WebhookRoute`: what a `POST /hooks/{path}` of the HTTP API does for one path.

Made by `Steward.Webhook(workflow, path=...)` in the process that serves the API, or
read from a declarative document's `trigger: {type: webhook, path: ...}` in the
catalogue. Each delivery either starts a run of the workflow with the delivered JSON
as input, or, with `event=`, is sent as that event to the runs waiting on it whose
`Event(..., match=...)` fits the payload (the match is the correlation rule), starting
a run only when `start=True` and no run took it.
"""

from __future__ import annotations

from dataclasses import dataclass

from holon.errors import HolonError

__all__ = ["WebhookRoute", "webhook_path"]


@dataclass(frozen=True)
class WebhookRoute:
    workflow: str
    path: str
    """The path under `/hooks/`, without a leading slash."""
    secret: str | None = None
    """The HMAC-SHA256 key deliveries are signed with; None: the app's webhook secret."""
    event: str | None = None
    """Deliver as this event to waiting runs instead of starting a run."""
    start: bool = True
    """With `event`: start a run when no waiting run took the delivery."""
    source: str | None = None
    """Who sends these deliveries (shown in the catalogue)."""


def webhook_path(path: str) -> str:
    """`path` as a route under `/hooks/`: `/alerts` and `alerts` are both `alerts`."""
    if not isinstance(path, str) or not path.strip("/ "):
        raise HolonError(f"a webhook path is a non-empty string like 'alerts', got {path!r}")
    cleaned = path.strip().strip("/")
    if any(part in ("", ".", "..") for part in cleaned.split("/")):
        raise HolonError(f"webhook path {path!r} has an empty, '.' or '..' segment")
    return cleaned
