"""The HTTP API through the ASGI app: starting, reading and steering runs, errors, the
authorisation matrix, and the OpenAPI document."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from holon import RunFailed, RunStatus, payload_digest
from holon.http import Auth, AuthConfigError, create_app, hash_token
from holon.stores import SQLiteStore
from holon.stores.base import Store
from tests.http_support import (
    ADMIN,
    ALICE,
    BOB,
    CAROL,
    DAVE,
    bearer,
    make_steward,
    serving,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def sqlite(tmp_path: Path) -> Any:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'holon.db'}")
    await store.open()
    yield store
    await store.close()


async def _waiting(app: Any, run_id: str) -> None:
    await app.state.service.handle(run_id).WaitUntil(RunStatus.WAITING, timeout=10)


async def test_a_run_started_over_http_waits_is_approved_and_completes(store: Store) -> None:
    async with serving(store) as (app, client):
        started = await client.post(
            "/api/v1/workflows/shop/runs", json={"input": {"item": "lamp"}}, headers=bearer(BOB)
        )
        assert started.status_code == 201, started.text
        run_id = started.json()["run_id"]
        assert started.json()["body"]["started_by"] == "bob"
        await _waiting(app, run_id)
        run = (await client.get(f"/api/v1/runs/{run_id}", headers=bearer(ALICE))).json()
        waiting = run["waiting"]
        assert waiting["payload"] == {"item": "lamp"}
        assert waiting["digest"] == payload_digest({"item": "lamp"})
        approved = await client.post(
            f"/api/v1/runs/{run_id}/approve",
            json={"digest": waiting["digest"], "comment": "fine"},
            headers=bearer(ALICE),
        )
        assert approved.status_code == 200, approved.text
        result = await app.state.service.handle(run_id).Result(timeout=10)
        assert result["shipped"] == "lamp"
        events = (await client.get(f"/api/v1/runs/{run_id}/timeline", headers=bearer(BOB))).json()
        kinds = [e["kind"] for e in events["items"]]
        assert kinds[0] == "started" and kinds[-1] == "completed"
        decided = [e for e in events["items"] if e["kind"] == "decision"]
        assert decided and decided[0]["data"]["by"] == "alice"


async def test_the_authorisation_matrix(sqlite: Store) -> None:
    async with serving(sqlite) as (app, client):
        url = "/api/v1/workflows/shop/runs"
        body = {"input": {"item": "desk"}}
        assert (await client.post(url, json=body)).status_code == 401
        assert (await client.post(url, json=body, headers=bearer("nobody"))).status_code == 401
        refused = await client.post(url, json=body, headers=bearer(DAVE))
        assert refused.status_code == 403
        assert "'dave' may not start runs of workflow 'shop'" in refused.json()["detail"]
        # carol starts through her team; she may approve by the rules, but not her own run
        started = await client.post(url, json=body, headers=bearer(CAROL))
        assert started.status_code == 201
        run_id = started.json()["run_id"]
        await _waiting(app, run_id)
        own = await client.post(f"/api/v1/runs/{run_id}/approve", headers=bearer(CAROL))
        assert own.status_code == 403
        assert "carol" in own.json()["detail"]
        # dave may not approve shop runs at all
        other = await client.post(f"/api/v1/runs/{run_id}/approve", headers=bearer(DAVE))
        assert other.status_code == 403
        # bob holds role ops, which the gate lists
        by_role = await client.post(f"/api/v1/runs/{run_id}/approve", headers=bearer(BOB))
        assert by_role.status_code == 200, by_role.text
        assert (await app.state.service.handle(run_id).Result(timeout=10))["shipped"] == "desk"
        # alice is a listed approver
        second = await client.post(url, json=body, headers=bearer(BOB))
        run_id = second.json()["run_id"]
        await _waiting(app, run_id)
        listed = await client.post(f"/api/v1/runs/{run_id}/approve", headers=bearer(ALICE))
        assert listed.status_code == 200
        # reading needs only a token
        assert (await client.get("/api/v1/runs", headers=bearer(DAVE))).status_code == 200


async def test_a_body_naming_another_identity_changes_nothing(sqlite: Store) -> None:
    async with serving(sqlite, rules=[]) as (app, client):
        started = await client.post(
            "/api/v1/workflows/shop/runs",
            json={"input": {"item": "pen"}, "started_by": "alice"},
            headers=bearer(DAVE),
        )
        run_id = started.json()["run_id"]
        assert started.json()["body"]["started_by"] == "dave"
        await _waiting(app, run_id)
        # dave is no approver; claiming to be alice in the body does not make him one
        claimed = await client.post(
            f"/api/v1/runs/{run_id}/approve",
            json={"by": "alice", "roles": ["ops"]},
            headers=bearer(DAVE),
        )
        assert claimed.status_code == 403
        assert "dave" in claimed.json()["detail"]
        assert (await app.state.service.record(run_id)).status == RunStatus.WAITING
        # alice approving with a body that names bob is recorded as alice
        await client.post(
            f"/api/v1/runs/{run_id}/approve", json={"by": "bob"}, headers=bearer(ALICE)
        )
        record = await app.state.service.handle(run_id).WaitUntil(timeout=10)
        assert record.body.closed_wait.decisions[-1].by == "alice"


async def test_errors_have_the_right_status_and_name_the_field(sqlite: Store) -> None:
    async with serving(sqlite, max_body=2000) as (app, client):
        h = bearer(ADMIN)
        missing = await client.get("/api/v1/runs/no-such-run", headers=h)
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
        assert (await client.get("/api/v1/workflows/nope", headers=h)).status_code == 404
        bad_input = await client.post(
            "/api/v1/workflows/shop/runs", json={"input": {"colour": "red"}}, headers=h
        )
        assert bad_input.status_code == 422
        assert bad_input.json()["errors"][0]["path"] == "input.item"
        unknown = await client.post(
            "/api/v1/workflows/shop/runs", json={"input": {"item": "x"}, "colour": 1}, headers=h
        )
        assert unknown.status_code == 422 and unknown.json()["errors"][0]["path"] == "colour"
        not_json = await client.post("/api/v1/workflows/shop/runs", content=b"{", headers=h)
        assert not_json.status_code == 400
        huge = await client.post(
            "/api/v1/workflows/shop/runs", json={"input": {"item": "x" * 5000}}, headers=h
        )
        assert huge.status_code == 413
        first = await client.post(
            "/api/v1/workflows/shop/runs", json={"input": {"item": "a"}, "run_id": "r1"}, headers=h
        )
        assert first.status_code == 201
        again = await client.post(
            "/api/v1/workflows/shop/runs", json={"input": {"item": "a"}, "run_id": "r1"}, headers=h
        )
        assert again.status_code == 200 and again.json()["run_id"] == "r1"
        reused = await client.post(
            "/api/v1/workflows/shop/runs", json={"input": {"item": "b"}, "run_id": "r1"}, headers=h
        )
        assert reused.status_code == 409
        await _waiting(app, "r1")
        rejected = await client.post("/api/v1/runs/r1/reject", headers=bearer(ALICE))
        assert rejected.status_code == 200
        late = await client.post("/api/v1/runs/r1/approve", headers=bearer(BOB))
        assert late.status_code == 409
        wrong_goto = await client.post(
            "/api/v1/workflows/shop/runs", json={"input": {"item": "c"}, "run_id": "r2"}, headers=h
        )
        assert wrong_goto.status_code == 201
        await _waiting(app, "r2")
        goto = await client.post("/api/v1/runs/r2/resume", json={"goto": "Nowhere"}, headers=h)
        assert goto.status_code == 422 and goto.json()["errors"][0]["path"] == "goto"
        bad_status = await client.get("/api/v1/runs?status=sleeping", headers=h)
        assert bad_status.status_code == 422


async def test_a_client_over_its_rate_gets_429(sqlite: Store) -> None:
    async with serving(sqlite, rate=0.001, burst=3) as (_, client):
        answers = [
            (await client.get("/api/v1/whoami", headers=bearer(ALICE))).status_code
            for _ in range(4)
        ]
        assert answers == [200, 200, 200, 429]
        limited = await client.get("/api/v1/whoami", headers=bearer(ALICE))
        assert int(limited.headers["Retry-After"]) >= 1
        # another identity has its own allowance
        assert (await client.get("/api/v1/whoami", headers=bearer(BOB))).status_code == 200


async def test_steering_lists_and_bulk_verbs(sqlite: Store) -> None:
    async with serving(sqlite) as (app, client):
        h = bearer(ADMIN)
        ids = []
        for item in ("a", "b", "c"):
            answer = await client.post(
                "/api/v1/workflows/shop/runs", json={"input": {"item": item}}, headers=h
            )
            ids.append(answer.json()["run_id"])
        for run_id in ids:
            await _waiting(app, run_id)
        listed = (await client.get("/api/v1/runs?workflow=shop&limit=2", headers=h)).json()
        assert len(listed["items"]) == 2 and listed["next_cursor"]
        assert listed["counts"] == {"waiting": 3}
        rest = await client.get(
            f"/api/v1/runs?workflow=shop&limit=2&cursor={listed['next_cursor']}", headers=h
        )
        assert len(rest.json()["items"]) == 1
        paused = await client.post(f"/api/v1/runs/{ids[0]}/pause", headers=bearer(BOB))
        assert paused.json()["status"] == "paused"
        resumed = await client.post(f"/api/v1/runs/{ids[0]}/resume", json={}, headers=h)
        assert resumed.json()["status"] == "waiting"
        everything = await client.post(
            "/api/v1/runs/bulk/stop", json={"status": "waiting"}, headers=bearer(BOB)
        )
        assert everything.status_code == 403  # rules apply: bob names the workflow
        bulk = await client.post(
            "/api/v1/runs/bulk/stop",
            json={"workflow": "shop", "status": "waiting"},
            headers=bearer(BOB),
        )
        assert bulk.status_code == 200, bulk.text
        assert bulk.json()["counts"] == {"done": 3}
        assert {o["status"] for o in bulk.json()["outcomes"]} == {"stopped"}
        again = await client.post(
            "/api/v1/runs/bulk/stop", json={"workflow": "shop"}, headers=bearer(BOB)
        )
        assert again.json()["counts"] == {"skipped": 3}
        timeline = (await client.get(f"/api/v1/runs/{ids[0]}/timeline", headers=h)).json()
        by = {e["kind"]: e["data"].get("by") for e in timeline["items"]}
        assert by["paused"] == "bob" and by["resumed"] == "root" and by["stopped"] == "bob"
        page = await client.get(f"/api/v1/runs/{ids[0]}/timeline?limit=2", headers=h)
        assert len(page.json()["items"]) == 2 and page.json()["next_after"] == 2


async def test_retry_rerun_replay_and_fork(sqlite: Store) -> None:
    async with serving(sqlite) as (app, client):
        h = bearer(ADMIN)
        service = app.state.service
        fragile = (
            await client.post("/api/v1/workflows/fragile/runs", json={"input": {}}, headers=h)
        ).json()
        with pytest.raises(RunFailed):
            await service.handle(fragile["run_id"]).Result(timeout=10)
        retried = await client.post(
            f"/api/v1/runs/{fragile['run_id']}/retry", json={"state": {"fixed": True}}, headers=h
        )
        assert retried.status_code == 200, retried.text
        assert await service.handle(fragile["run_id"]).Result(timeout=10) == "mended"
        timeline = await sqlite.timeline(fragile["run_id"])
        assert [e.data.get("by") for e in timeline if e.kind == "retried"] == ["root"]
        shop = (
            await client.post(
                "/api/v1/workflows/shop/runs", json={"input": {"item": "oar"}}, headers=h
            )
        ).json()
        await _waiting(app, shop["run_id"])
        await client.post(f"/api/v1/runs/{shop['run_id']}/approve", headers=bearer(ALICE))
        await service.handle(shop["run_id"]).Result(timeout=10)
        rerun = await client.post(
            f"/api/v1/runs/{shop['run_id']}/rerun", json={"step": "Ship"}, headers=h
        )
        assert rerun.status_code == 200, rerun.text
        assert rerun.json()["step"] == "Ship" and rerun.json()["same"] is True
        nowhere = await client.post(
            f"/api/v1/runs/{shop['run_id']}/rerun", json={"step": "Nowhere"}, headers=h
        )
        assert nowhere.status_code == 422
        replay = await client.post(f"/api/v1/runs/{shop['run_id']}/replay", headers=h)
        assert replay.status_code == 200, replay.text
        sandbox = (await client.get(f"/api/v1/runs/{replay.json()['run_id']}", headers=h)).json()
        assert sandbox["sandbox"] is True
        assert (await service.record(shop["run_id"])).status == RunStatus.COMPLETED
        ask = next(
            e.seq
            for e in await sqlite.timeline(shop["run_id"])
            if e.kind == "step_started" and e.step == "Ask"
        )
        forked = await client.post(
            f"/api/v1/runs/{shop['run_id']}/fork", json={"at": ask}, headers=bearer(BOB)
        )
        assert forked.status_code == 201, forked.text
        assert forked.json()["run_id"] != shop["run_id"]
        assert forked.json()["body"]["origin"]["by"] == "bob"
        await _waiting(app, forked.json()["run_id"])
        refused = await client.post(
            f"/api/v1/runs/{shop['run_id']}/fork", json={"at": ask}, headers=bearer(DAVE)
        )
        assert refused.status_code == 403


async def test_answers_events_and_the_approvals_inbox(sqlite: Store) -> None:
    async with serving(sqlite) as (app, client):
        h = bearer(ALICE)
        run = (await client.post("/api/v1/workflows/survey/runs", headers=h)).json()
        await _waiting(app, run["run_id"])
        wrong = await client.post(
            f"/api/v1/runs/{run['run_id']}/answer", json={"value": "green"}, headers=h
        )
        assert wrong.status_code == 422
        right = await client.post(
            f"/api/v1/runs/{run['run_id']}/answer", json={"value": "blue"}, headers=h
        )
        assert right.status_code == 200
        assert await app.state.service.handle(run["run_id"]).Result(timeout=10) == "blue"
        shop = (
            await client.post(
                "/api/v1/workflows/shop/runs", json={"input": {"item": "x"}}, headers=bearer(BOB)
            )
        ).json()
        await _waiting(app, shop["run_id"])
        inbox = (await client.get("/api/v1/approvals", headers=h)).json()["items"]
        assert [i["run_id"] for i in inbox] == [shop["run_id"]]
        # bob started it and self-approval is forbidden: not in his inbox
        assert (await client.get("/api/v1/approvals", headers=bearer(BOB))).json()["items"] == []
        paying = (
            await client.post(
                "/api/v1/workflows/payments/runs", json={"input": {"order": "o9"}}, headers=h
            )
        ).json()
        await _waiting(app, paying["run_id"])
        sent = await client.post(
            f"/api/v1/runs/{paying['run_id']}/events",
            json={"name": "paid", "payload": {"order": "o9"}, "event_id": "e1"},
            headers=h,
        )
        assert sent.status_code == 200, sent.text
        result = await app.state.service.handle(paying["run_id"]).Result(timeout=10)
        assert result["payload"] == {"order": "o9"}
        timeline = await sqlite.timeline(paying["run_id"])
        assert [e.data["by"] for e in timeline if e.kind == "event_sent"] == ["alice"]


async def test_workflows_are_listed_described_and_registered(sqlite: Store) -> None:
    async with serving(sqlite) as (app, client):
        h = bearer(ADMIN)
        listed = (await client.get("/api/v1/workflows", headers=h)).json()["items"]
        names = [w["name"] for w in listed]
        assert names == ["flaky", "fragile", "payments", "shop", "survey"]
        shop = (await client.get("/api/v1/workflows/shop", headers=h)).json()
        assert shop["owner"] == "shop-team" and "Ask" in shop["mermaid"]
        app.state.service.steward.RegisterTask("echo", lambda ctx: ctx.Input)
        document = {
            "name": "Echo",
            "description": "echoes",
            "steps": [{"name": "echo", "type": "task", "task_id": "echo"}],
            "team_id": "team-42",
        }
        refused = await client.post("/api/v1/workflows", json=document, headers=bearer(ALICE))
        assert refused.status_code == 403
        made = await client.post("/api/v1/workflows", json=document, headers=h)
        assert made.status_code == 201, made.text
        assert made.json()["owner"] == "team-42"
        broken = await client.post(
            "/api/v1/workflows",
            json={"name": "Bad", "steps": [{"name": "x", "agent": "missing"}]},
            headers=h,
        )
        assert broken.status_code == 422 and broken.json()["errors"][0]["path"]
        started = await client.post(
            "/api/v1/workflows/Echo/start", json={"input": {"n": 1}}, headers=h
        )
        assert started.status_code == 201
        app.state.service.steward.RegisterAgent("summariser", lambda: lambda ctx: "summary")
        as_yaml = (
            "name: Digest\nteam_id: team-7\n"
            "steps:\n  - {name: sum, type: agent, agent_id: summariser}\n"
        )
        made = await client.post(
            "/api/v1/workflows",
            content=as_yaml.encode(),
            headers={**h, "Content-Type": "application/yaml"},
        )
        assert made.status_code == 201, made.text
        assert made.json()["graph"]["steps"][-1]["details"]["agent"] == "summariser"


async def test_the_openapi_document_validates(sqlite: Store) -> None:
    async with serving(sqlite) as (_, client):
        document = (await client.get("/api/v1/openapi.json")).json()
    validate(document)
    assert "/api/v1/runs/{run_id}/approve" in document["paths"]
    assert "DecisionBody" in document["components"]["schemas"]


async def test_without_configured_tokens_the_api_makes_one_admin_token(
    sqlite: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HOLON_AUTH", raising=False)
    monkeypatch.delenv("HOLON_AUTH_FILE", raising=False)
    app = create_app(await make_steward(sqlite))
    token = app.state.admin_token
    assert token and len(token) > 30
    identity = app.state.auth.identify(token)
    assert identity is not None and identity.admin


def test_tokens_from_a_file_are_kept_hashed(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(
        "identities:\n"
        f"  - {{name: alice, token_sha256: {hash_token('a-long-secret-token')}, roles: [ops]}}\n"
        "  - {name: bob, token: another-long-token}\n"
        "permissions:\n  - {workflow: shop, start: [alice]}\n"
    )
    auth = Auth.from_file(path)
    alice = auth.identify("a-long-secret-token")
    assert alice is not None and alice.roles == {"ops"}
    assert auth.identify("another-long-token") is not None
    assert "another-long-token" not in repr(auth.__dict__)
    bob = auth.identify("another-long-token")
    assert bob is not None and not auth.may(bob, "start", "shop", None)
    assert auth.may(bob, "start", "other", None)
    path.write_text("identities:\n  - {name: x, token: short}\n")
    with pytest.raises(AuthConfigError, match=r"identities\[0\]\.token"):
        Auth.from_file(path)
