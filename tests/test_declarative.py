"""Declarative workflows: documents compile to the DSL's graph, run, and fail clearly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import anyio
import pytest

from holon import (
    END,
    START,
    DocumentError,
    Next,
    Parallel,
    RunStatus,
    Steward,
    Workflow,
)
from holon.definition.policies import Retry
from holon.stores.base import Store

pytestmark = pytest.mark.anyio

SEQUENTIAL = """\
name: "Deploy Application"
steps:
  - name: "Run Tests"
    agent: "test-runner"
  - name: "Build Docker Image"
    agent: "builder"
  - name: "Deploy to Production"
    agent: "deployer"
    requires: ["Run Tests", "Build Docker Image"]
"""

PARALLEL = """\
name: "Multi-Cloud Deployment"
parallel:
  - name: "Deploy to AWS"
    agent: "aws-deployer"
  - name: "Deploy to GCP"
    agent: "gcp-deployer"
  - name: "Deploy to Azure"
    agent: "azure-deployer"
"""

EVENT_DRIVEN = """\
name: "Incident Response"
trigger:
  type: "webhook"
  source: "alertmanager"
steps:
  - name: "Analyze Alert"
    agent: "analyzer"
  - name: "Take Action"
    agent: "remediator"
  - name: "Notify Team"
    agent: "notifier"
"""


class Recorder:
    """Agents that record what they saw: their step, the input, earlier results."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, list[str]]] = []

    def factory(self, agent: str) -> Any:
        def build() -> Any:
            async def run(ctx: Any) -> dict[str, Any]:
                self.calls.append((agent, ctx.StepName, sorted(ctx.StepResults)))
                return {"agent": agent, "input": ctx.Input}

            return run

        return build


def steward_with_agents(store: Store, recorder: Recorder, *names: str) -> Steward:
    steward = Steward(store)
    for name in names:
        steward.RegisterAgent(name, recorder.factory(name))
    return steward


async def test_sequential_document_runs_in_order(store: Store) -> None:
    recorder = Recorder()
    steward = steward_with_agents(store, recorder, "test-runner", "builder", "deployer")
    info = await steward.Load(SEQUENTIAL)
    assert info.source == "declarative" and info.document is not None
    async with await steward.Runner("Deploy Application") as runner:
        handle = await runner.Run({"environment": "production", "version": "v1.2.3"})
        result = await handle.Result(timeout=10)
    assert result == {
        "agent": "deployer",
        "input": {"environment": "production", "version": "v1.2.3"},
    }
    assert recorder.calls == [
        ("test-runner", "Run Tests", []),
        ("builder", "Build Docker Image", ["Run Tests"]),
        ("deployer", "Deploy to Production", ["Build Docker Image", "Run Tests"]),
    ]
    details = {s.name: s.details for s in info.graph.steps}
    assert details["Deploy to Production"] == {
        "agent": "deployer",
        "requires": ["Run Tests", "Build Docker Image"],
    }


async def test_parallel_document_runs_its_steps_at_once(store: Store) -> None:
    clouds = ["aws-deployer", "gcp-deployer", "azure-deployer"]
    arrived: list[str] = []
    all_in = anyio.Event()
    steward = Steward(store)

    def factory(agent: str) -> Any:
        async def deploy(ctx: Any) -> str:
            arrived.append(agent)
            if len(arrived) == len(clouds):
                all_in.set()
            await all_in.wait()  # only returns if the three run concurrently
            return f"{agent}: ok"

        return lambda: deploy

    for cloud in clouds:
        steward.RegisterAgent(cloud, factory(cloud))
    info = await steward.Load(PARALLEL)
    async with await steward.Runner(info.name) as runner:
        handle = await runner.Run()
        result = await handle.Result(timeout=10)
        events = await handle.Timeline()
    assert result == {
        "Deploy to AWS": "aws-deployer: ok",
        "Deploy to GCP": "gcp-deployer: ok",
        "Deploy to Azure": "azure-deployer: ok",
    }
    started = next(e for e in events if e.kind == "parallel_started")
    assert started.step == "fan-out 1" and started.data["join"] == "fan-in"


async def test_event_driven_document_keeps_its_trigger(store: Store) -> None:
    recorder = Recorder()
    steward = steward_with_agents(store, recorder, "analyzer", "remediator", "notifier")
    await steward.Load(EVENT_DRIVEN)
    described = await Steward(store).Describe("Incident Response")
    assert described["triggers"] == [{"type": "webhook", "source": "alertmanager"}]
    async with await steward.Runner("Incident Response") as runner:
        handle = await runner.Run({"alert": "disk full", "host": "db-1"})
        result = await handle.Result(timeout=10)
    assert result["agent"] == "notifier"
    assert [c[1] for c in recorder.calls] == ["Analyze Alert", "Take Action", "Notify Team"]


def hand_written_sequential() -> Workflow:
    def tests(ctx: Any) -> Literal["Build Docker Image"]:
        return "Build Docker Image"

    def build(ctx: Any) -> Literal["Deploy to Production"]:
        return "Deploy to Production"

    def deploy(ctx: Any) -> Literal[END]:  # type: ignore[valid-type]
        return END

    def start(ctx: Any) -> Literal["Run Tests"]:
        return "Run Tests"

    return Workflow("Deploy Application").Flow(
        {
            START: start,
            "Run Tests": tests,
            "Build Docker Image": build,
            "Deploy to Production": deploy,
        }
    )


def hand_written_fan_out() -> Workflow:
    def start(ctx: Any) -> Literal["fan-out 1"]:
        return "fan-out 1"

    def fan_out(ctx: Any) -> Literal["Lint", "Unit"]:
        return Parallel(["Lint", "Unit"], "Report")  # type: ignore[return-value]

    def branch(ctx: Any) -> Literal["Report"]:
        return "ok"  # type: ignore[return-value]

    def report(ctx: Any) -> Literal[END]:  # type: ignore[valid-type]
        return Next(END)  # type: ignore[return-value]

    return Workflow("checks").Flow(
        {START: start, "fan-out 1": fan_out, "Lint": branch, "Unit": branch, "Report": report}
    )


FAN_OUT = """\
name: checks
steps:
  - name: Lint
    task: lint
  - name: Unit
    task: unit
    requires: []
  - name: Report
    task: report
    requires: [Lint, Unit]
"""


def graph(workflow: Workflow) -> dict[str, list[str]]:
    return {name: sorted(spec.edges) for name, spec in workflow.steps.items()}


async def test_documents_compile_to_the_graph_written_with_the_dsl(store: Store) -> None:
    steward = steward_with_agents(store, Recorder(), "test-runner", "builder", "deployer")
    for task in ("lint", "unit", "report"):
        steward.RegisterTask(task, lambda ctx, task=task: task)
    await steward.Load(SEQUENTIAL)
    await steward.Load(FAN_OUT)
    for written in (hand_written_sequential(), hand_written_fan_out()):
        ours = (await steward.Runner(written.name)).workflow
        assert graph(ours) == graph(written)
        assert ours.Mermaid() == written.Mermaid()


async def test_requires_fans_out_and_joins(store: Store) -> None:
    steward = Steward(store)
    seen: dict[str, Any] = {}

    def report(ctx: Any) -> str:
        seen.update(ctx.StepResults)
        return "reported"

    steward.RegisterTask("lint", lambda ctx: "lint ok")
    steward.RegisterTask("unit", lambda ctx: "12 passed")
    steward.RegisterTask("report", report)
    await steward.Load(FAN_OUT)
    async with await steward.Runner("checks") as runner:
        handle = await runner.Run()
        assert await handle.Result(timeout=10) == "reported"
    assert seen == {"Lint": "lint ok", "Unit": "12 passed"}


async def test_approval_gate_waits_before_its_step(store: Store) -> None:
    steward = Steward(store)
    ran: list[str] = []
    steward.RegisterTask("build", lambda ctx: ran.append("build") or "image")
    steward.RegisterTask("deploy", lambda ctx: ran.append("deploy") or "deployed")
    info = await steward.Load(
        {
            "name": "gated",
            "steps": [
                {"name": "Build", "task": "build"},
                {
                    "name": "Deploy",
                    "task": "deploy",
                    "approval": {"approvers": ["ops-lead"], "question": "Ship it?"},
                },
            ],
        }
    )
    assert [s.name for s in info.graph.steps] == ["__start__", "Build", "approve: Deploy", "Deploy"]
    async with await steward.Runner("gated") as runner:
        handle = await runner.Run()
        await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        assert ran == ["build"]
        waiting = await handle.Waiting()
        assert waiting is not None and waiting.step == "approve: Deploy"
        await handle.Approve(by="ops-lead")
        assert await handle.Result(timeout=10) == "deployed"
    assert ran == ["build", "deploy"]


async def test_retry_and_timeout_are_step_policies(store: Store) -> None:
    steward = Steward(store)
    attempts: list[int] = []

    def flaky(ctx: Any) -> str:
        attempts.append(ctx.Attempt)
        if len(attempts) < 3:
            raise ConnectionError("registry unavailable")
        return "pushed"

    steward.RegisterTask("push", flaky)
    info = await steward.Load(
        """\
name: publish
steps:
  - name: Push
    task: push
    retry: {attempts: 3, initial_delay: 0s, jitter: false}
    timeout: 2m
"""
    )
    spec = (await steward.Runner("publish")).workflow.steps["Push"]
    assert spec.retry == Retry(attempts=3, initial_delay=0.0, jitter=False)
    assert spec.timeout == 120.0
    assert {s.name: s.details for s in info.graph.steps}["Push"]["timeout"] == 120.0
    async with await steward.Runner("publish") as runner:
        handle = await runner.Run()
        assert await handle.Result(timeout=10) == "pushed"
    assert attempts == [1, 2, 3]


async def test_another_process_with_the_agents_recompiles_from_the_catalogue(
    store: Store,
) -> None:
    first = steward_with_agents(store, Recorder(), "analyzer", "remediator", "notifier")
    info = await first.Load(EVENT_DRIVEN)
    recorder = Recorder()
    second = steward_with_agents(store, recorder, "analyzer", "remediator", "notifier")
    runner = await second.Runner("Incident Response")
    assert runner.execute and runner.workflow.version == info.version
    async with runner:
        handle = await runner.Run({"alert": "cpu"})
        await handle.Result(timeout=10)
    assert len(recorder.calls) == 3
    without_agents = await Steward(store).Runner("Incident Response")
    assert not without_agents.execute


async def test_files_and_json_documents_load(store: Store, tmp_path: Path) -> None:
    steward = Steward(store)
    steward.RegisterTask("hello", lambda ctx: "hi")
    path = tmp_path / "hello.yaml"
    path.write_text("name: hello\nsteps:\n  - {name: Greet, task: hello}\n")
    assert (await steward.Load(path)).name == "hello"
    document = {"name": "hello-json", "version": 2, "steps": [{"name": "Greet", "task": "hello"}]}
    info = await steward.Load(json.dumps(document, indent=2))
    assert info.version == "2"
    schedule = await steward.Load(
        {**document, "name": "nightly", "trigger": {"type": "schedule", "cron": "0 3 * * 1-5"}}
    )
    assert schedule.triggers == [{"type": "schedule", "cron": "0 3 * * 1-5"}]
    every = await steward.Load(
        {**document, "name": "often", "trigger": [{"type": "schedule", "every": "15m"}]}
    )
    assert every.triggers == [{"type": "schedule", "every": 900.0}]


# -- documents that do not compile ----------------------------------------------------

BAD_DOCUMENTS = [
    pytest.param(
        SEQUENTIAL.replace('agent: "deployer"', 'agent: "deployr"'),
        8,
        "steps[2].agent",
        "unknown agent 'deployr'; registered agents: builder, deployer, test-runner",
        id="unknown-agent",
    ),
    pytest.param(
        """\
name: cyclic
steps:
  - name: A
    task: t
    requires: [C]
  - name: B
    task: t
  - name: C
    task: t
""",
        5,
        "steps[0].requires[0]",
        "requires forms a cycle: A -> C -> B -> A",
        id="cycle",
    ),
    pytest.param(
        """\
name: self
steps:
  - name: A
    task: t
    requires:
      - A
""",
        6,
        "steps[0].requires[0]",
        "cycle: A -> A",
        id="self-cycle",
    ),
    pytest.param(
        SEQUENTIAL.replace('    agent: "builder"', '    agnet: "builder"'),
        6,
        "steps[1].agnet",
        "unknown field 'agnet'; fields: agent, approval,",
        id="unknown-field",
    ),
    pytest.param(
        "name: x\nsteps:\n  - name: A\n    task: t\n    retry: {attempts: 0}\n",
        5,
        "steps[0].retry.attempts",
        "attempts must be a whole number >= 1, got 0",
        id="bad-retry",
    ),
    pytest.param(
        "name: x\nsteps:\n  - name: A\n    task: t\n    timeout: soon\n",
        5,
        "steps[0].timeout",
        "timeout is seconds or a duration like 30s",
        id="bad-timeout",
    ),
    pytest.param(
        "name: x\nsteps:\n  - name: A\n    task: t\n    requires: [Z]\n",
        5,
        "steps[0].requires[0]",
        "step 'A' requires 'Z', which is not a step",
        id="unknown-requirement",
    ),
    pytest.param(
        "name: x\nsteps:\n  - name: A\n    task: t\n  - name: A\n    task: t\n",
        5,
        "steps[1].name",
        "step 'A' is named twice (first at steps[0])",
        id="duplicate-step",
    ),
    pytest.param(
        "name: x\nsteps:\n  - name: A\n    task: t\n    agent: a\n",
        5,
        "steps[0].agent",
        "names one agent: or one task:, not task and agent",
        id="agent-and-task",
    ),
    pytest.param(
        "name: x\ntrigger: {type: schedule, cron: '61 * * * *'}\nsteps:\n  - {name: A, task: t}\n",
        2,
        "trigger.cron",
        "cron minute field '61' is not valid",
        id="bad-cron",
    ),
    pytest.param(
        "name: x\ntrigger:\n  type: email\nsteps:\n  - {name: A, task: t}\n",
        3,
        "trigger.type",
        "unknown trigger type 'email'",
        id="bad-trigger",
    ),
    pytest.param(
        "name: x\nsteps:\n  - name: A\n    task: t\n    approval: {approvers: []}\n",
        5,
        "steps[0].approval.approvers",
        "needs at least one approver",
        id="empty-approvers",
    ),
    pytest.param(
        '{\n  "name": "x",\n  "steps": [\n    {"name": "A", "task": "nope"}\n  ]\n}\n',
        4,
        "steps[0].task",
        "unknown task 'nope'; registered tasks: t",
        id="json",
    ),
    pytest.param(
        "name: x\nsteps:\n  - name: A\n    task: [t\n",
        5,
        "(document)",
        "not valid YAML or JSON",
        id="not-yaml",
    ),
    pytest.param(
        "steps:\n  - {name: A, task: t}\n",
        1,
        "(document)",
        "a workflow needs a name",
        id="no-name",
    ),
]


@pytest.mark.parametrize(("document", "line", "field", "message"), BAD_DOCUMENTS)
async def test_bad_documents_name_the_line_and_field(
    document: str, line: int, field: str, message: str
) -> None:
    steward = Steward("memory://")
    steward.RegisterTask("t", lambda ctx: None)
    for agent in ("test-runner", "builder", "deployer"):
        steward.RegisterAgent(agent, lambda: lambda ctx: None)
    with pytest.raises(DocumentError) as caught:
        await steward.Load(document)
    error = caught.value
    assert (error.line, error.field) == (line, field), str(error)
    assert message in str(error)
    assert f"line {line}" in str(error) and f"field {field}" in str(error)
    assert await steward.store.definitions() == [], "nothing was registered"


async def test_a_dict_document_names_the_field_without_a_line() -> None:
    steward = Steward("memory://")
    with pytest.raises(DocumentError) as caught:
        await steward.Load({"name": "x", "steps": [{"name": "A", "task": "t"}]})
    assert caught.value.line is None and caught.value.field == "steps[0].task"
    assert "field steps[0].task: step 'A': unknown task 't'" in str(caught.value)


async def test_parallel_steps_come_first_and_steps_follow_them(store: Store) -> None:
    steward = Steward(store)
    order: list[str] = []
    for task in ("fetch-a", "fetch-b", "merge", "store"):
        steward.RegisterTask(task, lambda ctx, task=task: order.append(task) or task)
    info = await steward.Load(
        """\
name: pipeline
owner: data-team
tags: [etl, nightly]
parallel:
  - {name: A, task: fetch-a}
  - {name: B, task: fetch-b}
steps:
  - {name: Merge, task: merge}
  - {name: Store, task: store}
"""
    )
    assert (info.owner, info.tags) == ("data-team", ["etl", "nightly"])
    edges = {s.name: s.edges for s in info.graph.steps}
    assert edges == {
        "__start__": ["fan-out 1"],
        "fan-out 1": ["A", "B"],
        "A": ["Merge"],
        "B": ["Merge"],
        "Merge": ["Store"],
        "Store": ["__end__"],
    }
    async with await steward.Runner("pipeline") as runner:
        assert await (await runner.Run()).Result(timeout=10) == "store"
    assert sorted(order[:2]) == ["fetch-a", "fetch-b"] and order[2:] == ["merge", "store"]
    with pytest.raises(DocumentError, match="JSON values only"):
        await steward.Load({"name": "x", "steps": [{"name": "A", "task": object()}]})
