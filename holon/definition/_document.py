"""Read a YAML or JSON document into plain values, remembering the line of every field.

`read_document` returns the value and a `Lines` map from field paths (`("steps", 2,
"agent")`) to 1-based line numbers, so that a checker can say "line 12, field
steps[2].agent". A dict given directly has no lines; errors then name the field only.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from holon.errors import DocumentError

__all__ = ["Lines", "FieldPath", "field_name", "read_document"]

FieldPath = tuple[str | int, ...]


class Lines:
    """Line numbers of fields, found by walking up to the nearest known parent."""

    def __init__(self, known: dict[FieldPath, int] | None = None) -> None:
        self.known = known or {}

    def of(self, path: FieldPath) -> int | None:
        while True:
            if path in self.known:
                return self.known[path]
            if not path:
                return None
            path = path[:-1]


def field_name(path: FieldPath) -> str:
    """`("steps", 2, "agent")` -> `steps[2].agent`."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "(document)"


def read_document(document: str | bytes | Path | Mapping[str, Any]) -> tuple[Any, Lines]:
    """Parse text (YAML or JSON), a file, or take a dict as it is."""
    if isinstance(document, Mapping):
        try:
            return json.loads(json.dumps(document)), Lines()
        except (TypeError, ValueError) as exc:
            raise DocumentError(
                f"field (document): a dict document holds JSON values only ({exc})",
                line=None,
                field="(document)",
            ) from None
    if isinstance(document, Path):
        try:
            document = document.read_text(encoding="utf-8")
        except OSError as exc:
            raise DocumentError(f"cannot read {document}: {exc}", line=None, field="") from None
    if isinstance(document, bytes):
        document = document.decode("utf-8")
    if not isinstance(document, str):
        raise TypeError(f"a workflow document is text, a Path or a dict, got {document!r}")
    return _parse_yaml(document)


def _parse_yaml(text: str) -> tuple[Any, Lines]:
    loader = yaml.SafeLoader(text)
    lines: dict[FieldPath, int] = {}
    try:
        root = loader.get_single_node()
        if root is None:
            raise DocumentError("the document is empty", line=1, field="(document)")
        return _walk(loader, root, (), lines), Lines(lines)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise DocumentError(
            f"line {line}, field (document): not valid YAML or JSON: {exc.problem or exc.context}",
            line=line,
            field="(document)",
        ) from None
    except yaml.YAMLError as exc:
        raise DocumentError(
            f"not valid YAML or JSON: {exc}", line=None, field="(document)"
        ) from None
    finally:
        loader.dispose()


def _walk(
    loader: yaml.SafeLoader, node: yaml.Node, path: FieldPath, lines: dict[FieldPath, int]
) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                raise DocumentError(
                    f"line {line}, field {field_name(path)}: keys are strings, got {key!r}",
                    line=line,
                    field=field_name(path),
                )
            if key in result:
                raise DocumentError(
                    f"line {line}, field {field_name((*path, key))}: given twice",
                    line=line,
                    field=field_name((*path, key)),
                )
            lines[(*path, key)] = line
            result[key] = _walk(loader, value_node, (*path, key), lines)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_walk(loader, item, (*path, i), lines) for i, item in enumerate(node.value)]
    value = loader.construct_object(node)
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value
