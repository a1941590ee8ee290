"""How commands print: rich tables and lines for people, JSON for scripts (`--json`).

Everything a command prints goes through an `Output`, so each command decides what to
say once and `--json` gives the same facts as a JSON document (or, for `--follow`, one
JSON object per line).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, is_dataclass
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

__all__ = ["Output", "jsonable", "when"]


def jsonable(value: Any) -> Any:
    """`value` as JSON data: models and dataclasses dumped, enums by value."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if is_dataclass(value) and not isinstance(value, type):
        return jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if hasattr(value, "value") and isinstance(getattr(value, "value", None), str):
        return value.value
    return value


def when(timestamp: float | None) -> str:
    """A time for people: `2026-01-02 03:04:05` (UTC)."""
    if timestamp is None:
        return "-"
    moment = dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


class Output:
    """Prints for people, or JSON when `as_json`."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.console = Console(highlight=False, soft_wrap=True)
        if not self.console.is_terminal:
            self.console.width = 160  # a pipe or a file: no terminal to fit
        self.errors = Console(stderr=True, highlight=False, soft_wrap=True)

    def data(self, value: Any) -> None:
        """Print `value` as one JSON document."""
        sys.stdout.write(json.dumps(jsonable(value), indent=2, sort_keys=True) + "\n")
        sys.stdout.flush()

    def line(self, value: Any) -> None:
        """Print `value` as one line of JSON (streams: `--follow --json`)."""
        sys.stdout.write(json.dumps(jsonable(value), sort_keys=True) + "\n")
        sys.stdout.flush()

    def say(self, text: str) -> None:
        """A line for people (nothing in JSON mode: scripts read JSON only)."""
        if not self.as_json:
            self.console.print(text, markup=False)

    def table(
        self,
        columns: Sequence[str],
        rows: Iterable[Sequence[Any]],
        *,
        title: str | None = None,
    ) -> None:
        table = Table(title=title, show_lines=False, header_style="bold")
        # Cells are text, never markup: a `[sandbox]` flag must print as it is.
        for index, column in enumerate(columns):
            table.add_column(column, overflow="fold", no_wrap=index == 0)
        for row in rows:
            table.add_row(*(Text("-" if cell is None else str(cell)) for cell in row))
        self.console.print(table)

    def error(self, message: str) -> None:
        """One line on stderr."""
        self.errors.print(f"[bold red]error:[/] {escape(message)}", markup=True)
