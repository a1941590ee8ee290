"""`ctx.IdempotencyKey` keeps an external write exactly-once across retries."""

from __future__ import annotations

import pytest

from examples.idempotent_payment import Checkout, payment_server
from holon import WorkflowRunner
from holon.stores.base import Store

pytestmark = pytest.mark.anyio


async def test_a_retried_charge_is_made_once(store: Store) -> None:
    with payment_server() as server:
        async with WorkflowRunner(Checkout, store) as runner:
            first = await runner.Run({"order_id": "A-1", "amount_cents": 100, "api": server.url})
            second = await runner.Run({"order_id": "A-2", "amount_cents": 250, "api": server.url})
            receipts = [await first.Result(timeout=10), await second.Result(timeout=10)]
    assert server.requests == 4, "each run's first reply was lost, so each step ran twice"
    assert len(server.charges) == 2, "but each run charged once"
    assert sorted(r["id"] for r in receipts) == ["ch_1", "ch_2"]
    assert sorted(server.charges) == sorted(
        [f"{first.run_id}:Charge:1", f"{second.run_id}:Charge:1"]
    )
