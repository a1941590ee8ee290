"""An external write that stays exactly-once across retries and crashes.

A step charges a card through an HTTP API, sending `ctx.IdempotencyKey` as the
`Idempotency-Key` header. The key is the same on every attempt of that step in that
run (a retry, or a re-run after a crash), and different in every other run, so a
payment API that honours the header charges once, however often the step runs.

Here the "payment API" is a small server in this process (it remembers the keys it
has seen). The first attempt's reply is lost on the way back, as if the network
failed after the charge was made; the retry sends the same key, and the server
answers with the original charge instead of charging again.

    python examples/idempotent_payment.py
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
from pydantic import BaseModel

from holon import END, START, Context, Next, Retry, Workflow, WorkflowRunner, step


class PaymentServer(ThreadingHTTPServer):
    """Charges once per Idempotency-Key; a repeated key gets the first charge back."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.charges: dict[str, dict[str, Any]] = {}
        self.requests = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/charges"


class _Handler(BaseHTTPRequestHandler):
    server: PaymentServer

    def do_POST(self) -> None:
        key = self.headers.get("Idempotency-Key", "")
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests += 1
            charge = self.server.charges.get(key)
            if charge is None:
                charge = {"id": f"ch_{len(self.server.charges) + 1}", **body}
                self.server.charges[key] = charge
        reply = json.dumps(charge).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def payment_server() -> Iterator[PaymentServer]:
    server = PaymentServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


class Order(BaseModel):
    order_id: str
    amount_cents: int
    api: str


def post_charge(url: str, key: str, payload: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "Idempotency-Key": key},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        reply: dict[str, Any] = json.loads(response.read())
        return reply


async def charge(ctx: Context[Order, Any]) -> Next:
    order = ctx.Input
    reply = await anyio.to_thread.run_sync(
        post_charge,
        order.api,
        ctx.IdempotencyKey,
        {"order": order.order_id, "amount_cents": order.amount_cents},
    )
    if ctx.Attempt == 1:
        # The charge was made, but pretend its reply never arrived.
        raise ConnectionResetError("connection reset before the reply was read")
    return Next(END, output=reply)


Checkout = (
    Workflow("checkout")
    .Input(Order)
    .Flow(
        {
            START: lambda ctx: "Charge",
            "Charge": step(charge, retry=Retry(attempts=3, initial_delay=0.01)),
        }
    )
)


async def main() -> None:
    with payment_server() as server:
        async with WorkflowRunner(Checkout, "memory://") as runner:
            handle = await runner.Run(
                {"order_id": "A-1001", "amount_cents": 4200, "api": server.url}
            )
            receipt = await handle.Result(timeout=30)
        print(f"receipt: {receipt}")
        print(f"requests received: {server.requests}, charges made: {len(server.charges)}")


if __name__ == "__main__":
    anyio.run(main)
