"""What the HTTP tests share: a shop workflow with an approval gate, tokens for a few
identities, and an app over a real store with a worker executing in the same process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
from pydantic import BaseModel
from starlette.applications import Starlette

from holon import (
    END,
    START,
    Context,
    Event,
    HumanApproval,
    HumanInput,
    Next,
    Retry,
    Steward,
    Wait,
    Workflow,
    step,
)
from holon.http import Auth, Identity, Rule, create_app
from holon.http.serve import listening_socket, uvicorn_server
from holon.stores.base import Store


class Order(BaseModel):
    item: str


def ask(ctx: Context[Order, Any]) -> Wait:
    return Wait(
        HumanApproval(
            approvers=["alice", "role:ops"],
            question="Ship it?",
            payload={"item": ctx.Input.item},
            forbid_self_approval=True,
        ),
        "Ship",
    )


def ship(ctx: Context[Order, Any]) -> Next:
    return Next(END, output={"shipped": ctx.Input.item, "approved_by": ctx.Decision})


SHOP = (
    Workflow("shop", "Ships an order once approved")
    .Input(Order)
    .Flow({START: lambda ctx: "Ask", "Ask": ask, "Ship": ship})
)


def question(ctx: Context[Any, Any]) -> Wait:
    return Wait(HumanInput("Which colour?", kind="choice", options=["red", "blue"]), "Paint")


SURVEY = Workflow("survey").Flow(
    {START: lambda ctx: "Ask", "Ask": question, "Paint": lambda ctx: Next(END, output=ctx.Decision)}
)


class Payment(BaseModel):
    order: str


def await_payment(ctx: Context[Payment, Any]) -> Wait:
    return Wait(Event("paid", match={"order": ctx.Input.order}), "Done")


PAYMENTS = (
    Workflow("payments")
    .Input(Payment)
    .Flow(
        {
            START: lambda ctx: "Await",
            "Await": await_payment,
            "Done": lambda ctx: Next(END, output=ctx.Decision),
        }
    )
)


def breaks(ctx: Context[Any, Any]) -> str:
    raise RuntimeError(f"attempt {ctx.Attempt} broke")


FLAKY = Workflow("flaky").Flow(
    {
        START: lambda ctx: "Break",
        "Break": step(breaks, retry=Retry(attempts=2, initial_delay=0.01, jitter=False)),
    }
)


class Mending(BaseModel):
    fixed: bool = False


def mend(ctx: Context[Any, Mending]) -> Next:
    if not ctx.State.fixed:
        raise RuntimeError("not fixed yet")
    return Next(END, output="mended")


FRAGILE = Workflow("fragile").State(Mending).Flow({START: lambda ctx: "Mend", "Mend": mend})

TOKENS = {
    "admin-token-0000000000": Identity("root", frozenset({"admin"})),
    "alice-token-0000000000": Identity("alice"),
    "bob-token-000000000000": Identity("bob", frozenset({"ops"})),
    "carol-token-0000000000": Identity("carol", frozenset({"sales"}), frozenset({"shop-team"})),
    "dave-token-00000000000": Identity("dave"),
}
ADMIN, ALICE, BOB, CAROL, DAVE = TOKENS


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


RULES = [
    # Only the shop's team and ops start or steer shop runs; dave is in neither.
    Rule(
        workflow="shop",
        allowed={
            "start": ("team:shop-team", "role:ops", "alice"),
            "steer": ("role:ops", "alice"),
            "approve": ("alice", "role:ops", "carol"),
        },
    )
]


async def make_steward(store: Store) -> Steward:
    steward = Steward(store)
    await steward.Register(SHOP, owner="shop-team")
    await steward.Register(SURVEY)
    await steward.Register(FLAKY)
    await steward.Register(PAYMENTS)
    await steward.Register(FRAGILE)
    return steward


@asynccontextmanager
async def on_loopback(app: Starlette) -> AsyncIterator[str]:
    """`app` served by a real uvicorn on a loopback port; yields its base URL."""
    server = uvicorn_server(app)
    # A socket already listening: connections wait in its backlog until uvicorn serves.
    listening = listening_socket()
    port = listening.getsockname()[1]
    async with anyio.create_task_group() as group:
        group.start_soon(server.serve, [listening])
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True


async def sse_messages(
    client: httpx.AsyncClient, url: str, headers: dict[str, str]
) -> AsyncIterator[dict[str, str]]:
    """The messages of an event stream, each as its fields (`id`, `event`, `data`)."""
    async with client.stream("GET", url, headers=headers) as stream:
        assert stream.status_code == 200, await stream.aread()
        message: dict[str, str] = {}
        async for line in stream.aiter_lines():
            if not line:
                if "event" in message:
                    yield message
                message = {}
            elif not line.startswith(":"):
                field, _, value = line.partition(": ")
                message[field] = value


@asynccontextmanager
async def serving(
    store: Store, *, rules: list[Rule] | None = None, **options: Any
) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    """The app over `store` with its lifespan (and worker) running, and a client."""
    steward = await make_steward(store)
    app = create_app(
        steward,
        auth=Auth.from_tokens(TOKENS, RULES if rules is None else rules),
        worker=True,
        poll_interval=0.05,
        **options,
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://holon.test") as client:
            yield app, client
