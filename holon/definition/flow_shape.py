"""What the builder reads off a flow's step functions: the step names a return
annotation admits (the flow's known edges), which steps START reaches, and step
functions that take no `ctx`. Pure functions, used while a `Workflow` is built."""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, Union

from holon.definition.directives import START, Marker
from holon.definition.steps import StepFunction, StepSpec

__all__ = [
    "POSITIONAL",
    "edges_from_annotation",
    "no_step",
    "qualname",
    "reachable",
    "without_ctx",
]

POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def without_ctx(fn: StepFunction) -> StepFunction:
    """`fn`, which takes no arguments, as a step function of `ctx` (async if it is)."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def call_async(ctx: Any) -> Any:
            return await fn()

        return call_async

    @functools.wraps(fn)
    def call(ctx: Any) -> Any:
        return fn()

    return call


def no_step(ctx: Any) -> None:
    """The function of the workflow-wide default policy, which runs nothing."""


def qualname(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"


def edges_from_annotation(fn: StepFunction) -> tuple[frozenset[str], bool]:
    """The step names a step's return annotation admits, and whether that list is all."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        return frozenset(), False
    if "return" not in hints:
        return frozenset(), False
    edges: set[str] = set()
    complete = _collect_edges(hints["return"], edges)
    return frozenset(edges), complete


def _collect_edges(annotation: Any, edges: set[str]) -> bool:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        complete = True
        for value in typing.get_args(annotation):
            if isinstance(value, str):
                edges.add(value.value if isinstance(value, Marker) else value)
            else:
                complete = False
        return complete
    if origin in (Union, types.UnionType):
        results = [_collect_edges(arg, edges) for arg in typing.get_args(annotation)]
        return all(results)
    return False


def reachable(specs: Mapping[str, StepSpec]) -> set[str]:
    seen = {START.value}
    frontier = [START.value]
    while frontier:
        for target in specs[frontier.pop()].edges:
            if target in specs and target not in seen:
                seen.add(target)
                frontier.append(target)
    return seen
