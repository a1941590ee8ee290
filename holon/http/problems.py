"""Errors as `application/problem+json` (RFC 9457): a status, a title, the message
naming the thing at fault, and for a bad body the path of each field at fault."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError as PydanticValidationError
from starlette.responses import JSONResponse

from holon.errors import (
    DecisionConflict,
    DecisionRefused,
    DigestMismatch,
    DocumentError,
    HolonError,
    InboxFull,
    InvalidAnswer,
    InvalidRunState,
    NotAnApprover,
    RunNotFound,
    StateValidationError,
    UnknownStepError,
    ValidationError,
    ValueTooLarge,
    WorkflowDefinitionError,
    WorkflowNotFound,
)

__all__ = ["HttpProblem", "from_error", "from_pydantic", "problem"]

_TITLES = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Body too large",
    415: "Unsupported media type",
    422: "Invalid request",
    429: "Too many requests",
    500: "Internal error",
}


class HttpProblem(Exception):
    """Raised by an endpoint to answer with a problem document."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors
        self.headers = headers


def problem(
    status: int,
    detail: str,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(
        body, status_code=status, media_type="application/problem+json", headers=headers
    )


def _status(exc: HolonError) -> int:
    """The HTTP status of a library error."""
    if isinstance(exc, RunNotFound | WorkflowNotFound):
        return 404
    if isinstance(exc, NotAnApprover):
        return 403
    if isinstance(exc, ValueTooLarge):
        return 413
    if isinstance(exc, InvalidAnswer | ValidationError | UnknownStepError | DocumentError):
        return 422
    if isinstance(exc, WorkflowDefinitionError):
        return 422
    if isinstance(
        exc, DecisionConflict | DigestMismatch | InvalidRunState | DecisionRefused | InboxFull
    ):
        return 409
    return 500


def from_error(exc: HolonError) -> JSONResponse:
    """The problem document of a library error: 404, 403, 409, 413 or 422."""
    errors: list[dict[str, Any]] | None = None
    if isinstance(exc, DocumentError):
        errors = [{"path": exc.field, "line": exc.line, "message": exc.message}]
    elif isinstance(exc, ValidationError) and exc.errors:
        field = "state" if isinstance(exc, StateValidationError) else "input"
        errors = [
            {
                "path": ".".join([field, *(str(p) for p in e.get("loc", ()))]),
                "message": str(e.get("msg", "")),
            }
            for e in exc.errors
        ]
    elif isinstance(exc, ValidationError | UnknownStepError):
        errors = [{"path": _path_of(exc), "message": exc.message}]
    return problem(_status(exc), exc.message, errors)


def _path_of(exc: HolonError) -> str:
    if isinstance(exc, UnknownStepError):
        return "goto"
    if isinstance(exc, StateValidationError):
        return "state"
    return "input"


def from_pydantic(exc: PydanticValidationError, prefix: str = "") -> HttpProblem:
    """A 422 naming each field of the body at fault by its path (`input.name`)."""
    errors = [
        {
            "path": ".".join([*([prefix] if prefix else []), *(str(p) for p in e["loc"])])
            or "(body)",
            "message": e["msg"],
        }
        for e in exc.errors(include_url=False)
    ]
    first = errors[0]
    return HttpProblem(422, f"{first['path']}: {first['message']}", errors=errors)
