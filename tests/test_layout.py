"""The package's layers stay layers: no module of `holon/` imports, directly or through
others, a module that imports it back. Imports made only for type checking count: a
module that names another's class in its annotations and calls its methods depends on
it as much as one that imports it at run time."""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Collection, Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "holon"


def module_name(root: Path, path: Path) -> str:
    """`holon/runtime/engine.py` -> `holon.runtime.engine`; a package's `__init__.py`
    is the package itself."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(
    tree: ast.Module, module: str, is_package: bool, modules: Collection[str]
) -> Iterator[str]:
    """The modules among `modules` that an import statement anywhere in the module
    names: at the top, inside functions, and under `if TYPE_CHECKING:`.

    `from a import b` imports module `a.b` when there is one, else the name `b` of `a`.
    (Importing `a.b` also runs `a/__init__.py`, as every import of a submodule runs its
    parents': that is not counted, or every package would be in a circle with its own
    modules.)"""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against this module's package
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                yield submodule if submodule in modules else target


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports."""
    paths = {module_name(root, path): path for path in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        names = imported_modules(tree, module, path.name == "__init__.py", paths)
        graph[module] = {name for name in names if name in paths and name != module}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan): sets of
    modules each of which imports, directly or not, every other. Sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def round_trip(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest path of imports from the circle's first module back to itself."""
    start = component[0]
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for other in sorted(graph[node] & set(component)):
                if other == start:
                    return [*paths[node], start]
                if other not in paths:
                    paths[other] = [*paths[node], other]
                    following.append(other)
        frontier = following
    raise AssertionError(f"{sorted(component)} is no circle")


def describe(graph: dict[str, set[str]], circle: list[str]) -> str:
    path = " -> ".join(round_trip(graph, circle))
    return f"{path} (a circle of {len(circle)}: {', '.join(circle)})"


def test_holon_has_no_import_circle() -> None:
    graph = import_graph(PACKAGE)
    found = [describe(graph, circle) for circle in circles(graph)]
    assert not found, "import circles in holon/:\n" + "\n".join(found)


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


@pytest.mark.parametrize(
    "engine",
    [
        "from pkg.collaborator import Helper\n",
        "from .collaborator import Helper\n",
        "def later():\n    from pkg import collaborator\n",
    ],
    ids=["absolute", "relative", "in-a-function"],
)
def test_a_circle_through_a_type_checking_import_is_found_and_named(
    tmp_path: Path, engine: str
) -> None:
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "engine.py": engine,
            "collaborator.py": """
                from typing import TYPE_CHECKING

                if TYPE_CHECKING:
                    from pkg.engine import Engine
            """,
            "below.py": "import pkg.collaborator\n",
        },
    )
    graph = import_graph(root)
    assert circles(graph) == [["pkg.collaborator", "pkg.engine"]]
    assert describe(graph, circles(graph)[0]) == (
        "pkg.collaborator -> pkg.engine -> pkg.collaborator "
        "(a circle of 2: pkg.collaborator, pkg.engine)"
    )


def test_modules_that_depend_downward_make_no_circle(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "__init__.py": "from pkg.top import Top\n",
            "top.py": "from pkg.sub.middle import Middle\n",
            "sub/__init__.py": "",
            "sub/middle.py": "from ..base import Base\nfrom pkg.sub import leaf\n",
            "sub/leaf.py": "from pkg import base\n",
            "base.py": "import os\n",
        },
    )
    graph = import_graph(root)
    assert graph["pkg.sub.middle"] == {"pkg.base", "pkg.sub.leaf"}
    assert graph["pkg.sub.leaf"] == {"pkg.base"}
    assert circles(graph) == []


LAYERS = ["base", "stores", "definition", "runtime", "agents", "control", "worker", "http", "cli"]
"""The layers from the bottom up; a module may import its own layer and those below."""

BASE = {
    "holon._json",
    "holon._naming",
    "holon.clock",
    "holon.errors",
    "holon.limits",
    "holon.sealing",
}


def layer_of(module: str) -> str | None:
    """The layer of a module of holon; None for the package itself (the public API,
    which re-exports from every layer)."""
    if module in BASE:
        return "base"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_module_of_holon_is_in_a_layer() -> None:
    strays = [m for m in import_graph(PACKAGE) if m != "holon" and layer_of(m) not in LAYERS]
    assert not strays, f"modules outside the layers {LAYERS}: {strays}"


def test_layers_depend_downward() -> None:
    upward = []
    for module, imported in sorted(import_graph(PACKAGE).items()):
        layer = layer_of(module)
        if layer is None:
            continue
        for other in sorted(imported):
            other_layer = layer_of(other)
            if other_layer is None or LAYERS.index(other_layer) > LAYERS.index(layer):
                upward.append(f"{module} ({layer}) imports {other} ({other_layer or 'holon'})")
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)
