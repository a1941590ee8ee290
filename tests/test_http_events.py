"""The live timeline as server-sent events, through a real uvicorn on loopback."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from holon import RunStatus
from holon.http import Auth, create_app
from holon.stores import SQLiteStore
from tests.http_support import ALICE, BOB, TOKENS, bearer, make_steward, on_loopback, sse_messages

pytestmark = pytest.mark.anyio


async def test_the_timeline_streams_live_and_resumes_after_last_event_id(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'holon.db'}")
    steward = await make_steward(store)
    auth = Auth.from_tokens({t: TOKENS[t] for t in (ALICE, BOB)})
    app = create_app(steward, auth=auth, worker=True, poll_interval=0.05)
    async with on_loopback(app) as url, httpx.AsyncClient(base_url=url) as client:
        started = await client.post(
            "/api/v1/workflows/shop/runs", json={"input": {"item": "car"}}, headers=bearer(BOB)
        )
        assert started.status_code == 201
        run_id = started.json()["run_id"]
        events_url = f"/api/v1/runs/{run_id}/events"
        assert (await client.get(events_url)).status_code == 401
        assert (
            await client.get("/api/v1/runs/nope/events", headers=bearer(BOB))
        ).status_code == 404
        first: list[dict[str, str]] = []
        async for message in sse_messages(client, events_url, bearer(BOB)):
            first.append(message)
            if message["event"] == "waiting":
                break  # the client goes away mid-run
        assert [m["event"] for m in first][:2] == ["started", "step_started"]
        last_id = first[-1]["id"]
        handle = app.state.service.handle(run_id)
        await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        approved = await client.post(f"/api/v1/runs/{run_id}/approve", headers=bearer(ALICE))
        assert approved.status_code == 200
        second = [
            m
            async for m in sse_messages(
                client, events_url, {**bearer(BOB), "Last-Event-ID": last_id}
            )
        ]
        ids = [int(m["id"]) for m in second if "id" in m]
        assert ids and min(ids) == int(last_id) + 1
        assert ids == sorted(set(ids))
        assert [m["event"] for m in second][-2:] == ["completed", "end"]
        stored = await store.timeline(run_id)
        assert [int(m["id"]) for m in first + second if "id" in m] == [e.seq for e in stored]


async def test_what_steps_emit_streams_between_timeline_events(tmp_path: Path) -> None:
    import json
    from typing import Any

    import anyio

    from holon import END, START, Next, Steward, Workflow

    go = anyio.Event()

    async def write(ctx: Any) -> Next:
        await go.wait()
        for word in ("one", "two"):
            ctx.Emit("word", word)
        return Next(END, output="written")

    store = SQLiteStore(f"sqlite:///{tmp_path / 'holon.db'}")
    steward = Steward(store)
    await steward.Register(Workflow("writer").Flow({START: lambda ctx: "Write", "Write": write}))
    auth = Auth.from_tokens({t: TOKENS[t] for t in (ALICE, BOB)})
    app = create_app(steward, auth=auth, worker=True, poll_interval=0.05)
    async with on_loopback(app) as url, httpx.AsyncClient(base_url=url) as client:
        started = await client.post("/api/v1/workflows/writer/runs", json={}, headers=bearer(BOB))
        assert started.status_code == 201, started.text
        run_id = started.json()["run_id"]
        messages: list[dict[str, str]] = []
        async for message in sse_messages(client, f"/api/v1/runs/{run_id}/events", bearer(BOB)):
            messages.append(message)
            if message["event"] == "started":
                go.set()  # the stream listens from its start: let the step emit now
    emitted = [json.loads(m["data"]) for m in messages if m["event"] == "emitted"]
    assert [(e["kind"], e["data"]) for e in emitted] == [("word", "one"), ("word", "two")]
    assert all("id" not in m for m in messages if m["event"] == "emitted")
    kinds = [m["event"] for m in messages]
    assert kinds.index("emitted") < kinds.index("completed") and kinds[-1] == "end"
