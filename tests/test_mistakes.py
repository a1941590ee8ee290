"""Common mistakes fail clearly, at build time when they can be known then, and never
hang: each test here is a mistake a new user made, and what they now get."""

from __future__ import annotations

import datetime
import gc
import warnings
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from holon import (
    END,
    START,
    Context,
    Event,
    ExecuteContext,
    HolonError,
    HumanApproval,
    HumanInput,
    InvalidAnswer,
    Next,
    ResultTimeout,
    RunConflict,
    RunFailed,
    RunStatus,
    StateReadOnly,
    StepOutputError,
    StoreError,
    Wait,
    Workflow,
    WorkflowDefinitionError,
    WorkflowRunner,
)
from holon.stores import SQLiteStore, open_store
from holon.stores.base import Store

pytestmark = pytest.mark.anyio


class Order(BaseModel):
    order: str


class Tally(BaseModel):
    count: int = 0
    tags: list[str] = []


# -- a wait's unknown target --------------------------------------------------------


@pytest.mark.parametrize("field", ["next", "on_reject", "on_timeout"])
async def test_a_typo_in_a_waits_target_fails_the_run(store: Store, field: str) -> None:
    targets = {"next": "Done", "on_reject": None, "on_timeout": None, field: "Dnoe"}
    condition = HumanApproval(approvers=["ops"])
    wf = Workflow("typo").Flow(
        {
            START: lambda ctx: "Ask",
            "Ask": lambda ctx: Wait(
                condition,
                targets["next"] or "Done",
                on_reject=targets["on_reject"],
                on_timeout=targets["on_timeout"],
            ),
            "Done": lambda ctx: END,
        }
    )
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        with pytest.raises(RunFailed) as failed:
            await handle.Result(timeout=10)
    assert failed.value.error is not None and failed.value.error["type"] == "UnknownStepError"
    assert "'Dnoe'" in str(failed.value)


# -- run ids ------------------------------------------------------------------------


async def test_a_run_id_reused_with_another_input_or_workflow_is_a_conflict(
    store: Store,
) -> None:
    wf = Workflow("orders").Input(Order).Flow({START: lambda ctx: END})
    other = Workflow("refunds").Input(Order).Flow({START: lambda ctx: END})
    async with WorkflowRunner(wf, store) as runner:
        first = await runner.Run({"order": "o-1"}, run_id="order-1")
        again = await runner.Run({"order": "o-1"}, run_id="order-1")
        assert again.run_id == first.run_id
        with pytest.raises(RunConflict, match="exists with another input") as conflict:
            await runner.Run({"order": "o-2"}, run_id="order-1")
        assert conflict.value.run_id == "order-1"
        await first.Result(timeout=10)
    async with WorkflowRunner(other, store) as runner:
        with pytest.raises(RunConflict, match="taken by a run of workflow 'orders'") as taken:
            await runner.Run({"order": "o-1"}, run_id="order-1")
        assert taken.value.existing_workflow == "orders"


# -- closed runners ------------------------------------------------------------------


@pytest.mark.parametrize("url", ["memory://", "sqlite"])
async def test_a_handle_of_a_closed_runner_says_so(url: str, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/x.db" if url == "sqlite" else url
    wf = Workflow("wf").Flow(
        {START: lambda ctx: Wait(HumanApproval(approvers=["ops"]), "Done"), "Done": lambda c: END}
    )
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        await handle.WaitUntil(RunStatus.WAITING, timeout=10)
    with pytest.raises(HolonError, match="the runner that made it was closed"):
        await handle.Result(timeout=10)
    with pytest.raises(HolonError, match="the runner that made it was closed"):
        await handle.Approve(by="ops")
    with pytest.raises(HolonError, match="was closed"):
        await runner.Run()


# -- state ----------------------------------------------------------------------------


async def test_changing_ctx_state_in_place_fails_pointing_at_set_state(store: Store) -> None:
    def assign(ctx: Context[Any, Tally]) -> str:
        ctx.State.count = 5
        return END

    def untyped(ctx: Context[Any, dict[str, Any]]) -> str:
        ctx.State["count"] = 5
        return END

    typed = Workflow("typed").State(Tally).Flow({START: assign})
    loose = Workflow("loose").Flow({START: untyped})
    for wf in (typed, loose):
        async with WorkflowRunner(wf, store) as runner:
            handle = await runner.Run()
            with pytest.raises(RunFailed, match="StateReadOnly: .*Use ctx.SetState") as failed:
                await handle.Result(timeout=10)
            assert failed.value.step == START.value
    assert issubclass(StateReadOnly, AttributeError)


async def test_state_set_by_set_state_is_still_read_back(store: Store) -> None:
    def count(ctx: Context[Any, Tally]) -> str:
        ctx.SetState(count=ctx.State.count + 1, tags=[*ctx.State.tags, "x"])
        assert isinstance(ctx.State, Tally)
        return END

    wf = Workflow("count").State(Tally).Flow({START: count})
    async with WorkflowRunner(wf, store) as runner:
        assert await (await runner.Run()).Result(timeout=10) == {"count": 1, "tags": ["x"]}


async def test_an_unawaited_task_warns() -> None:
    async def fetch() -> str:
        return "data"

    async def forgetful(ctx: ExecuteContext[Any, Any]) -> str:
        ctx.Task(fetch)  # the mistake: no await
        return "done"

    wf = Workflow("forgetful").Execute(forgetful)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with WorkflowRunner(wf, "memory://") as runner:
            assert await (await runner.Run()).Result(timeout=10) == "done"
        gc.collect()
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert any("ctx.Task(fetch) at position 0" in m and "never awaited" in m for m in messages)


@pytest.mark.parametrize(
    ("value", "where", "kind"),
    [
        ({"seen": {"a", "b"}}, "at seen", "set"),
        ({"batch": [{"at": datetime.datetime(2026, 1, 1)}]}, "at batch[0].at", "datetime"),
        ({"by_id": {1: "x"}}, "at by_id (a key)", "int"),
        ({"raw": b"\x00"}, "at raw", "bytes"),
    ],
)
async def test_a_value_json_cannot_hold_is_refused_with_its_path(
    store: Store, value: Any, where: str, kind: str
) -> None:
    wf = Workflow("values").Flow({START: lambda ctx: Next(END, output=value)})
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        with pytest.raises(RunFailed, match="StepOutputError") as failed:
            await handle.Result(timeout=10)
    assert f"holds {where} a value of type {kind}" in str(failed.value)


async def test_set_state_without_a_model_refuses_a_set_with_its_path(store: Store) -> None:
    def keep(ctx: Context[Any, dict[str, Any]]) -> str:
        ctx.SetState(seen={"a"})
        return END

    async with WorkflowRunner(Workflow("sets").Flow({START: keep}), store) as runner:
        with pytest.raises(RunFailed, match="state field 'seen'.*a value of type set"):
            await (await runner.Run()).Result(timeout=10)


def test_a_model_field_keeps_its_type_and_plain_data_passes_unchanged() -> None:
    from holon._json import to_json_value

    class Stamp(BaseModel):
        at: datetime.datetime

    stamp = Stamp(at=datetime.datetime(2026, 1, 1))
    assert to_json_value({"s": stamp, "t": (1, 2)}, what="x", run_id="r", step=None) == {
        "s": {"at": "2026-01-01T00:00:00"},
        "t": [1, 2],
    }
    with pytest.raises(StepOutputError, match="a set would come back as a list"):
        to_json_value({1, 2}, what="x", run_id="r", step=None)


# -- decisions -------------------------------------------------------------------------


async def test_ctx_decision_has_one_shape_after_approval_and_rejection(store: Store) -> None:
    seen: list[dict[str, Any]] = []

    def after(ctx: Context[Any, Any]) -> str:
        seen.append(ctx.Decision)
        return END

    wf = Workflow("gate").Flow(
        {
            START: lambda ctx: Wait(HumanApproval(approvers=["a"]), "After", on_reject="After"),
            "After": after,
        }
    )
    async with WorkflowRunner(wf, store) as runner:
        for verdict in ("approve", "reject"):
            handle = await runner.Run()
            await handle.WaitUntil(RunStatus.WAITING, timeout=10)
            await (handle.Approve if verdict == "approve" else handle.Reject)(by="a")
            await handle.Result(timeout=10)
    assert [(d["approved"], d["by"], d["timed_out"]) for d in seen] == [
        (True, ["a"], False),
        (False, ["a"], False),
    ]
    assert seen[0].keys() == seen[1].keys()


async def test_wait_for_an_event_returns_its_payload(store: Store) -> None:
    async def incident(ctx: ExecuteContext[Any, Any]) -> Any:
        return await ctx.WaitFor(Event("resolved"))

    async with WorkflowRunner(Workflow("incident").Execute(incident), store) as runner:
        handle = await runner.Run()
        await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        await handle.Send("resolved", {"by": "sre"})
        assert await handle.Result(timeout=10) == {"by": "sre"}


async def test_options_as_id_and_label_are_answered_by_id(store: Store) -> None:
    seen: list[Any] = []

    def use(ctx: Context[Any, Any]) -> str:
        seen.append(ctx.Decision)
        return END

    regions = [{"id": "eu", "label": "Europe"}, {"id": "us", "label": "United States"}]
    verdicts = [{"id": "ship", "label": "Ship it"}, {"id": "hold", "label": "Hold"}]
    for kind, options, answer, wrong in (
        ("choice", regions, "eu", "Europe"),
        ("approval", verdicts, "hold", True),
    ):
        wf = Workflow(f"ask-{kind}").Flow(
            {
                START: lambda ctx, k=kind, o=options: Wait(
                    HumanInput("Which?", kind=k, options=o), "Use"
                ),
                "Use": use,
            }
        )
        async with WorkflowRunner(wf, store) as runner:
            handle = await runner.Run()
            await handle.WaitUntil(RunStatus.WAITING, timeout=10)
            with pytest.raises(InvalidAnswer, match="is not one of the options"):
                await handle.Answer(wrong, by="pat")
            await handle.Answer(answer, by="pat")
            await handle.Result(timeout=10)
    assert seen == ["eu", "hold"]
    with pytest.raises(ValueError, match="same id twice"):
        HumanInput("Which?", kind="choice", options=[{"id": "a"}, {"id": "a"}])
    with pytest.raises(ValueError, match="needs an 'id'"):
        HumanInput("Which?", kind="choice", options=[{"label": "A"}])


# -- stores -----------------------------------------------------------------------------


def test_sqlite_urls_read_as_documented(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    relative = open_store("sqlite:///data/x.db")
    absolute = open_store(f"sqlite:///{tmp_path}/abs.db")
    home = open_store("sqlite:///~/home.db")
    assert isinstance(relative, SQLiteStore) and relative.path == "data/x.db"
    assert isinstance(absolute, SQLiteStore) and absolute.path == f"{tmp_path}/abs.db"
    assert isinstance(home, SQLiteStore) and home.path == f"{tmp_path}/home.db"
    with pytest.raises(StoreError, match="reads as a host name"):
        open_store("sqlite://data/x.db")


async def test_a_store_folder_that_cannot_be_made_is_a_clear_store_error(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "not-a-folder"  # a file where the folder would go: even root fails
    blocker.write_text("")
    store = open_store(f"sqlite:///{blocker}/.holon/holon.db")
    with pytest.raises(StoreError, match="cannot create the folder .*HOLON_STORE"):
        await store.open()


async def test_result_timeout_says_the_run_still_waits(store: Store) -> None:
    wf = Workflow("slow").Flow(
        {START: lambda ctx: Wait(HumanApproval(approvers=["ops"]), "Done"), "Done": lambda c: END}
    )
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        await handle.WaitUntil(RunStatus.WAITING, timeout=10)
        with pytest.raises(ResultTimeout, match="is still waiting after 0.05 s") as late:
            await handle.Result(timeout=0.05)
        assert isinstance(late.value, TimeoutError) and late.value.status == "waiting"


# -- step functions ---------------------------------------------------------------------


async def test_steps_without_ctx_are_accepted(store: Store) -> None:
    async def finish() -> str:
        return END

    wf = Workflow("no-ctx").Flow({START: lambda: "Finish", "Finish": finish})
    async with WorkflowRunner(wf, store) as runner:
        assert await (await runner.Run()).Result(timeout=10) == {}


def test_a_step_needing_more_than_ctx_is_refused_when_built() -> None:
    def two(ctx: Any, other: Any) -> str:
        return END

    with pytest.raises(WorkflowDefinitionError, match=r"step 'Two'.*needs \['ctx', 'other'\]"):
        Workflow("two").Flow({START: lambda ctx: "Two", "Two": two})
