"""A workflow that only the registering process of `test_steward_processes.py` imports."""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel

from holon import END, START, Context, Next, Workflow


class Person(BaseModel):
    name: str


class Greeting(BaseModel):
    salutation: str = "Hello"


def choose(ctx: Context[Person, Greeting]) -> Literal["Greet"]:
    ctx.SetState(salutation="Hello" if ctx.Input.name[:1].isupper() else "Hi")
    return "Greet"


def greet(ctx: Context[Person, Greeting]) -> Next:
    text = f"{ctx.State.salutation}, {ctx.Input.name}!"
    result: dict[str, Any] = {"greeting": text, "pid": os.getpid()}
    return Next(END, output=result)


GREETER = (
    Workflow("greeter", "Greets a person by name")
    .Input(Person)
    .State(Greeting)
    .Flow({START: lambda ctx: "Choose", "Choose": choose, "Greet": greet})
)
