"""The terminal sessions of docs/ (```console blocks) run as they stand, and print what
they show.

Each `$ ` line is a shell command, run in a fresh directory with the repository
importable and `holon` on the PATH; the lines after it, up to the next command, are what
it prints (stdout and stderr together). In what is shown, a line `...` stands for any
number of lines, and `...` within a line for any text. `export NAME=VALUE` sets a
variable for the commands after it; a command ending in `&` runs in the background
until the session ends, when it is sent SIGTERM and must exit 0.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SESSION = re.compile(r"^```console\n(.*?)^```", re.DOTALL | re.MULTILINE)

pytestmark = pytest.mark.slow


def sessions() -> list[tuple[str, int, str]]:
    found = []
    for path in sorted((REPO / "docs").glob("*.md")):
        for index, match in enumerate(SESSION.finditer(path.read_text())):
            found.append((str(path.relative_to(REPO)), index, match.group(1)))
    return found


def commands(session: str) -> list[tuple[str, list[str]]]:
    """`(command, the lines it shows)` for each `$ ` line of a session."""
    steps: list[tuple[str, list[str]]] = []
    for line in session.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps:
            steps[-1][1].append(line)
    return steps


def matches(shown: list[str], printed: list[str]) -> bool:
    """Whether `printed` is what `shown` shows (see the module docstring)."""
    if not shown:
        return not printed
    head, rest = shown[0], shown[1:]
    if head == "...":
        return any(matches(rest, printed[skip:]) for skip in range(len(printed) + 1))
    if not printed:
        return False
    pattern = ".*".join(re.escape(part) for part in head.rstrip().split("..."))
    return re.fullmatch(pattern, printed[0].rstrip()) is not None and matches(rest, printed[1:])


def test_matching_rules() -> None:
    assert matches(["a ... c", "..."], ["a b c", "x", "y"])
    assert matches(["...", "z"], ["x", "y", "z"])
    assert not matches(["a"], ["a", "b"])
    assert not matches(["a ... c"], ["a b d"])


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("path", "index", "session"), sessions(), ids=[f"{p}#{i}" for p, i, _ in sessions()]
)
def test_terminal_session_runs_as_shown(
    path: str, index: int, session: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOLON_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO)
    background: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        for command, shown in commands(session):
            if command.startswith("export "):
                name, _, value = command[len("export ") :].partition("=")
                env[name] = shlex.split(value)[0] if value else ""
                continue
            if command.endswith("&"):
                with (tmp_path / f"background-{len(background)}.log").open("wb") as log:
                    process = subprocess.Popen(  # exec: the signal reaches the program itself
                        f"exec {command[:-1]}",
                        shell=True,
                        cwd=tmp_path,
                        env=env,
                        stdout=log,
                        stderr=log,
                    )
                background.append((command, process))
                continue
            done = subprocess.run(
                command,
                shell=True,
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=120,
                check=False,
            )
            printed = done.stdout.decode().splitlines()
            assert matches(shown, printed), (
                f"{path}: `{command}` printed:\n"
                + "\n".join(printed)
                + "\n\nthe docs show:\n"
                + "\n".join(shown)
            )
    finally:
        for command, process in background:
            process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                raise
            assert code == 0, f"`{command}` exited {code}"
