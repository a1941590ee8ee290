"""Usage and budgets: each model request's tokens in the timeline, summed per step and
per run in the checkpoint; a run whose budget runs out pauses before its next model
request, and goes on once an operator raises the budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from holon import Budget, RunStatus, WorkflowRunner
from holon.stores.base import Store
from tests.agent_support import read_log, workflow

pytestmark = pytest.mark.anyio


async def test_budget_exhausted_pauses_before_the_next_request(
    store: Store, tmp_path: Path
) -> None:
    log, sink = str(tmp_path / "log.jsonl"), str(tmp_path / "sink.jsonl")
    wf = workflow(log, sink).Budget(requests=2)
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        record = await handle.WaitUntil(RunStatus.PAUSED, timeout=10)
        assert record.status == RunStatus.PAUSED
        # Two requests made, the third not: the model was not called a third time.
        assert [e["call"] for e in read_log(log)] == ["model", "lookup", "model", "record"]
        paused = [e for e in await handle.Timeline() if e.kind == "paused"]
        assert [e.data["reason"] for e in paused] == ["budget exhausted"]
        assert paused[0].data["measure"] == "requests"
        assert record.body.usage["requests"] == 2
        assert record.body.budget == {"requests": 2}

        assert await handle.Resume(budget=Budget(requests=5)) == RunStatus.QUEUED
        assert await handle.Result(timeout=10) == {"answer": "acme is ready"}
        record = await handle.Record()
        timeline = await handle.Timeline()
    # The recorded requests and tools were not made again after the pause.
    assert [e["call"] for e in read_log(log)] == ["model", "lookup", "model", "record", "model"]
    requests = [e.data for e in timeline if e.kind == "model_request"]
    assert len(requests) == 3
    usage = record.body.usage
    assert usage["requests"] == 3
    for measure in ("tokens", "input_tokens", "output_tokens"):
        total = sum(r[measure] for r in requests)
        assert total > 0
        assert usage[measure] == total
        assert usage["steps"]["Research"][measure] == total
    assert usage["tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert record.body.budget == {"requests": 5}


async def test_a_token_budget_set_for_one_run(store: Store, tmp_path: Path) -> None:
    log, sink = str(tmp_path / "log.jsonl"), str(tmp_path / "sink.jsonl")
    async with WorkflowRunner(workflow(log, sink), store) as runner:
        handle = await runner.Run(budget={"tokens": 1})
        record = await handle.WaitUntil(RunStatus.PAUSED, timeout=10)
        assert record.body.usage["requests"] == 1  # the first request spent it
        assert [e["call"] for e in read_log(log)] == ["model", "lookup"]
        await handle.Resume(budget={"tokens": 10_000})
        assert await handle.Result(timeout=10) == {"answer": "acme is ready"}


def test_bad_budgets_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="tokens"):
        Budget(tokens=-1)
    with pytest.raises(ValueError, match="'dollars'"):
        Budget.of({"dollars": 3})


def test_cost_is_counted_where_the_price_is_known() -> None:
    from pydantic import TypeAdapter
    from pydantic_ai.messages import ModelResponse, TextPart
    from pydantic_ai.usage import RequestUsage

    from holon.agents.pydantic_ai import _usage

    def usage_of(model_name: str) -> dict[str, object]:
        response = ModelResponse(
            parts=[TextPart("hi")],
            usage=RequestUsage(input_tokens=1_000_000, output_tokens=0),
            model_name=model_name,
            provider_name="openai",
        )
        return _usage(TypeAdapter(ModelResponse).dump_python(response, mode="json"))

    priced = usage_of("gpt-4o")
    assert priced["tokens"] == 1_000_000 and priced["requests"] == 1
    assert isinstance(priced["usd"], float) and priced["usd"] > 0
    assert "usd" not in usage_of("a-model-nobody-prices")


async def test_a_budget_pauses_an_execute_run_inside_its_agent_task(
    store: Store, tmp_path: Path
) -> None:
    from typing import Any

    from holon import ExecuteContext, Workflow
    from holon.agents import PydanticAgent
    from tests.agent_support import build_agent

    log, sink = str(tmp_path / "log.jsonl"), str(tmp_path / "sink.jsonl")
    agent = build_agent(log, sink)

    async def main(ctx: ExecuteContext[Any, Any]) -> Any:
        return await ctx.Agent("researcher", "acme")

    wf = (
        Workflow("BudgetExecute")
        .Agents({"researcher": lambda: PydanticAgent(agent)})
        .Budget(requests=1)
        .Execute(main)
    )
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        record = await handle.WaitUntil(RunStatus.PAUSED, timeout=10)
        assert record.body.usage["requests"] == 1
        await handle.Resume(budget={"requests": 3})
        assert await handle.Result(timeout=10) == "acme is ready"
    assert [e["call"] for e in read_log(log)] == ["model", "lookup", "model", "record", "model"]
