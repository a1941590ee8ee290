"""Step policies: retries with durable backoff, timeouts, non-retryable errors, sagas."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest

from holon import (
    END,
    START,
    Context,
    ManualClock,
    Next,
    RunFailed,
    RunStatus,
    Workflow,
    WorkflowRunner,
)
from holon.definition.policies import NonRetryable, Retry, StepTimeout, step
from holon.stores.base import RunRecord, Store

pytestmark = pytest.mark.anyio

NO_WAIT = Retry(attempts=3, initial_delay=0, jitter=False)


async def until(store: Store, run_id: str, predicate: Callable[[RunRecord], bool]) -> RunRecord:
    """The run's record once `predicate` holds, waiting on the store's change signal."""
    with anyio.fail_after(10):
        while True:
            change = store.signals.event(run_id)
            record = await store.load_run(run_id)
            assert record is not None
            if predicate(record):
                return record
            await store.signals.wait(change, 1)


def kinds(events: list[Any]) -> list[str]:
    return [e.kind for e in events]


async def test_a_step_that_fails_twice_then_succeeds(store: Store) -> None:
    attempts: list[tuple[int, str]] = []

    def flaky(ctx: Context[Any, Any]) -> Next:
        attempts.append((ctx.Attempt, ctx.IdempotencyKey))
        if ctx.Attempt < 3:
            raise ConnectionError(f"refused #{ctx.Attempt}")
        return Next(END, output="deployed")

    wf = Workflow("wf").Flow({START: lambda ctx: "Deploy", "Deploy": step(flaky, retry=NO_WAIT)})
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        assert await handle.Result(timeout=10) == "deployed"
        events = await handle.Timeline()
    assert [a for a, _ in attempts] == [1, 2, 3]
    assert len({key for _, key in attempts}) == 1, "retries keep the idempotency key"
    failed = [e for e in events if e.kind == "attempt_failed"]
    assert [(e.data["attempt"], e.data["error"], e.data["message"]) for e in failed] == [
        (1, "ConnectionError", "refused #1"),
        (2, "ConnectionError", "refused #2"),
    ]
    completed = next(e for e in events if e.kind == "step_completed" and e.step == "Deploy")
    assert completed.data["attempt"] == 3


async def test_retries_run_out(store: Store) -> None:
    def broken(ctx: Context[Any, Any]) -> str:
        raise ConnectionError("still down")

    wf = Workflow("wf").Defaults(retry=Retry(attempts=2, initial_delay=0)).Flow({START: broken})
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        with pytest.raises(RunFailed, match="ConnectionError: still down"):
            await handle.Result(timeout=10)
        assert kinds(await handle.Timeline()).count("attempt_failed") == 1


async def test_non_retryable_errors_fail_at_once(store: Store) -> None:
    calls: list[str] = []

    def declined(ctx: Context[Any, Any]) -> str:
        calls.append("declined")
        raise NonRetryable("card declined")

    def wrong_type(ctx: Context[Any, Any]) -> str:
        calls.append("wrong_type")
        raise KeyError("missing")

    retry = Retry(attempts=5, initial_delay=0, on=(ConnectionError,))
    wf = Workflow("wf").Flow({START: step(declined, retry=retry)})
    wf2 = Workflow("wf2").Flow({START: step(wrong_type, retry=retry)})
    async with WorkflowRunner(wf, store) as runner, WorkflowRunner(wf2, store) as runner2:
        with pytest.raises(RunFailed, match="NonRetryable: card declined"):
            await (await runner.Run()).Result(timeout=10)
        with pytest.raises(RunFailed, match="KeyError"):
            await (await runner2.Run()).Result(timeout=10)
    assert calls == ["declined", "wrong_type"]


async def test_a_timeout_cancels_the_step_and_counts_as_an_attempt(store: Store) -> None:
    cancelled = 0

    async def hangs(ctx: Context[Any, Any]) -> str:
        nonlocal cancelled
        try:
            await anyio.sleep_forever()
        finally:
            cancelled += 1
        return END

    wf = Workflow("wf").Flow(
        {START: step(hangs, timeout=0.05, retry=Retry(attempts=2, initial_delay=0))}
    )
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        with pytest.raises(RunFailed, match="StepTimeout: .*longer than its timeout of 0.05 s"):
            await handle.Result(timeout=10)
        events = await handle.Timeline()
    assert cancelled == 2
    assert [e.data["error"] for e in events if e.kind == "attempt_failed"] == [StepTimeout.__name__]


async def test_a_crash_during_backoff_waits_out_only_the_rest(store: Store) -> None:
    clock = ManualClock()
    attempts: list[int] = []
    failed_once = anyio.Event()

    def flaky(ctx: Context[Any, Any]) -> str:
        attempts.append(ctx.Attempt)
        if ctx.Attempt == 1:
            failed_once.set()
            raise ConnectionError("refused")
        return END

    retry = Retry(attempts=3, initial_delay=30, jitter=False)
    wf = Workflow("wf").Flow({START: lambda ctx: "Call", "Call": step(flaky, retry=retry)})
    async with WorkflowRunner(wf, store, clock=clock, lease_ttl=60) as first:
        await first.Run(run_id="backoff")
        await failed_once.wait()
        record = await until(store, "backoff", lambda r: r.body.retry_at is not None)
        assert record.body.retry_at == clock.now() + 30 and record.body.attempt == 2
    # The first executor is gone mid-backoff. Ten seconds later another takes over.
    clock.advance(10)
    async with WorkflowRunner(wf, store, clock=clock, lease_ttl=60) as second:
        taken = await second.Get("backoff")
        await second.recover_now()
        record = await taken.Record()
        assert record.lease is not None and attempts == [1]
        clock.advance(19)
        assert attempts == [1], "20 s of the 30 s backoff have passed"
        clock.advance(1)
        assert await taken.Result(timeout=10) == {}
    assert attempts == [1, 2]
    recovered = next(e for e in await taken.Timeline() if e.kind == "recovered")
    assert recovered.data["attempt"] == 2, "the interrupted backoff was not an attempt"


async def test_compensation_runs_in_reverse_with_outputs_and_keys(store: Store) -> None:
    undone: list[tuple[str, Any, str]] = []

    def undo(ctx: Context[Any, Any], output: Any) -> None:
        undone.append((ctx.StepName, output, ctx.IdempotencyKey))

    def reserve(ctx: Context[Any, Any]) -> Next:
        return Next("Charge", output={"reservation": "R1", "key": ctx.IdempotencyKey})

    def charge(ctx: Context[Any, Any]) -> Next:
        return Next("Ship", output={"charge": "C1", "key": ctx.IdempotencyKey})

    def ship(ctx: Context[Any, Any]) -> str:
        raise RuntimeError("no courier")

    wf = Workflow("order").Flow(
        {
            START: lambda ctx: "Reserve",
            "Reserve": step(reserve, compensate=undo),
            "Charge": step(charge, compensate=undo),
            "Ship": ship,
        }
    )
    async with WorkflowRunner(wf, store) as runner:
        handle = await runner.Run()
        with pytest.raises(RunFailed, match="in step 'Ship': RuntimeError: no courier"):
            await handle.Result(timeout=10)
        record = await handle.Record()
        events = await handle.Timeline()
    assert [(s, o["charge" if s == "Charge" else "reservation"]) for s, o, _ in undone] == [
        ("Charge", "C1"),
        ("Reserve", "R1"),
    ]
    assert all(output["key"] == key for _, output, key in undone)
    assert record.status == RunStatus.FAILED and record.body.compensated
    assert record.body.compensations == []
    assert [(e.kind, e.step) for e in events][-4:] == [
        ("compensating", "Ship"),
        ("compensated", "Charge"),
        ("compensated", "Reserve"),
        ("failed", "Ship"),
    ]
    assert events[-1].data["compensated"] is True


async def test_a_crash_during_compensation_resumes_and_finishes(store: Store) -> None:
    undone: list[str] = []
    in_second_undo = anyio.Event()
    block = True

    async def undo(ctx: Context[Any, Any], output: Any) -> None:
        if ctx.StepName == "A" and block:
            in_second_undo.set()
            await anyio.sleep_forever()
        undone.append(ctx.StepName)

    def fail(ctx: Context[Any, Any]) -> str:
        raise RuntimeError("boom")

    wf = Workflow("saga").Flow(
        {
            START: lambda ctx: "A",
            "A": step(lambda ctx: "B", compensate=undo),
            "B": step(lambda ctx: "C", compensate=undo),
            "C": fail,
        }
    )
    async with WorkflowRunner(wf, store, lease_ttl=0.2) as first:
        await first.Run(run_id="saga-1")
        await in_second_undo.wait()
    assert undone == ["B"]
    block = False
    async with WorkflowRunner(wf, store, lease_ttl=0.2) as second:
        resumed = await second.Get("saga-1")
        with pytest.raises(RunFailed, match="RuntimeError: boom"):
            await resumed.Result(timeout=10)
        record = await resumed.Record()
    assert undone == ["B", "A"], "B was undone once; A after the restart"
    assert record.body.compensated and record.body.error is not None
    assert record.body.error.step == "C"


def test_retry_delays_grow_and_are_capped() -> None:
    retry = Retry(attempts=10, backoff=2.0, initial_delay=1.0, max_delay=5.0, jitter=False)
    assert [retry.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    jittered = Retry(initial_delay=4.0)
    assert jittered.delay(1, rng=lambda: 0.0) == 2.0 and jittered.delay(1, rng=lambda: 1.0) == 4.0


def test_policy_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="attempts=0"):
        Retry(attempts=0)
    with pytest.raises(TypeError, match="retry= takes a Retry"):
        step(lambda ctx: END, retry=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout= takes a positive number"):
        step(lambda ctx: END, timeout=-1)
    with pytest.raises(TypeError, match="Retry\\(on=...\\) takes a tuple"):
        Retry(on=ValueError)  # type: ignore[arg-type]
