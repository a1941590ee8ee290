"""The one mechanism that gives every PascalCase DSL method its snake_case name.

holon's public verbs are PascalCase to mirror the reference DSL (`handle.Pause()`);
Python callers may prefer `handle.pause()`. Decorating a class with
`snake_case_aliases` adds the second spelling for each public PascalCase attribute,
so neither spelling is written twice by hand.
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
    """Add a snake_case alias for every public PascalCase attribute defined on `cls`.

    Walks the class's own namespace and its bases (so subclasses inherit aliases of the
    methods they override). An alias never replaces a name the class already defines.
    """
    for klass in reversed(cls.__mro__):
        for name, value in list(vars(klass).items()):
            if not name[:1].isupper() or name.startswith("_"):
                continue
            alias = to_snake_case(name)
            if alias != name and alias not in vars(cls):
                setattr(cls, alias, getattr(cls, name) if klass is not cls else value)
    return cls
