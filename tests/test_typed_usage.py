"""Users' code, as they write it, type-checks: mypy --strict runs on this file (see
`[tool.mypy] files` in pyproject.toml), and each `assert_type` pins what a type checker
sees. The same code also runs, so what is typed is also what happens."""

from __future__ import annotations

from typing import Any, Literal, assert_type

import pytest
from pydantic import BaseModel

from holon import (
    END,
    START,
    Context,
    End,
    ExecuteContext,
    HumanApproval,
    Next,
    Retry,
    RunHandle,
    RunRecord,
    RunStatus,
    TaskCall,
    TaskState,
    Wait,
    WaitInfo,
    Workflow,
    WorkflowRunner,
    step,
    workflow,
)

pytestmark = pytest.mark.anyio


class Repo(BaseModel):
    repo: str


class Build(BaseModel):
    artifact: str | None = None


async def clone(ctx: Context[Repo, Build]) -> Literal["Build"]:
    assert_type(ctx.Input, Repo)
    assert_type(ctx.input, Repo)
    assert_type(ctx.State, Build)
    assert_type(ctx.state, Build)
    assert_type(ctx.RunId, str)
    assert_type(ctx.run_id, str)
    assert_type(ctx.Attempt, int)
    assert_type(ctx.idempotency_key, str)
    ctx.set_state(artifact=f"{ctx.input.repo}.tar")
    ctx.log("cloned")
    return "Build"


def build(ctx: Context[Repo, Build]) -> Literal["Gate"] | End:
    return "Gate" if ctx.State.artifact else END


def gate(ctx: Context[Repo, Build]) -> Wait:
    return Wait(HumanApproval(approvers=["ops"]), "Release")


def release(ctx: Context[Repo, Build]) -> Next:
    return Next(END, output={"by": ctx.Decision["by"]})


Deploy = (
    Workflow("typed-deploy")
    .Input(Repo)
    .State(Build)
    .Flow(
        {
            START: lambda ctx: "Clone",
            "Clone": clone,
            "Build": step(build, retry=Retry(attempts=2, initial_delay=0)),
            "Gate": gate,
            "Release": release,
        }
    )
)


async def fetch(topic: str) -> list[str]:
    return [f"{topic}-1", f"{topic}-2"]


def count(items: list[str]) -> int:
    return len(items)


async def research(ctx: ExecuteContext[Repo, Any]) -> dict[str, Any]:
    call = ctx.Task(fetch, ctx.Input.repo)
    assert_type(call, TaskCall[list[str]])
    papers = await call
    assert_type(papers, list[str])
    assert_type(await ctx.Task(count, papers), int)
    assert_type(await ctx.task(count, papers, retry=Retry(attempts=2)), int)
    assert_type(await ctx.Step("again", fetch("again")), list[str])
    assert_type(await ctx.step("sync", lambda: 3), int)
    one, two = await ctx.Parallel(ctx.Task(fetch, "a"), ctx.Task(count, ["x"]))
    assert_type(one, list[str])
    assert_type(two, int)
    many = await ctx.parallel(*[ctx.Task(count, [str(i)]) for i in range(5)])
    assert_type(many, tuple[int, ...])
    assert_type(ctx.state, TaskState)
    ctx.state.set("papers", len(papers))
    assert_type(ctx.run_id, str)
    return {"papers": papers, "count": ctx.State.get("papers")}


Research = Workflow("typed-research").Input(Repo).Execute(research)


@workflow()
async def decorated(ctx: ExecuteContext[Any, Any], topic: str, depth: int = 1) -> list[str]:
    return await ctx.Task(fetch, f"{topic}/{depth}")


assert_type(decorated, Workflow)


async def test_typed_code_runs() -> None:
    async with WorkflowRunner(Deploy, "memory://") as runner:
        assert_type(runner, WorkflowRunner)
        handle = await runner.run({"repo": "acme/app"})
        assert_type(handle, RunHandle)
        assert_type(await handle.wait_until(RunStatus.WAITING, timeout=10), RunRecord)
        info = await handle.waiting()
        assert_type(info, WaitInfo | None)
        assert_type(await handle.approve(by="ops"), RunStatus)
        result = await handle.result(timeout=10)
        assert_type(result, Any)
        assert result == {"by": ["ops"]}
        assert_type(await handle.status(), RunStatus)
    async with WorkflowRunner(Research, "memory://") as runner:
        done = await (await runner.Run({"repo": "qc"})).Result(timeout=10)
        assert done == {"papers": ["qc-1", "qc-2"], "count": 2}
    async with WorkflowRunner(decorated, "memory://") as runner:
        assert await (await runner.Run({"topic": "t"})).Result(timeout=10) == ["t/1-1", "t/1-2"]
