"""`holon serve APP` as a real process: with no token configured it prints one admin
token, once, and the API answers only to it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_a_served_app_makes_one_admin_token_and_answers_only_to_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOLON_AUTH")}
    holon = str(Path(sys.executable).parent / "holon")
    command = [
        holon,
        "--store",
        f"sqlite:///{tmp_path / 'h.db'}",
        "serve",
        "tests.http_support:SHOP",
        "--port",
        "0",
    ]
    server = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stderr is not None
        lines = []
        while not (lines and lines[-1].startswith("holon: serving on")):
            line = server.stderr.readline()
            assert line, f"the server ended: {''.join(lines)}"
            lines.append(line)
        token = lines[next(i for i, text in enumerate(lines) if "admin token" in text) + 1].strip()
        url = lines[-1].split()[3]
        with httpx.Client(base_url=url) as client:
            body = {"input": {"item": "map"}}
            assert client.post("/api/v1/workflows/shop/runs", json=body).status_code == 401
            started = client.post(
                "/api/v1/workflows/shop/runs",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            )
            assert started.status_code == 201, started.text
            assert started.json()["body"]["started_by"] == "admin"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    assert server.stderr is not None
    with server.stderr:
        rest = server.stderr.read()
    assert token not in rest  # shown once
