"""A workflow's graph drawn as SVG for the dashboard, with no script and no network.

Steps are laid out in columns by their distance from the start along the edges the
catalogue knows (steps no known edge reaches go in a last column), edges are straight
arrows, and each step is a `<g class="step" data-step="NAME">` whose class the page's
script changes as the run moves (`done`, `current`, `waiting`).
"""

from __future__ import annotations

from html import escape

from holon.control.catalogue import WorkflowGraph
from holon.definition.directives import END, START

__all__ = ["graph_svg"]

_W, _H, _GAP_X, _GAP_Y, _PAD = 150, 36, 60, 24, 12


def _columns(graph: WorkflowGraph) -> list[list[str]]:
    names = [s.name for s in graph.steps]
    edges = {s.name: [e for e in s.edges if e in names or e == END.value] for s in graph.steps}
    column: dict[str, int] = {START.value: 0} if START.value in names else {}
    frontier: list[str] = list(column)
    while frontier:
        following: list[str] = []
        for name in frontier:
            for target in edges.get(name, []):
                if target not in column:
                    column[target] = column[name] + 1
                    following.append(target)
        frontier = following
    last = max(column.values(), default=-1) + 1
    for name in names:
        column.setdefault(name, last)
    columns: list[list[str]] = [[] for _ in range(max(column.values(), default=0) + 1)]
    for name in [*names, *([END.value] if END.value in column else [])]:
        if name in column:
            columns[column[name]].append(name)
    return [c for c in columns if c]


def graph_svg(
    graph: WorkflowGraph, *, done: set[str], current: str | None, waiting: str | None
) -> str:
    """The SVG of `graph`, steps marked done, current or waiting."""
    columns = _columns(graph)
    where: dict[str, tuple[int, int]] = {}
    for x, names in enumerate(columns):
        for y, name in enumerate(names):
            where[name] = (_PAD + x * (_W + _GAP_X), _PAD + y * (_H + _GAP_Y))
    width = _PAD * 2 + max(len(columns), 1) * (_W + _GAP_X) - _GAP_X
    height = _PAD * 2 + max((len(c) for c in columns), default=1) * (_H + _GAP_Y) - _GAP_Y
    parts = [
        f'<svg class="graph" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
        'aria-label="workflow graph">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" '
        'markerHeight="6" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z"/>'
        "</marker></defs>",
    ]
    for step in graph.steps:
        for target in step.edges:
            if step.name in where and target in where:
                (x1, y1), (x2, y2) = where[step.name], where[target]
                parts.append(
                    f'<line class="edge" x1="{x1 + _W}" y1="{y1 + _H // 2}" x2="{x2}" '
                    f'y2="{y2 + _H // 2}" marker-end="url(#arrow)"/>'
                )
    for name, (x, y) in where.items():
        state = (
            "waiting"
            if name == waiting
            else "current"
            if name == current
            else "done"
            if name in done
            else ""
        )
        label = {START.value: "start", END.value: "end"}.get(name, name)
        parts.append(
            f'<g class="step {state}" data-step="{escape(name)}">'
            f'<rect x="{x}" y="{y}" width="{_W}" height="{_H}" rx="8"/>'
            f'<text x="{x + _W // 2}" y="{y + _H // 2 + 5}" text-anchor="middle">'
            f"{escape(label[:22])}</text></g>"
        )
    parts.append("</svg>")
    return "".join(parts)
