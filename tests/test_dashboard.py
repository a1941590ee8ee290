"""The dashboard: sessions and CSRF through the ASGI app, and a real headless Chromium
that signs in, sees a waiting run, approves it with the button and watches the
timeline reach `completed` without reloading the page.

The browser tests need Debian's `chromium` and the `playwright` package (`scripts/test`
installs both when it can); without them they are skipped, saying how to install them.
Screenshots go to `test-artifacts/` (or `$HOLON_TEST_ARTIFACTS`).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from holon import RunStatus
from holon.http import Auth, create_app
from holon.stores import SQLiteStore
from holon.stores.base import Store
from tests.http_support import ALICE, BOB, TOKENS, bearer, make_steward, on_loopback, serving

pytestmark = pytest.mark.anyio

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(
    os.environ.get(
        "HOLON_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"
    )
)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = SQLiteStore(f"sqlite:///{tmp_path / 'holon.db'}")
    await opened.open()
    yield opened
    await opened.close()


def _csrf(html: str) -> str:
    found = re.search(r'<meta name="csrf" content="([^"]*)"', html)
    assert found is not None
    return found.group(1)


async def test_a_session_signs_in_with_a_token_and_writes_need_its_csrf_token(
    store: Store,
) -> None:
    async with serving(store) as (app, client):
        assert (await client.get("/dashboard")).headers["location"] == "/dashboard/login"
        refused = await client.post("/dashboard/login", data={"token": "wrong"})
        assert refused.status_code == 401 and "not valid" in refused.text
        signed = await client.post("/dashboard/login", data={"token": ALICE})
        assert signed.status_code == 303
        cookie = client.cookies.get("holon_session")
        assert cookie and ALICE not in cookie
        page = await client.get("/dashboard")
        assert page.status_code == 200 and "alice" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        csrf = _csrf(page.text)
        started = await client.post(
            "/api/v1/workflows/shop/runs", json={"input": {"item": "cup"}}, headers=bearer(BOB)
        )
        run_id = started.json()["run_id"]
        await app.state.service.handle(run_id).WaitUntil(RunStatus.WAITING, timeout=10)
        # the session reads without more ado ...
        assert (await client.get(f"/api/v1/runs/{run_id}")).status_code == 200
        run_page = await client.get(f"/dashboard/runs/{run_id}")
        assert 'data-step="Ask"' in run_page.text and "Approve" in run_page.text
        inbox = await client.get("/dashboard/approvals")
        assert run_id in inbox.text
        # ... but writes only with the CSRF token
        forged = await client.post(f"/api/v1/runs/{run_id}/pause")
        assert forged.status_code == 403 and "CSRF" in forged.json()["detail"]
        wrong = await client.post(f"/api/v1/runs/{run_id}/pause", headers={"X-CSRF-Token": "x"})
        assert wrong.status_code == 403
        paused = await client.post(f"/api/v1/runs/{run_id}/pause", headers={"X-CSRF-Token": csrf})
        assert paused.status_code == 200 and paused.json()["status"] == "paused"
        timeline = await store.timeline(run_id)
        assert [e.data.get("by") for e in timeline if e.kind == "paused"] == ["alice"]
        survey = await client.post("/api/v1/workflows/survey/runs", headers=bearer(BOB))
        await app.state.service.handle(survey.json()["run_id"]).WaitUntil(
            RunStatus.WAITING, timeout=10
        )
        asked = await client.get(f"/dashboard/runs/{survey.json()['run_id']}")
        assert '<select name="value" data-json><option value="&quot;red&quot;">red' in asked.text
        await client.post("/dashboard/logout", data={"csrf": csrf})
        assert (await client.get("/dashboard")).status_code == 303
        assert (await client.get(f"/api/v1/runs/{run_id}")).status_code == 401


def _browser_or_skip() -> Any:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("needs playwright: pip install 'holon[dev]' (or pip install playwright)")
    if not os.path.exists(CHROMIUM):
        pytest.skip("needs Debian's chromium: apt-get install -y chromium")
    return async_playwright


async def test_sign_in_see_a_waiting_run_approve_it_and_watch_it_complete(store: Store) -> None:
    async_playwright = _browser_or_skip()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    steward = await make_steward(store)
    app = create_app(steward, auth=Auth.from_tokens(TOKENS), worker=True, poll_interval=0.05)
    async with on_loopback(app) as url, httpx.AsyncClient(base_url=url) as client:
        started = await client.post(
            "/api/v1/workflows/shop/runs", json={"input": {"item": "globe"}}, headers=bearer(BOB)
        )
        run_id = started.json()["run_id"]
        await app.state.service.handle(run_id).WaitUntil(RunStatus.WAITING, timeout=10)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM,
                headless=True,
                args=["--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1", "--no-sandbox"],
            )
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 900})
                await page.goto(f"{url}/dashboard")
                assert page.url.endswith("/dashboard/login")
                await page.fill("input[name=token]", ALICE)
                await page.click("button[type=submit]")
                await page.wait_for_url(f"{url}/dashboard")
                row = page.locator(f'tr[data-run="{run_id}"]')
                await row.locator(".badge.waiting").wait_for()
                await page.screenshot(path=str(ARTIFACTS / "dashboard-runs.png"), full_page=True)
                await page.click("text=Approvals")
                await page.locator(f"a:has-text('{run_id}')").wait_for()
                await page.click(f"a:has-text('{run_id}')")
                await page.locator('#timeline tr[data-kind="waiting"]').wait_for()
                await page.locator('svg.graph .step.waiting[data-step="Ask"]').wait_for()
                digest = await page.locator("code.digest").text_content()
                assert digest and len(digest) == 64
                await page.screenshot(
                    path=str(ARTIFACTS / "dashboard-run-waiting.png"), full_page=True
                )
                await page.evaluate("window.notReloaded = true")
                await page.click("button.approve")
                await page.locator('#timeline tr[data-kind="completed"]').wait_for()
                await page.locator("h2 .badge.completed").wait_for()
                assert await page.evaluate("window.notReloaded") is True
                assert await page.locator("#durations .bar").count() >= 2
                assert "globe" in (await page.locator("#result").text_content() or "")
                await page.screenshot(
                    path=str(ARTIFACTS / "dashboard-run-completed.png"), full_page=True
                )
                # surgery from the same page: a step re-run, then a replay in a sandbox
                await page.select_option("form.rerun select[name=step]", "Ship")
                await page.click("form.rerun button")
                await page.locator("#report:has-text('\"same\": true')").wait_for()
                await page.click("form[data-api$='/replay'] button")
                await page.locator("#report a").wait_for()
                await page.screenshot(path=str(ARTIFACTS / "dashboard-replay.png"), full_page=True)
                await page.click("#report a")
                await page.locator("h2 .badge.sandbox").wait_for()
                await page.goto(f"{url}/dashboard")
                await page.locator("tr .badge.sandbox").first.wait_for()
                await page.screenshot(
                    path=str(ARTIFACTS / "dashboard-runs-sandbox.png"), full_page=True
                )
            finally:
                await browser.close()
    record = await store.load_run(run_id)
    assert record is not None and record.status == RunStatus.COMPLETED
    decisions = record.body.closed_wait.decisions if record.body.closed_wait else []
    assert [d.by for d in decisions] == ["alice"]
