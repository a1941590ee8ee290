"""Encoding for the Redis store: key-safe names, script arguments, decoded records."""

from __future__ import annotations

import re
from collections.abc import Sequence
from json.encoder import encode_basestring as _string
from math import isfinite
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic_core import to_json

from holon.errors import CorruptRecord, StoreError
from holon.stores import _codec
from holon.stores.base import (
    NewEvent,
    RunBody,
    RunRecord,
    RunStatus,
    RunSummary,
    TimelineEvent,
)
from holon.stores.retention import RETENTION_OPTIONS

__all__ = ["CLAIM_INDEXES", "URL_OPTIONS", "LeaseClock", "dump_body", "safe_url", "time_text"]

LeaseClock = Literal["server", "caller"]
"""Whose clock times leases: the Redis server's, or the `now` callers pass."""

URL_OPTIONS = frozenset({"lease_clock", "timeline_cap", "durable_ack"}) | RETENTION_OPTIONS
"""Query options a Redis store URL may carry."""

CLAIM_INDEXES = ("ready", "lease", "timer")
"""The per-workflow indexes `claim` reads: queued runs, leases by expiry, timers."""


def safe_url(url: str) -> str:
    """The URL with its password replaced by `***`, fit for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def _tag(name: str) -> str:
    """`name` made safe inside a hash tag (no braces, reversible)."""
    return name.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


def _header(*fields: object) -> str:
    """Short script arguments packed into one (fields hold no control characters)."""
    return "\x1f".join(map(str, fields))


_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f]")


def _name(value: str, what: str) -> str:
    """A name that travels in a packed header: refused if it holds a control character."""
    if _CONTROL_CHARACTER.search(value):
        raise StoreError(f"invalid {what} {value!r}: it holds a control character")
    return value


def dump_body(body: RunBody) -> bytes:
    """The body as compact JSON (UTF-8); fields at their default are left out (loading
    puts them back), which keeps records small. Written by every commit: serialized
    directly, without `model_dump_json`'s wrapper and its decoding to `str` (which cost
    6,600 instructions a commit, 2.6 % of a step's 258,000 in a drain on Redis)."""
    return _BODY_SERIALIZER.to_json(body, exclude_defaults=True)


_BODY_SERIALIZER = RunBody.__pydantic_serializer__


_last_time: tuple[float, str] = (float("nan"), "")


def time_text(at: float) -> str:
    """`repr(at)`, remembered for the last time given: a step's events and checkpoint
    share one time, and formatting it again for the checkpoint cost 5,800 instructions
    a commit (2.2 % of a step's 258,000 in a drain on Redis)."""
    global _last_time
    last = _last_time
    if at == last[0]:
        return last[1]
    text = repr(at)
    _last_time = (at, text)
    return text


_EVENT_HEADS: dict[tuple[str, str | None], str] = {}
"""`{"k":kind,"s":step,"a":` by kind and step: the same few are encoded at every step."""
_EVENT_HEADS_MAX = 4096


def _event_head(kind: str, step: str | None) -> str:
    if len(_EVENT_HEADS) >= _EVENT_HEADS_MAX:
        _EVENT_HEADS.clear()  # many distinct step names: start over rather than grow
    if step is None:
        head = f'{{"k":{_string(kind)},"a":'
    else:
        head = f'{{"k":{_string(kind)},"s":{_string(step)},"a":'
    _EVENT_HEADS[kind, step] = head
    return head


def _event_args(events: Sequence[NewEvent]) -> list[str]:
    """Timeline events, one compact JSON text each: `{"k": kind, "s": step, "a": at,
    "d": data}`, without the step or data when there are none.

    Written out field by field: a step commits several events, and encoding a dict
    per event with pydantic-core cost 8,400 instructions more a commit (3.2 % of a
    step's 258,000 in a drain on Redis). The time comes after the kind and step so
    that the text before it is made once per kind and step, not once per event. The
    data is encoded by pydantic-core, a quarter of the time `json`'s encoder takes for
    such small dicts; it is JSON already (the engine made it so, and checked its
    numbers are finite).
    """
    out: list[str] = []
    last_at: float | None = None
    at_text = ""
    for event in events:
        at = event.at
        if at != last_at:  # a step's events share their time (and NaN never equals)
            if not isfinite(at):
                raise ValueError(f"timeline event {event.kind!r}: time {at!r} is not finite")
            at_text, last_at = time_text(at), at
        kind, step = event.kind, event.step
        head = _EVENT_HEADS.get((kind, step)) or _event_head(kind, step)
        data = event.data
        out.append(
            f'{head}{at_text},"d":{to_json(data).decode()}}}' if data else f"{head}{at_text}}}"
        )
    return out


def _events(events: Sequence[NewEvent]) -> str:
    """Timeline events, one compact JSON text per line."""
    return "\n".join(_event_args(events))


def _result_args(results: dict[str, Any]) -> list[str]:
    """Step results as alternate names and JSON values (called only when there are
    some: most steps record none)."""
    out: list[str] = []
    for name, value in results.items():
        out += [name, _codec.dump(value)]
    return out


def _wait_key_args(keys: Sequence[str]) -> list[str]:
    """The wait keys a checkpoint opens, checked (called only when there are some)."""
    for key in keys:
        if not key or _CONTROL_CHARACTER.search(key):
            raise StoreError(f"invalid wait key {key!r}: empty or holds a control character")
    return list(keys)


def _event(run_id: str, seq: int, text: str) -> TimelineEvent:
    entry = _codec.load(text, run_id=run_id, what=f"timeline event {seq}")
    if not isinstance(entry, dict) or "k" not in entry:
        raise CorruptRecord(f"run {run_id!r}: timeline event {seq} is malformed", run_id=run_id)
    return TimelineEvent(
        run_id=run_id,
        seq=seq,
        kind=entry["k"],
        at=float(entry.get("a", 0.0)),
        step=entry.get("s"),
        data=entry.get("d") or {},
    )


def _float(text: str | None) -> float:
    return float(text) if text else 0.0


def _claim_entries(fields: dict[str, str | None] | None) -> dict[str, float]:
    """The claim indexes a run belongs in, with their scores, from its stored fields."""
    if not fields:
        return {}
    status = fields.get("st")
    if status == "queued":
        return {"ready": _float(fields.get("ca"))}
    if status == "running":
        return {"lease": _float(fields.get("lx"))}
    if status == "waiting" and fields.get("wk"):
        return {"timer": _float(fields.get("wk"))}
    return {}


def _summary(run_id: str, row: Any) -> RunSummary | None:
    if isinstance(row, Exception) or not row or row[2] is None:
        return None
    wf, ver, st, ca, ua = row
    try:
        return RunSummary(
            run_id=run_id,
            workflow=wf or "",
            version=ver or "",
            status=RunStatus(st),
            created_at=_float(ca),
            updated_at=_float(ua),
        )
    except ValueError:
        return None


def _decode(
    run_id: str,
    f: dict[str, str],
    body: str | None,
    input_text: str | None,
    results: dict[str, str],
    max_bytes: int,
) -> RunRecord:
    def corrupt(detail: str) -> CorruptRecord:
        return CorruptRecord(f"run {run_id!r}: {detail}", run_id=run_id)

    missing = [name for name in ("wf", "ver", "st", "seq", "es", "f") if name not in f]
    if missing:
        raise corrupt(f"stored record lacks {missing}")
    if body is None:
        raise corrupt("stored record has no body")
    if input_text is None:
        input_text = f.get("in")
    if input_text is None:
        raise corrupt("stored record has no input")
    try:
        status = RunStatus(f["st"])
    except ValueError:
        raise corrupt(f"unknown status {f['st']!r}") from None
    try:
        seq, event_seq, fence = int(f["seq"]), int(f["es"]), int(f["f"])
        created, updated = float(f.get("ca", "0")), float(f.get("ua", "0"))
        wake = float(f["wk"]) if f.get("wk") else None
        expires = float(f["lx"]) if f.get("lx") else None
    except ValueError as exc:
        raise corrupt(f"a stored number is invalid ({exc})") from None
    return RunRecord(
        run_id=run_id,
        workflow=f["wf"],
        version=f["ver"],
        status=status,
        input=_codec.load(input_text, run_id=run_id, what="input", max_bytes=max_bytes),
        body=_codec.load_body(body, run_id=run_id, max_bytes=max_bytes),
        results={
            name: _codec.load(text, run_id=run_id, what=f"result of {name!r}", max_bytes=max_bytes)
            for name, text in results.items()
        },
        seq=seq,
        event_seq=event_seq,
        control=_codec.load_control(f.get("ctl"), run_id=run_id),
        lease=_codec.load_lease(f.get("own"), fence, expires),
        fence=fence,
        wake_at=wake,
        created_at=created,
        updated_at=updated,
    )


def _at_least(version: str, wanted: tuple[int, int]) -> bool:
    try:
        parts = tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        return False
    return parts >= wanted
