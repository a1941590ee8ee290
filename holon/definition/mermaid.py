"""Draw a flow as a Mermaid flowchart from its steps' return annotations."""

from __future__ import annotations

from collections.abc import Mapping

from holon.definition.directives import END, START
from holon.definition.steps import StepSpec

__all__ = ["flow_to_mermaid"]


def flow_to_mermaid(steps: Mapping[str, StepSpec]) -> str:
    """A `flowchart TD` of a flow's steps.

    Edges come from `Literal[...]` return annotations. A step whose annotation is
    missing or open (`str`, `Next`, `Wait`, `Parallel`) is drawn with a dotted outline,
    since it may lead to steps the diagram cannot show.
    """
    ids = {START.value: "start", END.value: "stop"}
    lines = ["flowchart TD", '    start(("start"))', '    stop(("end"))']
    for index, name in enumerate(name for name in steps if name != START.value):
        ids[name] = f"s{index}"
        label = name.replace('"', "#quot;")
        lines.append(f'    {ids[name]}["{label}"]')
    for name, spec in steps.items():
        for target in sorted(spec.edges):
            lines.append(f"    {ids[name]} --> {ids[target]}")
    open_steps = [ids[name] for name, spec in steps.items() if not spec.edges_complete]
    if open_steps:
        lines.append("    classDef open stroke-dasharray: 4 3")
        lines.append(f"    class {','.join(open_steps)} open")
    return "\n".join(lines) + "\n"
