"""Webhooks in (signed, fresh, idempotent) and notices out (signed, retried, never in
the way of a run), against real HTTP on loopback for the notices."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from holon import HolonError, RunStatus, Steward
from holon.http import Auth, create_app
from holon.http.notify import Notifier
from holon.http.signing import sign, verify
from holon.stores import SQLiteStore
from holon.stores.base import Store
from tests.http_support import ALICE, BOB, PAYMENTS, TOKENS, bearer, make_steward, on_loopback

pytestmark = pytest.mark.anyio

SECRET = "webhook-secret-for-tests"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = SQLiteStore(f"sqlite:///{tmp_path / 'holon.db'}")
    await opened.open()
    yield opened
    await opened.close()


def signed(
    body: Any, delivery: str | None, *, at: float | None = None, secret: str = SECRET
) -> dict[str, Any]:
    content = json.dumps(body).encode()
    timestamp = str(int(time.time() if at is None else at))
    headers = {
        "Content-Type": "application/json",
        "X-Holon-Timestamp": timestamp,
        "X-Holon-Signature": sign(secret, timestamp, content),
    }
    if delivery is not None:
        headers["X-Holon-Delivery"] = delivery
    return {"content": content, "headers": headers}


@asynccontextmanager
async def hooked(
    store: Store, steward: Steward, **options: Any
) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    app = create_app(
        steward, auth=Auth.from_tokens(TOKENS), worker=True, poll_interval=0.05, **options
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://holon.test") as client:
            yield app, client


async def test_signed_deliveries_start_runs_once_and_bad_ones_are_refused(store: Store) -> None:
    steward = await make_steward(store)
    steward.Webhook("shop", path="/orders", secret=SECRET)
    async with hooked(store, steward) as (app, client):
        good = await client.post("/hooks/orders", **signed({"item": "kite"}, "d-1"))
        assert good.status_code == 202, good.text
        run_id = good.json()["run_id"]
        record = await app.state.service.record(run_id)
        assert record.input == {"item": "kite"} and record.body.started_by == "webhook:orders"
        replayed = await client.post("/hooks/orders", **signed({"item": "kite"}, "d-1"))
        assert replayed.json() == {"run_id": run_id, "duplicate": True}
        assert sum((await store.count_runs(workflow="shop")).values()) == 1
        forged = signed({"item": "kite"}, "d-2", secret="not-the-secret")
        assert (await client.post("/hooks/orders", **forged)).status_code == 401
        tampered = signed({"item": "kite"}, "d-3")
        tampered["content"] = json.dumps({"item": "tank"}).encode()
        assert (await client.post("/hooks/orders", **tampered)).status_code == 401
        stale = await client.post(
            "/hooks/orders", **signed({"item": "kite"}, "d-4", at=time.time() - 3600)
        )
        assert stale.status_code == 401 and "away from now" in stale.json()["detail"]
        unsigned = await client.post("/hooks/orders", json={"item": "kite"})
        assert unsigned.status_code == 401
        no_id = await client.post("/hooks/orders", **signed({"item": "kite"}, None))
        assert no_id.status_code == 422
        assert (await client.post("/hooks/nowhere", **signed({}, "d-5"))).status_code == 404
        bad_input = await client.post("/hooks/orders", **signed({"colour": 1}, "d-6"))
        assert bad_input.status_code == 422
        assert sum((await store.count_runs(workflow="shop")).values()) == 1


async def test_a_delivery_reaches_the_waiting_run_its_payload_matches(store: Store) -> None:
    steward = await make_steward(store)
    steward.Webhook(PAYMENTS, path="payments", event="paid", start=False)
    async with hooked(store, steward, webhook_secret=SECRET) as (app, client):
        service = app.state.service
        runner = await service.runner("payments")
        first = await runner.Run({"order": "o-1"})
        second = await runner.Run({"order": "o-2"})
        for handle in (first, second):
            service.kick(handle.run_id)
            await service.handle(handle.run_id).WaitUntil(RunStatus.WAITING, timeout=10)
        delivered = await client.post(
            "/hooks/payments", **signed({"order": "o-2", "amount": 5}, "p-1")
        )
        assert delivered.json() == {"delivered_to": [second.run_id]}
        again = await client.post("/hooks/payments", **signed({"order": "o-2", "amount": 5}, "p-1"))
        assert again.status_code == 200
        result = await service.handle(second.run_id).Result(timeout=10)
        assert result["payload"] == {"order": "o-2", "amount": 5} and result["event_id"] == "p-1"
        assert (await service.record(first.run_id)).status == RunStatus.WAITING
        received = [e for e in await store.timeline(second.run_id) if e.kind == "event_received"]
        assert len(received) == 1


async def test_a_declarative_webhook_trigger_starts_runs(store: Store) -> None:
    steward = Steward(store)
    steward.RegisterTask("triage", lambda ctx: {"seen": ctx.Input})
    await steward.Load(
        {
            "name": "alerts",
            "trigger": {"type": "webhook", "path": "/alerts", "source": "alertmanager"},
            "steps": [{"name": "triage", "task": "triage"}],
        }
    )
    async with hooked(store, steward, webhook_secret=SECRET) as (app, client):
        started = await client.post("/hooks/alerts", **signed({"alert": "disk"}, "a-1"))
        assert started.status_code == 202
        result = await app.state.service.handle(started.json()["run_id"]).Result(timeout=10)
        assert result == {"seen": {"alert": "disk"}}


class Receiver:
    """A local HTTP receiver of notices that fails the first `failures` POSTs."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts = 0
        self.notices: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.changed = anyio.Event()
        self.app = Starlette(routes=[Route("/notices", self.receive, methods=["POST"])])

    async def receive(self, request: Request) -> Response:
        self.attempts += 1
        if self.attempts <= self.failures:
            return JSONResponse({"error": "busy"}, status_code=503)
        body = await request.body()
        verify(
            SECRET,
            request.headers["x-holon-timestamp"],
            request.headers["x-holon-signature"],
            body,
            now=time.time(),
            tolerance=60,
        )
        self.notices.append(json.loads(body))
        self.headers.append(dict(request.headers))
        self.changed.set()
        self.changed = anyio.Event()
        return JSONResponse({"ok": True})

    async def wait_for(self, kind: str) -> dict[str, Any]:
        with anyio.fail_after(10):
            while True:
                found = [n for n in self.notices if n["kind"] == kind]
                if found:
                    return found[-1]
                await self.changed.wait()


async def test_notices_are_signed_delivered_and_retried(store: Store) -> None:
    receiver = Receiver(failures=2)
    async with on_loopback(receiver.app) as receiver_url:
        dead = "http://127.0.0.1:9/notices"  # nothing listens on the discard port
        notifier = Notifier(
            [dead, f"{receiver_url}/notices"], secret=SECRET, backoff=0.01, attempts=4, timeout=2
        )
        steward = await make_steward(store)
        async with hooked(store, steward, notifier=notifier) as (app, client):
            started = await client.post(
                "/api/v1/workflows/shop/runs", json={"input": {"item": "bell"}}, headers=bearer(BOB)
            )
            run_id = started.json()["run_id"]
            waiting = await receiver.wait_for("waiting_for_person")
            assert waiting["run_id"] == run_id and waiting["workflow"] == "shop"
            assert waiting["data"]["approvers"] == ["alice", "role:ops"]
            assert receiver.attempts == 3  # two refusals, then the delivery
            delivery_ids = {h["x-holon-delivery"] for h in receiver.headers}
            assert delivery_ids == {waiting["id"]}
            # the dead URL holds up nothing: the run goes on
            approved = await client.post(f"/api/v1/runs/{run_id}/approve", headers=bearer(ALICE))
            assert approved.status_code == 200
            assert (await app.state.service.handle(run_id).Result(timeout=10))["shipped"] == "bell"
            second = await client.post(
                "/api/v1/workflows/shop/runs", json={"input": {"item": "drum"}}, headers=bearer(BOB)
            )
            other = second.json()["run_id"]
            await app.state.service.handle(other).WaitUntil(RunStatus.WAITING, timeout=10)
            await client.post(f"/api/v1/runs/{other}/stop", headers=bearer(BOB))
            stopped = await receiver.wait_for("stopped")
            assert stopped["run_id"] == other and stopped["data"]["by"] == "bob"
            broken = await client.post("/api/v1/workflows/flaky/runs", headers=bearer(BOB))
            failed = await receiver.wait_for("failed")
            assert failed["run_id"] == broken.json()["run_id"]
            assert failed["data"]["message"] == "attempt 2 broke"
            assert "traceback" not in failed["data"]


async def test_webhook_paths_and_notifier_settings_are_checked(store: Store) -> None:
    steward = Steward(store)
    for bad in ("", "/", "a/../b", "a//b"):
        with pytest.raises(HolonError, match="webhook path"):
            steward.Webhook("shop", path=bad)
    assert steward.Webhook("shop", path="/in/orders/").path == "in/orders"
    with pytest.raises(ValueError, match="http"):
        Notifier(["ftp://example"], secret="s")
    with pytest.raises(ValueError, match="secret"):
        Notifier(["http://127.0.0.1:1/x"], secret="")
