"""The cassette of a replay: what the external calls of a recorded run returned.

A step or task marked `external=True` calls a model or writes to another system. When a
run is replayed in a sandbox (`handle.Replay()`), such a call must not happen again: the
cassette answers it with what the original run recorded. A call the cassette has no
recording for fails closed (`NoRecording`), never runs for real.

For `.Execute()` workflows the cassette is active while the replayed function runs
(`playing`), and `ctx.Task(..., external=True)` asks it (`active()`); flow steps are
answered by the sandbox's own step functions (`holon.control.sandbox`).
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from holon.definition.policies import NonRetryable

__all__ = ["Cassette", "NoRecording", "active", "playing"]


class NoRecording(NonRetryable):
    """An external step or task that a replay reached with nothing recorded for it: the
    sandbox run fails rather than make the call."""


class Cassette:
    """Recorded outputs of external calls by name (`task`, `task#2`, or `Step#3` for
    the third occurrence of a flow step), and how many times each was played."""

    def __init__(self, source_run: str, recordings: Mapping[str, Any]) -> None:
        self.source_run = source_run
        self._recordings = dict(recordings)
        self.played: dict[str, int] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._recordings

    def play(self, name: str) -> Any:
        """The recorded output of call `name`; `NoRecording` when there is none."""
        if name not in self._recordings:
            raise NoRecording(
                f"{name!r} is marked external and run {self.source_run!r} has no recording "
                "of it at this point; a replay does not make external calls, so the sandbox "
                "run fails here"
            )
        self.played[name] = self.played.get(name, 0) + 1
        return self._recordings[name]


_active: contextvars.ContextVar[Cassette | None] = contextvars.ContextVar(
    "holon_cassette", default=None
)


def active() -> Cassette | None:
    """The cassette of the replay running in this context, if any."""
    return _active.get()


@contextmanager
def playing(cassette: Cassette) -> Iterator[Cassette]:
    """Make `cassette` answer the external calls made in this context."""
    token = _active.set(cassette)
    try:
        yield cassette
    finally:
        _active.reset(token)
