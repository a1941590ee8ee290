"""Every ```python block in the README and docs/ runs as it stands.

Blocks fenced as ```py are fragments shown for reading and are not run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def blocks() -> list[tuple[str, int, str]]:
    found = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for index, match in enumerate(BLOCK.finditer(path.read_text())):
            found.append((str(path.relative_to(REPO)), index, match.group(1)))
    return found


@pytest.mark.parametrize(
    ("path", "index", "code"), blocks(), ids=[f"{p}#{i}" for p, i, _ in blocks()]
)
def test_code_block_runs(
    path: str, index: int, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a block that uses the default store writes here
    # dont_inherit: a block runs as a module of its own would, without this file's
    # `from __future__ import annotations` (which would leave its models' annotations as
    # names pydantic cannot resolve outside a real module).
    compiled = compile(code, f"{path} block {index}", "exec", dont_inherit=True)
    exec(compiled, {"__name__": "__docs__"})
