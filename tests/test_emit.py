"""`ctx.Emit`: what a running step sends reaches every watcher of the run
(`RunHandle.Watch()`), in order, and none of it is stored."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from holon import END, START, Emitted, ExecuteContext, Next, TimelineEvent, Workflow, WorkflowRunner
from holon.stores.base import Store

pytestmark = pytest.mark.anyio


async def _collect(watch: Any, into: list[Any]) -> None:
    async for item in watch:
        into.append(item)


async def test_emit_reaches_two_watchers_in_order_and_is_not_stored(store: Store) -> None:
    go = anyio.Event()

    async def write(ctx: Any) -> Next:
        await go.wait()
        for n in range(5):
            ctx.Emit("token", {"n": n, "text": f"secret-{n}"})
        return Next(END, output="written")

    wf = Workflow("emitting").Flow({START: lambda ctx: "Write", "Write": write})
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        first, second = handle.Watch(timeout=10), handle.Watch(timeout=10)
        seen: tuple[list[Any], list[Any]] = ([], [])
        async with anyio.create_task_group() as group:
            group.start_soon(_collect, first, seen[0])
            group.start_soon(_collect, second, seen[1])
            go.set()
        assert await handle.Result(timeout=10) == "written"
        record = await handle.Record()
        timeline = await handle.Timeline()
    for items in seen:
        emitted = [i for i in items if isinstance(i, Emitted)]
        assert [(e.kind, e.step, e.data["n"]) for e in emitted] == [
            ("token", "Write", n) for n in range(5)
        ]
        kinds = [i.kind for i in items if isinstance(i, TimelineEvent)]
        assert kinds[-1] == "completed"
    stored = json.dumps(record.model_dump(mode="json")) + json.dumps(
        [e.model_dump(mode="json") for e in timeline]
    )
    assert "secret-" not in stored


async def test_emit_from_an_execute_workflow(store: Store) -> None:
    go = anyio.Event()

    async def main(ctx: ExecuteContext[Any, Any]) -> str:
        await go.wait()
        ctx.Emit("progress", 1)
        ctx.Emit("progress", 2)
        return "done"

    async with WorkflowRunner(Workflow("emitting-execute").Execute(main), store) as runner:
        handle = await runner.Run()
        watch = handle.Watch(timeout=10)
        items: list[Any] = []
        async with anyio.create_task_group() as group:
            group.start_soon(_collect, watch, items)
            go.set()
        assert await handle.Result(timeout=10) == "done"
    assert [i.data for i in items if isinstance(i, Emitted)] == [1, 2]


async def test_emit_needs_a_kind(store: Store) -> None:
    async def bad(ctx: Any) -> str:
        ctx.Emit("")
        return END

    wf = Workflow("emitting-bad").Flow({START: lambda ctx: "Bad", "Bad": bad})
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        record = await handle.WaitUntil(timeout=10)
    assert record.body.error is not None and "needs a kind" in record.body.error.message


async def test_a_streaming_pydantic_ai_agent_sends_its_text_to_watchers(store: Store) -> None:
    from collections.abc import AsyncIterator

    from pydantic_ai import Agent as PydanticAIAgent
    from pydantic_ai.messages import ModelMessage
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    from holon.agents import HolonDurability, PydanticAgent

    go = anyio.Event()

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        for word in ("acme ", "is ", "ready"):
            yield word

    async def unused(messages: list[ModelMessage], info: AgentInfo) -> Any:
        raise AssertionError("a streaming agent streams its requests")

    agent = PydanticAIAgent(
        FunctionModel(unused, stream_function=stream),
        name="writer",
        capabilities=[HolonDurability(stream_text=True)],
    )

    async def write(ctx: Any) -> Next:
        await go.wait()
        async with await ctx.Agents.writer as writer:
            return Next(END, output=await writer.Run("write"))

    wf = (
        Workflow("emitting-agent")
        .Agents({"writer": lambda: PydanticAgent(agent)})
        .Flow({START: lambda ctx: "Write", "Write": write})
    )
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        watch = handle.Watch(timeout=10)
        items: list[Any] = []
        async with anyio.create_task_group() as group:
            group.start_soon(_collect, watch, items)
            go.set()
        assert await handle.Result(timeout=10) == "acme is ready"
    texts = [i.data for i in items if isinstance(i, Emitted) and i.kind == "text"]
    assert "".join(texts) == "acme is ready"
    assert len(texts) == 3


def _two_redis_stores(kind: str) -> tuple[Store, Store, str | None]:
    """Two store objects on one Redis, as two processes would have."""
    import uuid

    import fakeredis

    from holon.stores import RedisStore
    from tests.conftest import REDIS_URL
    from tests.redis_support import redis_answers

    if kind == "fakeredis":
        server = fakeredis.FakeServer()
        made = [
            RedisStore(
                "redis://fakeredis/0",
                client=fakeredis.FakeAsyncRedis(server=server, decode_responses=True),
            )
            for _ in range(2)
        ]
        return made[0], made[1], None
    if not redis_answers(REDIS_URL):
        pytest.skip(f"no Redis answers at {REDIS_URL} (scripts/test starts one)")
    prefix = f"holon-test:{uuid.uuid4().hex[:12]}:"
    return (
        RedisStore(REDIS_URL, key_prefix=prefix),
        RedisStore(REDIS_URL, key_prefix=prefix),
        prefix,
    )


@pytest.mark.parametrize("kind", ["fakeredis", "redis"])
async def test_emit_reaches_a_watcher_in_another_process_through_redis(kind: str) -> None:
    from tests.conftest import REDIS_URL
    from tests.redis_support import delete_prefix

    executing, watching, prefix = _two_redis_stores(kind)
    go = anyio.Event()

    async def write(ctx: Any) -> Next:
        await go.wait()
        for n in range(3):
            ctx.Emit("token", n)
        return Next(END, output="written")

    wf = Workflow("emitting-across").Flow({START: lambda ctx: "Write", "Write": write})
    try:
        async with (
            WorkflowRunner(wf, executing) as runner,
            WorkflowRunner(wf, watching, execute=False) as elsewhere,
        ):
            handle = await runner.Run()
            remote = await elsewhere.Get(handle.run_id)
            watch = remote.Watch(timeout=10)
            with anyio.fail_after(10):
                await watch.ready()
            items: list[Any] = []
            async with anyio.create_task_group() as group:
                group.start_soon(_collect, watch, items)
                go.set()
            assert await handle.Result(timeout=10) == "written"
    finally:
        await executing.close()
        await watching.close()
        if prefix:
            delete_prefix(REDIS_URL, prefix)
    assert [(i.kind, i.data) for i in items if isinstance(i, Emitted)] == [
        ("token", 0),
        ("token", 1),
        ("token", 2),
    ]
