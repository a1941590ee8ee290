"""pydantic-ai agents made durable inside holon steps: each model request and tool
call is checkpointed in the step, so a step that runs again (its process killed, or
its runner gone) calls the model only for what is not recorded, and each tool's
effect is applied once, keyed by the tool call's idempotency key."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

from holon import RunStatus, WorkflowRunner
from holon.agents import PydanticAgent
from holon.stores.base import Store
from tests.agent_support import read_log, workflow
from tests.conftest import REDIS_URL
from tests.processes import child
from tests.redis_support import delete_prefix, redis_answers

pytestmark = pytest.mark.anyio


async def test_agent_run_is_checkpointed_inside_the_step(store: Store, tmp_path: Path) -> None:
    log, sink = str(tmp_path / "log.jsonl"), str(tmp_path / "sink.jsonl")
    async with WorkflowRunner(workflow(log, sink), store) as runner:
        handle = await runner.Run()
        assert await handle.Result(timeout=10) == {"answer": "acme is ready"}
        record = await handle.Record()
        timeline = await handle.Timeline()
    calls = [e["call"] for e in read_log(log)]
    assert calls == ["model", "lookup", "model", "record", "model"]
    kinds = [e.kind for e in timeline if e.kind in ("model_request", "tool_call")]
    assert kinds == ["model_request", "tool_call", "model_request", "tool_call", "model_request"]
    # The usage of the three requests, summed for the step and the run.
    requests = [e.data for e in timeline if e.kind == "model_request"]
    tokens = sum(r["tokens"] for r in requests)
    assert tokens > 0
    assert record.body.usage["tokens"] == tokens
    assert record.body.usage["requests"] == 3
    assert record.body.usage["steps"]["Research"]["tokens"] == tokens
    # The journal is not among the step results a step sees.
    assert sorted(k for k in record.results if not k.startswith("journal:")) == ["Research"]


async def test_a_step_run_again_replays_what_is_recorded(store: Store, tmp_path: Path) -> None:
    log, sink = str(tmp_path / "log.jsonl"), str(tmp_path / "sink.jsonl")
    parked = anyio.Event()
    async with WorkflowRunner(
        workflow(log, sink, hang_in="tool:record", parked=parked), store
    ) as runner:
        handle = await runner.Run()
        with anyio.fail_after(10):
            await parked.wait()
    # That runner is gone, its step cancelled mid-tool; another one takes the run over.
    before = read_log(log)
    async with WorkflowRunner(workflow(log, sink), store) as runner:
        handle = await runner.Get(handle.run_id)
        assert await handle.Result(timeout=10) == {"answer": "acme is ready"}
    after = read_log(log)[len(before) :]
    assert [e["call"] for e in before] == ["model", "lookup", "model", "record"]
    # Only the third request is made again; the recorded lookup is not repeated; the
    # record tool, cut short, runs again with the same key and applies its effect once.
    assert [e["call"] for e in after] == ["record", "model"]
    assert before[-1]["key"] == after[0]["key"]
    assert [e["key"] for e in read_log(sink)] == [after[0]["key"]]
    assert (await handle.Status()) == RunStatus.COMPLETED


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "redis"])
@pytest.mark.parametrize("hang_in", ["tool:record", "model:3"])
async def test_sigkill_mid_agent_run_calls_the_model_only_for_unrecorded_requests(
    tmp_path: Path, backend: str, hang_in: str
) -> None:
    """The process is SIGKILLed after the agent's second model request (inside the tool
    that request asked for, or inside the third request); its successor calls the
    model only for the third request and applies each tool's effect once."""
    if backend == "redis":
        if not redis_answers(REDIS_URL):
            pytest.skip(f"no Redis answers at {REDIS_URL} (scripts/test starts one)")
        url, prefix = REDIS_URL, f"holon-test:{uuid.uuid4().hex[:12]}:"
    else:
        url, prefix = f"sqlite:///{tmp_path / 'holon.db'}", ""
    log, sink = tmp_path / "log.jsonl", tmp_path / "sink.jsonl"
    common = ["--store", url, "--prefix", prefix, "--run-id", "agent-run"]
    common += ["--log", str(log), "--sink", str(sink)]
    worker = ["-m", "tests.agent_worker"]
    try:
        async with child(tmp_path, "first", *worker, "start", *common, "--hang-in", hang_in) as a:
            await a.expect("the park", lambda m: m.get("event") == "inside")
            await a.kill()
        before = read_log(log)
        async with child(tmp_path, "second", *worker, "resume", *common) as b:
            message = await b.expect("the result", lambda m: m.get("event") == "result")
    finally:
        if prefix:
            delete_prefix(url, prefix)
    assert message["value"] == {"answer": "acme is ready"}
    after = read_log(log)[len(before) :]
    first_calls = [e["call"] for e in before]
    second_calls = [e["call"] for e in after]
    models = lambda entries: [e for e in entries if e["call"] == "model"]  # noqa: E731
    if hang_in == "tool:record":
        assert first_calls == ["model", "lookup", "model", "record"]
        assert second_calls == ["record", "model"]  # the tool cut short, then request 3
        assert before[-1]["key"] == after[0]["key"]  # the same idempotency key
    else:
        assert first_calls == ["model", "lookup", "model", "record", "model"]
        assert second_calls == ["model"]  # request 3 only: 1 and 2 are recorded
    assert [e["number"] for e in models(after)] == [3]
    assert {e["pid"] for e in before} != {e["pid"] for e in after}
    # Each tool's effect is applied once, at the sink keyed by its idempotency key.
    record_keys = {e["key"] for e in before + after if e["call"] == "record"}
    assert len(record_keys) == 1
    assert [e["key"] for e in read_log(sink)] == sorted(record_keys)
    lookups = [e for e in before + after if e["call"] == "lookup"]
    assert len(lookups) == 1


async def test_execute_agent_is_journaled_inside_its_task(store: Store, tmp_path: Path) -> None:
    """`ctx.Agent(...)` in `.Execute()`: the agent's requests are checkpointed inside the
    task, so a task cut short resumes its agent run from the journal."""
    from holon import ExecuteContext, Workflow
    from tests.agent_support import build_agent

    log, sink = str(tmp_path / "log.jsonl"), str(tmp_path / "sink.jsonl")

    def execute_workflow(agent: Any) -> Workflow:
        async def main(ctx: ExecuteContext[Any, Any]) -> Any:
            answer = await ctx.Agent("researcher", {"company": "acme"})
            return {"answer": answer}

        return (
            Workflow("DurableResearchExecute")
            .Agents({"researcher": lambda: PydanticAgent(agent)})
            .Execute(main)
        )

    parked = anyio.Event()
    parking = execute_workflow(build_agent(log, sink, hang_in="model:3", parked=parked))
    async with WorkflowRunner(parking, store) as runner:
        handle = await runner.Run()
        with anyio.fail_after(10):
            await parked.wait()
    before = read_log(log)
    async with WorkflowRunner(execute_workflow(build_agent(log, sink)), store) as runner:
        handle = await runner.Get(handle.run_id)
        assert await handle.Result(timeout=10) == {"answer": "acme is ready"}
        record = await handle.Record()
    after = read_log(log)[len(before) :]
    assert [e["call"] for e in before] == ["model", "lookup", "model", "record", "model"]
    assert [(e["call"], e["number"]) for e in after] == [("model", 3)]
    assert record.results["agent:researcher"]["value"] == "acme is ready"


async def test_a_journal_entry_over_the_size_limit_fails_the_step(tmp_path: Path) -> None:
    from holon.stores import MemoryStore

    log, sink = str(tmp_path / "log.jsonl"), str(tmp_path / "sink.jsonl")
    wf = workflow(log, sink).Limits(step_output=64)
    async with WorkflowRunner(wf, MemoryStore()) as runner:
        handle = await runner.Run()
        record = await handle.WaitUntil(timeout=10)
    assert record.status == RunStatus.FAILED
    assert record.body.error is not None and record.body.error.type == "ValueTooLarge"
    assert "journal entry" in record.body.error.message
    assert not [k for k in record.results if k.startswith("journal:")]  # nothing stored
