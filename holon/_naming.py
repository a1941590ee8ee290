"""The one mechanism that gives every PascalCase DSL method its snake_case name.

holon's public verbs are PascalCase to mirror the reference DSL (`handle.Pause()`);
Python callers may prefer `handle.pause()`. Each class names the twin in its body
(`pause = Pause`: the same function under a second name, which type checkers see),
and `snake_case_aliases` checks that none is missing or points elsewhere.
"""

from __future__ import annotations

import re
from typing import TypeVar

__all__ = ["snake_case_aliases", "to_snake_case"]

T = TypeVar("T", bound=type)

_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def to_snake_case(name: str) -> str:
    """`SetState` -> `set_state`, `StepResults` -> `step_results`, `RunId` -> `run_id`."""
    return _BOUNDARY.sub("_", name).lower()


def snake_case_aliases(cls: T) -> T:
    """Check that every public PascalCase member of `cls` has its snake_case twin.

    The twins are written in the class body (`pause = Pause`), so type checkers see
    them as the same typed members; this decorator, the one place the rule lives,
    refuses a class where one is missing or names something else. Members set in
    `__init__` (`ctx.RunId`) get their twins as properties, in the class body too.
    """
    missing = []
    for klass in reversed(cls.__mro__):
        for name in vars(klass):
            if not name[:1].isupper() or name.startswith("_"):
                continue
            alias = to_snake_case(name)
            if alias != name and getattr(cls, alias, None) is not getattr(cls, name):
                missing.append(f"{alias} = {name}")
    if missing:
        raise TypeError(f"{cls.__qualname__} lacks the snake_case twins: {', '.join(missing)}")
    return cls
