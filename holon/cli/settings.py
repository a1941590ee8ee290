"""What every command shares: the store, the app (the workflows' code), output, errors.

`--store URL` (or `HOLON_STORE`; default the SQLite file `.holon/holon.db`) names the
store, `--key-prefix` (or `HOLON_KEY_PREFIX`) the deployment in it. `--app module:attr`
(or `HOLON_APP`) imports the workflows' code, a `Steward`, a `Workflow` or a list of
them, for the verbs that run code (`rerun`, `replay`) and to validate inputs and state
patches in full; every other verb works with the store alone.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from holon.cli.output import Output
from holon.control.client import Client
from holon.control.steward import Steward
from holon.definition.builder import Workflow
from holon.errors import HolonError
from holon.stores import open_store
from holon.worker.serve import load_app

__all__ = ["BadArgument", "RunEnded", "Settings", "parse_json", "settings"]


class BadArgument(HolonError):
    """A command-line argument that cannot be used; the message names it."""


class RunEnded(Exception):
    """`--follow`: the run followed ended other than `completed` (exit code 4)."""


@dataclass
class Settings:
    """The global options, given before the verb."""

    store: str | None
    key_prefix: str
    app: str | None
    out: Output
    debug: bool

    def workflows(self) -> list[Workflow]:
        """The workflows of `--app` (none without it)."""
        if not self.app:
            return []
        loaded = load_app(self.app)
        if isinstance(loaded, Steward):
            return loaded.workflows
        if isinstance(loaded, Workflow):
            return [loaded]
        return list(loaded)

    def needs_app(self, verb: str) -> None:
        if not self.app:
            raise BadArgument(
                f"{verb} runs the workflow's code: pass --app module:attr (or set HOLON_APP)"
            )

    @asynccontextmanager
    async def client(self) -> AsyncIterator[Client]:
        """A `Client` of the store, knowing the code of `--app` if given."""
        store = open_store(self.store, key_prefix=self.key_prefix)
        try:
            async with Client(store, workflows=self.workflows()) as client:
                yield client
        finally:
            await store.close()


def settings(ctx: typer.Context) -> Settings:
    """The global options of the command being run."""
    found = ctx.find_object(Settings)
    if found is None:  # a command called without the main callback (never from `holon`)
        raise BadArgument("holon's global options were not parsed")
    return found


def parse_json(option: str, text: str | None) -> Any:
    """The JSON value of an option (`@path` reads a file); `BadArgument` naming the
    option when it is not JSON."""
    if text is None:
        return None
    source = text
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            source = path.read_text()
        except OSError as exc:
            raise BadArgument(f"{option}: cannot read {str(path)!r}: {exc.strerror}") from None
    try:
        return json.loads(source)
    except json.JSONDecodeError as exc:
        raise BadArgument(
            f"{option} is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): "
            f"{source[:60]!r}"
        ) from None
