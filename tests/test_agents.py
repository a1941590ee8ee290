"""Agent handles: opened per step, used, closed by the step or by holon however the
step ends (completed, failed, timed out, stopped), with a note in the timeline; and
`ctx.Agent(name, input)` in `.Execute()` workflows, found in `.Agents` or the Steward."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from holon import (
    END,
    START,
    Agent,
    AgentHandle,
    AgentNotFound,
    ExecuteContext,
    Next,
    RunFailed,
    RunStatus,
    Steward,
    Workflow,
    WorkflowRunner,
    step,
)
from holon.stores import MemoryStore
from holon.stores.base import Store

pytestmark = pytest.mark.anyio


class Counted:
    """An agent that counts what happens to it (satisfies `holon.Agent`)."""

    def __init__(self, tally: dict[str, int], inside: anyio.Event | None = None) -> None:
        self.tally = tally
        self.inside = inside
        tally["made"] = tally.get("made", 0) + 1

    async def Run(self, input: Any, /) -> Any:
        self.tally["runs"] = self.tally.get("runs", 0) + 1
        if self.inside is not None:
            self.inside.set()
            await anyio.sleep_forever()  # sleep-ok: parked until cancelled
        return {"echo": input}

    async def Close(self) -> None:
        self.tally["closed"] = self.tally.get("closed", 0) + 1


def counted(tally: dict[str, int], inside: anyio.Event | None = None) -> Any:
    return lambda: Counted(tally, inside)


def test_counted_satisfies_the_protocol() -> None:
    assert isinstance(Counted({}), Agent)


async def test_handles_open_per_step_and_close_explicitly(store: Store) -> None:
    tally: dict[str, int] = {}
    seen: list[Any] = []

    async def research(ctx: Any) -> Next:
        agent = await ctx.Agents.researcher
        assert isinstance(agent, AgentHandle)
        first = await agent.Run("a")
        await agent.Close()
        async with await ctx.Agents["researcher"] as again:
            second = await again.Run("b")
        seen.extend([first, second])
        return Next(END, output=[first, second])

    wf = (
        Workflow("agents-explicit")
        .Agents({"researcher": counted(tally)})
        .Flow({START: lambda ctx: "Research", "Research": research})
    )
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        assert await handle.Result(timeout=10) == [{"echo": "a"}, {"echo": "b"}]
        kinds = [e.kind for e in await handle.Timeline()]
    assert tally == {"made": 2, "runs": 2, "closed": 2}
    assert "agent_left_open" not in kinds  # the step closed both itself


async def _left_open(store: Store, fn: Any, tally: dict[str, int], **policy: Any) -> Any:
    wf = (
        Workflow("agents-left-open")
        .Agents({"researcher": counted(tally)})
        .Flow({START: lambda ctx: "Research", "Research": step(fn, **policy) if policy else fn})
    )
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        record = await handle.WaitUntil(timeout=10)
        return record, await handle.Timeline()


async def test_left_open_after_success_is_closed_and_noted(store: Store) -> None:
    tally: dict[str, int] = {}

    async def research(ctx: Any) -> str:
        agent = await ctx.Agents.researcher
        await agent.Run("x")
        return END

    record, timeline = await _left_open(store, research, tally)
    assert record.status == RunStatus.COMPLETED
    assert tally["closed"] == 1
    notes = [e for e in timeline if e.kind == "agent_left_open"]
    assert [(e.step, e.data) for e in notes] == [
        ("Research", {"agents": ["researcher"], "step_ended": "completed"})
    ]


async def test_left_open_after_failure_is_closed(store: Store) -> None:
    tally: dict[str, int] = {}

    async def research(ctx: Any) -> str:
        await ctx.Agents.researcher
        await ctx.Agents.researcher
        raise RuntimeError("the step broke")

    record, timeline = await _left_open(store, research, tally)
    assert record.status == RunStatus.FAILED
    assert tally == {"made": 2, "closed": 2}
    notes = [e.data for e in timeline if e.kind == "agent_left_open"]
    assert notes == [{"agents": ["researcher", "researcher"], "step_ended": "failed"}]


async def test_left_open_after_timeout_is_closed(store: Store) -> None:
    tally: dict[str, int] = {}

    async def research(ctx: Any) -> str:
        agent = await ctx.Agents.researcher
        agent.agent.inside = anyio.Event()
        await agent.Run("x")  # parks: the step's timeout cancels it
        return END

    record, timeline = await _left_open(store, research, tally, timeout=0.05)
    assert record.status == RunStatus.FAILED
    assert record.body.error is not None and record.body.error.type == "StepTimeout"
    assert tally["closed"] == 1
    notes = [e.data for e in timeline if e.kind == "agent_left_open"]
    assert notes == [{"agents": ["researcher"], "step_ended": "cancelled"}]


async def test_left_open_after_stop_is_closed(store: Store) -> None:
    tally: dict[str, int] = {}
    inside = anyio.Event()

    async def research(ctx: Any) -> str:
        agent = await ctx.Agents.researcher
        await agent.Run("x")
        return END

    wf = (
        Workflow("agents-stop")
        .Agents({"researcher": counted(tally, inside)})
        .Flow({START: lambda ctx: "Research", "Research": research})
    )
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        with anyio.fail_after(10):
            await inside.wait()
        assert await handle.Stop(timeout=10) == RunStatus.STOPPED
        timeline = await handle.Timeline()
    assert tally == {"made": 1, "runs": 1, "closed": 1}
    notes = [e.data for e in timeline if e.kind == "agent_left_open"]
    assert notes == [{"agents": ["researcher"], "step_ended": "cancelled"}]


async def test_unknown_agent_fails_the_step_naming_it() -> None:
    async def research(ctx: Any) -> str:
        await ctx.Agents.writer
        return END

    wf = (
        Workflow("agents-unknown")
        .Agents({"researcher": counted({})})
        .Flow({START: lambda ctx: "Research", "Research": research})
    )
    async with WorkflowRunner(wf, MemoryStore()) as runner:
        handle = await runner.Run()
        with pytest.raises(RunFailed, match="'writer'.*agents: \\['researcher'\\]"):
            await handle.Result(timeout=10)
        record = await handle.Record()
    assert record.body.error is not None and record.body.error.type == AgentNotFound.__name__


def test_agents_must_be_factories() -> None:
    with pytest.raises(Exception, match="'researcher' must be a factory"):
        Workflow("agents-bad").Agents({"researcher": object()})


async def test_execute_agent_is_one_checkpointed_step(store: Store) -> None:
    tally: dict[str, int] = {}

    async def main(ctx: ExecuteContext[Any, Any]) -> Any:
        found = await ctx.Agent("researcher", {"company": "acme"})
        return {"found": found}

    wf = Workflow("agents-execute").Agents({"researcher": counted(tally)}).Execute(main)
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        assert await handle.Result(timeout=10) == {"found": {"echo": {"company": "acme"}}}
        record = await handle.Record()
    assert record.results["agent:researcher"]["value"] == {"echo": {"company": "acme"}}
    assert tally == {"made": 1, "runs": 1, "closed": 1}


async def test_execute_agent_found_in_the_steward(tmp_path: Any) -> None:
    tally: dict[str, int] = {}

    async def main(ctx: ExecuteContext[Any, Any]) -> Any:
        return await ctx.Agent("writer", "hello")

    wf = Workflow("agents-steward").Execute(main)
    async with Steward(f"sqlite:///{tmp_path}/holon.db") as steward:
        steward.RegisterAgent("writer", counted(tally))
        await steward.Register(wf)
        async with await steward.Runner("agents-steward") as runner:
            handle = await runner.Run()
            assert await handle.Result(timeout=10) == {"echo": "hello"}
    assert tally == {"made": 1, "runs": 1, "closed": 1}


async def test_agents_are_discoverable_from_other_processes(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path}/holon.db"

    async def main(ctx: ExecuteContext[Any, Any]) -> Any:
        return await ctx.Agent("writer", "hello")

    wf = Workflow("agents-listed").Agents({"researcher": counted({})}).Execute(main)
    async with Steward(url) as steward:
        steward.RegisterAgent("writer", counted({}))
        await steward.Register(wf)
        # Another process sees the agents through the store's list of executors.
        runner = await steward.Runner("agents-listed", owner="exec-1")
        async with runner, Steward(url) as elsewhere:
            assert await elsewhere.ListAgents() == {
                "researcher": ["exec-1"],
                "writer": ["exec-1"],
            }


async def test_left_open_after_lease_loss_is_closed(store: Store) -> None:
    """Another executor took the run over (this one was presumed dead): the step is
    cancelled, and its handles are closed all the same."""
    tally: dict[str, int] = {}
    inside = anyio.Event()
    closed = anyio.Event()

    class Watched(Counted):
        async def Close(self) -> None:
            await super().Close()
            closed.set()

    async def research(ctx: Any) -> str:
        agent = await ctx.Agents.researcher
        await agent.Run("x")
        return END

    wf = (
        Workflow("agents-lease-lost")
        .Agents({"researcher": lambda: Watched(tally, inside)})
        .Flow({START: lambda ctx: "Research", "Research": research})
    )
    async with WorkflowRunner(wf, store, lease_ttl=0.3, owner="w1") as runner:
        handle = await runner.Run()
        with anyio.fail_after(10):
            await inside.wait()
        far = runner.clock.now() + 3600
        taken = await store.acquire_lease(handle.run_id, "w2", 30, far)
        assert taken is not None
        with anyio.fail_after(10):
            await closed.wait()  # w1's next heartbeat finds the lease gone
        record = await store.load_run(handle.run_id)
    assert tally == {"made": 1, "runs": 1, "closed": 1}
    assert record is not None and record.lease is not None and record.lease.owner == "w2"
