"""What a `Wait` waits for: a human approval, a human answer, an event, or a time.

```python
Wait(HumanApproval(approvers=["ops-lead", "role:sre"], payload=plan), "Deploy")
Wait(HumanInput("Which region?", kind="choice", options=["eu", "us"]), "Provision")
Wait(Event("payment.settled", match={"order": "A-17"}), "Ship", on_timeout="Chase")
Wait(Sleep(timedelta(days=3)), "Remind")
Wait(Until(datetime(2030, 1, 1, tzinfo=UTC)), "Celebrate")
```

Each condition describes itself as JSON (`spec()`), which is stored in the run's wait
record: the wait outlives the process that opened it, so everything needed to judge a
decision later (approvers, payload digest, options, the answer schema) is in the record.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel

from holon._json import digest as payload_digest

__all__ = [
    "ChildRun",
    "Event",
    "HumanApproval",
    "HumanInput",
    "Sleep",
    "Until",
    "WaitCondition",
    "payload_digest",
    "resolve_model",
    "seconds",
    "option_id",
    "wait_kind",
]


def seconds(value: timedelta | float | int | None, what: str) -> float | None:
    """A duration in seconds; `timedelta` or a number. None stays None."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} takes a timedelta or a number of seconds, got {value!r}")
    if value <= 0:
        raise ValueError(f"{what} must be positive, got {value!r}")
    return float(value)


class WaitCondition:
    """What a `Wait` waits for. Each condition knows how to describe itself as JSON."""

    kind: str = "condition"

    def spec(self) -> dict[str, Any]:
        """The JSON description stored in the run's wait record."""
        raise NotImplementedError

    def deadline(self, now: float) -> float | None:
        """When the wait times out (or, for a timer, fires), given when it opens."""
        return None

    def escalate_at(self, now: float) -> float | None:
        """When more approvers are added to the wait, if ever."""
        return None


def _identities(value: Sequence[str], what: str) -> list[str]:
    if isinstance(value, str) or not all(isinstance(a, str) and a for a in value):
        raise TypeError(f"{what} takes a list of identity strings, got {value!r}")
    return list(value)


@dataclass(frozen=True)
class HumanApproval(WaitCondition):
    """Wait until `min_approvals` distinct approvers approve; one rejection closes it.

    Args:
        approvers: identities allowed to decide; `role:<name>` admits anyone whose
            roles (passed as `roles=` to `Approve`/`Reject`) include `<name>`.
        min_approvals: how many distinct approvals open the gate.
        timeout: how long the gate stays open (timedelta or seconds); on expiry the run
            goes to the wait's `on_timeout` step, else ends `expired`.
        question: what the approvers are asked, shown to them.
        payload: JSON shown to the approvers. Its SHA-256 digest (of the canonical
            JSON) is stored with the wait; an approval that names another digest is
            refused, because the approver saw something else.
        forbid_self_approval: the identity that started the run cannot approve it.
        digest: the caller's own hash of what is being approved (e.g. of a document
            the approvers read elsewhere); it replaces the digest of `payload` as the
            one an approval must name.
        require_digest: an approval must name the digest (`Approve(by, digest=...)`);
            one without it is refused, so nobody approves without having seen what.
        escalate_after: after this long without the gate closing, `escalate_to` join
            the approvers.
        escalate_to: identities (or roles) added on escalation.
    """

    approvers: Sequence[str]
    min_approvals: int = 1
    timeout: timedelta | float | None = None
    question: str | None = None
    payload: Any = None
    forbid_self_approval: bool = False
    escalate_after: timedelta | float | None = None
    escalate_to: Sequence[str] = ()
    digest: str | None = None
    require_digest: bool = False
    kind: str = field(default="approval", init=False)

    def __post_init__(self) -> None:
        approvers = _identities(self.approvers, "HumanApproval(approvers=...)")
        if not approvers:
            raise ValueError("HumanApproval(approvers=...) needs at least one approver")
        escalate_to = _identities(self.escalate_to, "HumanApproval(escalate_to=...)")
        if not 1 <= self.min_approvals <= len(set(approvers) | set(escalate_to)):
            raise ValueError(
                f"HumanApproval(min_approvals={self.min_approvals}) must be between 1 and "
                f"the number of approvers ({len(approvers)})"
            )
        seconds(self.timeout, "HumanApproval(timeout=...)")
        seconds(self.escalate_after, "HumanApproval(escalate_after=...)")
        if self.digest is not None and (not isinstance(self.digest, str) or not self.digest):
            raise TypeError(f"HumanApproval(digest=...) takes a string, got {self.digest!r}")
        if self.require_digest and self.digest is None and self.payload is None:
            raise ValueError(
                "HumanApproval(require_digest=True) needs something to digest: a payload= "
                "or the caller's own digest="
            )
        if (self.escalate_after is None) != (not escalate_to):
            raise ValueError("HumanApproval: escalate_after and escalate_to go together")

    def spec(self) -> dict[str, Any]:
        return {
            "approvers": list(self.approvers),
            "min_approvals": self.min_approvals,
            "question": self.question,
            "payload": self.payload,
            "digest": self.digest
            if self.digest is not None
            else payload_digest(self.payload)
            if self.payload is not None
            else None,
            "require_digest": self.require_digest,
            "timeout": seconds(self.timeout, "timeout"),
            "forbid_self_approval": self.forbid_self_approval,
            "escalate_after": seconds(self.escalate_after, "escalate_after"),
            "escalate_to": list(self.escalate_to),
        }

    def deadline(self, now: float) -> float | None:
        timeout = seconds(self.timeout, "timeout")
        return None if timeout is None else now + timeout

    def escalate_at(self, now: float) -> float | None:
        after = seconds(self.escalate_after, "escalate_after")
        return None if after is None else now + after


InputKind = Literal["text", "choice", "approval"]


@dataclass(frozen=True)
class HumanInput(WaitCondition):
    """Wait for a person's answer, given with `handle.Answer(value, by=...)`.

    The answer is validated before it is accepted: a `text` answer is a string, a
    `choice` one of `options`, an `approval` a boolean (or, given `options`, one of
    them), and with `schema` the answer must validate against that pydantic model.

    An option is a JSON value (`"eu"`) or a dict with an `id` and a `label` for people
    (`{"id": "eu", "label": "Europe (Frankfurt)"}`); either way it is answered with its
    id (`Answer("eu", by=...)`), and the id is what `ctx.Decision` holds. A refused
    answer leaves the run waiting. The next step reads the accepted answer as
    `ctx.Decision`.

    Args:
        question: what is asked.
        kind: `"text"`, `"choice"` or `"approval"`.
        options: the choices (for `kind="choice"`, or an `approval` answered by
            option): values or `{"id", "label"}` dicts.
        schema: a pydantic model the answer must match; defined at module level, so
            any process can import it to validate a later answer.
        timeout: how long to wait; then `on_timeout`, else the run ends `expired`.
    """

    question: str
    kind: InputKind = "text"
    options: Sequence[Any] | None = None
    schema: type[BaseModel] | None = None
    timeout: timedelta | float | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("text", "choice", "approval"):
            raise ValueError(
                f"HumanInput(kind={self.kind!r}): expected 'text', 'choice' or 'approval'"
            )
        if self.kind == "choice" and not self.options:
            raise ValueError("HumanInput(kind='choice') needs options=[...]")
        if self.options is not None and isinstance(self.options, str):
            raise TypeError(f"HumanInput(options=...) takes a list, got {self.options!r}")
        if self.options is not None:
            if self.kind == "text":
                raise ValueError(
                    "HumanInput(kind='text') takes no options; use kind='choice' (or "
                    "'approval') to offer some"
                )
            ids = [option_id(o) for o in self.options]
            if len(set(map(repr, ids))) != len(ids):
                raise ValueError(f"HumanInput(options=...) has the same id twice: {ids!r}")
        if self.schema is not None:
            if not (isinstance(self.schema, type) and issubclass(self.schema, BaseModel)):
                raise TypeError(
                    f"HumanInput(schema=...) takes a pydantic model class, got {self.schema!r}"
                )
            if "<locals>" in self.schema.__qualname__:
                raise TypeError(
                    f"HumanInput(schema={self.schema.__qualname__}): define the model at "
                    "module level, so the process that receives the answer can import it"
                )
        seconds(self.timeout, "HumanInput(timeout=...)")

    def spec(self) -> dict[str, Any]:
        schema = self.schema
        return {
            "question": self.question,
            "input_kind": self.kind,
            "options": list(self.options) if self.options is not None else None,
            "schema": schema.model_json_schema() if schema else None,
            "schema_ref": f"{schema.__module__}:{schema.__qualname__}" if schema else None,
            "timeout": seconds(self.timeout, "timeout"),
        }

    def deadline(self, now: float) -> float | None:
        timeout = seconds(self.timeout, "timeout")
        return None if timeout is None else now + timeout


@dataclass(frozen=True)
class Event(WaitCondition):
    """Wait for an event sent with `handle.Send(name, payload)` or, to every run waiting
    on it, `runner.Send(name, payload)`.

    Args:
        name: the event's name, e.g. `"payment.settled"`.
        match: fields the payload must have with these values; a dotted key reaches
            into nested objects (`{"order.id": 17}`).
        timeout: how long to wait; then `on_timeout`, else the run ends `expired`.

    The next step reads `ctx.Decision` as `{"event": name, "payload": ...,
    "event_id": ...}`. Delivery is idempotent on `event_id`.
    """

    name: str
    match: Mapping[str, Any] | None = None
    timeout: timedelta | float | None = None
    kind: str = field(default="event", init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"Event(name=...) takes a non-empty string, got {self.name!r}")
        if self.match is not None and not isinstance(self.match, Mapping):
            raise TypeError(f"Event(match=...) takes a dict, got {self.match!r}")
        seconds(self.timeout, "Event(timeout=...)")

    def spec(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "match": dict(self.match) if self.match else None,
            "timeout": seconds(self.timeout, "timeout"),
        }

    def deadline(self, now: float) -> float | None:
        timeout = seconds(self.timeout, "timeout")
        return None if timeout is None else now + timeout


@dataclass(frozen=True)
class Sleep(WaitCondition):
    """A durable timer: wait this long (a timedelta or seconds), then go on."""

    duration: timedelta | float
    kind: str = field(default="timer", init=False)

    def __post_init__(self) -> None:
        seconds(self.duration, "Sleep(duration)")

    def spec(self) -> dict[str, Any]:
        return {"seconds": seconds(self.duration, "duration")}

    def deadline(self, now: float) -> float | None:
        return now + (seconds(self.duration, "duration") or 0.0)


@dataclass(frozen=True)
class Until(WaitCondition):
    """A durable timer: wait until a moment (a timezone-aware datetime), then go on.

    A moment already past fires at the next look at the run.
    """

    when: datetime
    kind: str = field(default="timer", init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.when, datetime) or self.when.tzinfo is None:
            raise TypeError(
                f"Until(when) takes a timezone-aware datetime (e.g. tzinfo=UTC), got {self.when!r}"
            )

    def spec(self) -> dict[str, Any]:
        return {"until": self.when.isoformat()}

    def deadline(self, now: float) -> float | None:
        return self.when.timestamp()


@dataclass(frozen=True)
class ChildRun(WaitCondition):
    """Wait for child runs to end (made by the engine from `Child(...)`, a `Parallel`
    of them, or `ctx.Child(...)`; not written by hand). `children` holds, for each,
    the name its output is recorded under, its workflow and its run id."""

    children: tuple[tuple[str, str, str], ...]
    kind: str = field(default="child", init=False)

    def spec(self) -> dict[str, Any]:
        return {
            "children": [
                {"name": name, "workflow": workflow, "run_id": run_id}
                for name, workflow, run_id in self.children
            ]
        }


def option_id(option: Any) -> Any:
    """The id an option is answered with: the option itself, or its `id` when it is a
    `{"id", "label"}` dict."""
    if isinstance(option, dict):
        if "id" not in option or not isinstance(option["id"], str | int):
            raise ValueError(
                f"a HumanInput option given as a dict needs an 'id' (a string or number), "
                f"got {option!r}"
            )
        return option["id"]
    return option


def wait_kind(condition: WaitCondition) -> str:
    """The kind stored in the wait record: `approval`, `input`, `event` or `timer`."""
    return "input" if isinstance(condition, HumanInput) else condition.kind


def resolve_model(ref: str) -> type[BaseModel]:
    """Import the pydantic model named `module:qualname` (a `HumanInput` schema)."""
    module_name, _, qualname = ref.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    if not (isinstance(target, type) and issubclass(target, BaseModel)):
        raise TypeError(f"{ref} is not a pydantic model")
    return target
