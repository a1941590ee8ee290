"""The shapes the reference DSL writes are understood: `.Persistence` as one mapping and
a bare `"redis"`, an approval carrying the caller's own digest or requiring one, and the
`@workflow()` decorator with the input as the function's parameters."""

from __future__ import annotations

from typing import Any

import pytest

from holon import (
    END,
    START,
    DigestMismatch,
    ExecuteContext,
    HumanApproval,
    InputValidationError,
    Next,
    RunStatus,
    Wait,
    Workflow,
    WorkflowDefinitionError,
    WorkflowRunner,
    workflow,
)
from holon.control.runner import _pick_store
from holon.stores import MemoryStore, RedisStore, SQLiteStore, open_store
from holon.stores.base import Store

pytestmark = pytest.mark.anyio


def test_persistence_takes_the_reference_mapping() -> None:
    wf = Workflow("deploy").Flow({START: lambda ctx: END})
    mapped = wf.Persistence({"Enabled": True, "Store": "redis", "KeyPrefix": "deploy:"})
    config = mapped.persistence_config
    assert (config.store, config.key_prefix, config.enabled) == ("redis", "deploy:", True)
    store, owned = _pick_store(mapped, None)
    assert isinstance(store, RedisStore) and owned
    assert store.url == "redis://localhost:6379/0" and store.key_prefix == "deploy:"
    off = wf.Persistence({"enabled": False}).persistence_config
    assert off.enabled is False and off.store is None
    with pytest.raises(WorkflowDefinitionError, match="unknown setting 'Stroe'"):
        wf.Persistence({"Stroe": "redis"})
    with pytest.raises(WorkflowDefinitionError, match="must be True or False"):
        wf.Persistence({"Enabled": "yes"})


def test_bare_store_names_stand_for_their_usual_urls() -> None:
    redis = open_store("redis")
    assert isinstance(redis, RedisStore) and redis.url == "redis://localhost:6379/0"
    assert isinstance(open_store("memory"), MemoryStore)
    sqlite = open_store("sqlite")
    assert isinstance(sqlite, SQLiteStore) and sqlite.path == ".holon/holon.db"


async def test_an_approval_carries_the_callers_digest_and_may_require_it(store: Store) -> None:
    document_hash = "sha256:4f1c"  # hashed by the caller, its own way
    gate = HumanApproval(approvers=["ops"], digest=document_hash, require_digest=True)
    wf = Workflow("gate").Flow(
        {
            START: lambda ctx: Wait(gate, "Done"),
            "Done": lambda ctx: Next(END, output={"digest": ctx.Decision["digest"]}),
        }
    )
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        info = await handle.Waiting()
        assert info is not None and info.digest == document_hash
        with pytest.raises(DigestMismatch, match="names no payload digest.*requires one"):
            await handle.Approve(by="ops")
        with pytest.raises(DigestMismatch, match="the payload changed"):
            await handle.Approve(by="ops", digest="sha256:0000")
        assert await handle.Status() == RunStatus.WAITING
        await handle.Approve(by="ops", digest=document_hash)
        assert await handle.Result(timeout=10) == {"digest": document_hash}
    with pytest.raises(ValueError, match="require_digest=True\\) needs something to digest"):
        HumanApproval(approvers=["ops"], require_digest=True)


@workflow()
async def research_pipeline(ctx: ExecuteContext[Any, Any], topic: str, depth: int = 2) -> Any:
    """Research a topic to some depth."""
    found = await ctx.Task(lambda: [f"{topic}-{i}" for i in range(depth)], name="search")
    return {"topic": topic, "found": found}


@workflow("named", version="v1")
def named(ctx: ExecuteContext[Any, Any], n: int) -> int:
    return n * 2


async def test_the_workflow_decorator_takes_the_input_as_parameters(store: Store) -> None:
    assert isinstance(research_pipeline, Workflow)
    assert research_pipeline.name == "research_pipeline"
    assert research_pipeline.description == "Research a topic to some depth."
    assert research_pipeline.input_model is not None
    assert set(research_pipeline.input_model.model_fields) == {"topic", "depth"}
    async with WorkflowRunner(research_pipeline, store) as runner:
        handle = await runner.Run({"topic": "qc"})
        assert await handle.Result(timeout=10) == {"topic": "qc", "found": ["qc-0", "qc-1"]}
        with pytest.raises(InputValidationError, match="depth"):
            await runner.Run({"topic": "qc", "depth": "deep"})
    assert named.name == "named" and named.version == "v1"
    async with WorkflowRunner(named, store) as runner:
        assert await (await runner.Run({"n": 21})).Result(timeout=10) == 42


def test_the_workflow_decorator_refuses_a_function_without_ctx() -> None:
    def no_params() -> None:
        return None

    def star(ctx: Any, *items: str) -> None:
        return None

    with pytest.raises(WorkflowDefinitionError, match="takes ctx as its first parameter"):
        workflow(no_params)
    with pytest.raises(WorkflowDefinitionError, match=r"\*items cannot be an input field"):
        workflow()(star)
