"""`@workflow()`: an `.Execute()` workflow written as one function whose parameters,
after `ctx`, are the run's input.

```python
@workflow()
async def research_pipeline(ctx: ExecuteContext[Any, Any], topic: str, depth: int = 2) -> dict:
    papers = await ctx.Task(fetch_papers, topic, depth)
    return {"papers": papers}

# research_pipeline is a Workflow: WorkflowRunner(research_pipeline).Run({"topic": "qc"})
```

The parameters become the workflow's Input model (their annotations the field types,
their defaults the field defaults), so an input is validated before a run is made, as
with `.Input(Model)`.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any, overload

from pydantic import BaseModel, create_model

from holon.definition.builder import Workflow
from holon.errors import WorkflowDefinitionError

__all__ = ["workflow"]

WorkflowFunction = Callable[..., Any]


@overload
def workflow(name: WorkflowFunction, /) -> Workflow: ...


@overload
def workflow(
    name: str | None = None, /, *, description: str = "", version: str | None = None
) -> Callable[[WorkflowFunction], Workflow]: ...


def workflow(
    name: str | WorkflowFunction | None = None,
    /,
    *,
    description: str = "",
    version: str | None = None,
) -> Workflow | Callable[[WorkflowFunction], Workflow]:
    """Make an `.Execute()` workflow of the decorated function.

    Args:
        name: the workflow's name; by default the function's.
        description: one line for humans; by default the docstring's first line.
        version: an explicit version (see `Workflow`).

    The function's first parameter is `ctx` (an `ExecuteContext`); the others are the
    input's fields, passed by name. `@workflow` without parentheses works too.
    """
    if callable(name):
        return _build(name, None, description, version)

    def decorate(fn: WorkflowFunction) -> Workflow:
        return _build(fn, name, description, version)

    return decorate


def _build(
    fn: WorkflowFunction, name: str | None, description: str, version: str | None
) -> Workflow:
    title = name or getattr(fn, "__name__", "")
    if not callable(fn) or not title:
        raise WorkflowDefinitionError(f"@workflow() decorates a function, got {fn!r}")
    params = list(inspect.signature(fn).parameters.values())
    if not params or params[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise WorkflowDefinitionError(
            f"@workflow() function {title!r} takes ctx as its first parameter, then the "
            "input's fields",
            workflow=title,
        )
    input_model = _input_model(fn, title, params[1:])
    fields = list(input_model.model_fields)

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def execute(ctx: Any) -> Any:
            return await fn(ctx, **{field: getattr(ctx.Input, field) for field in fields})

    else:

        @functools.wraps(fn)
        def execute(ctx: Any) -> Any:
            return fn(ctx, **{field: getattr(ctx.Input, field) for field in fields})

    summary = description or (inspect.getdoc(fn) or "").split("\n", 1)[0]
    return Workflow(title, summary, version).Input(input_model).Execute(execute)


def _input_model(
    fn: WorkflowFunction, title: str, params: list[inspect.Parameter]
) -> type[BaseModel]:
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:
        raise WorkflowDefinitionError(
            f"@workflow() function {title!r}: its annotations cannot be read ({exc})",
            workflow=title,
        ) from None
    definitions: dict[str, Any] = {}
    for param in params:
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise WorkflowDefinitionError(
                f"@workflow() function {title!r}: *{param.name} cannot be an input field; "
                "name each field",
                workflow=title,
            )
        if param.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise WorkflowDefinitionError(
                f"@workflow() function {title!r}: input field {param.name!r} is passed by "
                "name, so it cannot be positional-only",
                workflow=title,
            )
        default = ... if param.default is inspect.Parameter.empty else param.default
        definitions[param.name] = (hints.get(param.name, Any), default)
    model_name = "".join(part.title() for part in title.replace("-", "_").split("_")) + "Input"
    model: type[BaseModel] = create_model(model_name, __module__=fn.__module__, **definitions)
    return model
