"""Build, test and deploy a repository, with a person approving the release.

Run it with `python examples/build_and_deploy.py`. It stores its run in the embedded
SQLite file `.holon/holon.db`: the run halts for approval (no task is left running),
`ops-lead` approves it, and it finishes. The timeline is printed at the end.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import anyio
from pydantic import BaseModel

from holon import (
    END,
    START,
    Context,
    End,
    HumanApproval,
    Next,
    Parallel,
    Wait,
    Workflow,
    WorkflowRunner,
)


class Repo(BaseModel):
    repo: str


class Build(BaseModel):
    commit: str | None = None
    artifact: str | None = None
    released: bool = False


Ctx = Context[Repo, Build]


async def clone(ctx: Ctx) -> Literal["Build"]:
    ctx.SetState(commit=f"{ctx.Input.repo}@9f2c1ab")
    return "Build"


def build(ctx: Ctx) -> Parallel:
    return Parallel(["BuildLinux", "BuildMac"], "Test")


async def build_linux(ctx: Ctx) -> dict[str, Any]:
    return {"platform": "linux", "artifact": f"{ctx.State.commit}-linux.tar"}


async def build_mac(ctx: Ctx) -> dict[str, Any]:
    return {"platform": "mac", "artifact": f"{ctx.State.commit}-mac.tar"}


async def test(ctx: Ctx) -> Next:
    artifacts = [ctx.StepResults[b]["artifact"] for b in ("BuildLinux", "BuildMac")]
    ctx.SetState(artifact=",".join(artifacts))
    return Next("Deploy", output={"passed": 42, "artifacts": artifacts})


def deploy(ctx: Ctx) -> Wait:
    return Wait(
        HumanApproval(approvers=["ops-lead"], question=f"Release {ctx.State.artifact}?"),
        "Release",
    )


async def release(ctx: Ctx) -> End:
    ctx.SetState(released=True)
    ctx.Log("released", approved_by=ctx.Decision["by"])
    return END


BuildAndDeploy = (
    Workflow("BuildAndDeploy", "Build, test, deploy")
    .Input(Repo)
    .State(Build)
    .Flow(
        {
            START: lambda ctx: "Clone",
            "Clone": clone,
            "Build": build,
            "BuildLinux": build_linux,
            "BuildMac": build_mac,
            "Test": test,
            "Deploy": deploy,
            "Release": release,
        }
    )
)


async def main() -> None:
    async with WorkflowRunner(BuildAndDeploy) as runner:
        handle = await runner.Run({"repo": "acme/app"})
        print(f"run {handle.run_id} started")
        await handle.WaitUntil("waiting")
        waiting = await handle.Waiting()
        assert waiting is not None
        print(
            f"waiting for approval: {waiting.spec['question']} (approvers: "
            f"{waiting.spec['approvers']})"
        )
        await handle.Approve(by="ops-lead", comment="ship it")
        result = await handle.Result(timeout=30)
        print(f"completed: {result}")
        print("timeline:")
        for event in await handle.Timeline():
            at = dt.datetime.fromtimestamp(event.at).strftime("%H:%M:%S.%f")[:-3]
            print(
                f"  {event.seq:>3} {at} {event.kind:<17} {event.step or '':<11} "
                f"{_short(event.data)}"
            )


def _short(data: dict[str, Any]) -> str:
    shown = {k: v for k, v in data.items() if v is not None and k != "traceback"}
    text = ", ".join(f"{k}={v}" for k, v in shown.items())
    return text if len(text) < 90 else text[:87] + "..."


if __name__ == "__main__":
    anyio.run(main)
