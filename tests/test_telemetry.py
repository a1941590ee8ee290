"""OpenTelemetry spans of runs and steps, and the run id and step on log records."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from holon import (
    END,
    START,
    Context,
    MemoryStore,
    Next,
    RunFailed,
    Worker,
    Workflow,
    WorkflowRunner,
)
from holon.control.observed import ObservedStore
from holon.control.telemetry import RunSpans
from holon.runtime.log_context import install_log_context
from tests.http_support import FLAKY

pytestmark = pytest.mark.anyio

logger = logging.getLogger("tests.telemetry")


def greet(ctx: Context[Any, Any]) -> Next:
    logger.info("greeting")
    return Next(END, output="hi")


GREETER = Workflow("greeter").Flow({START: lambda ctx: "Greet", "Greet": greet})


async def test_runs_and_steps_become_spans_with_their_attributes() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    store = ObservedStore(MemoryStore(), [RunSpans(provider).observe]).store
    async with Worker([GREETER, FLAKY], store=store) as worker:
        async with WorkflowRunner(GREETER, store, execute=False) as starter:
            handle = await starter.Run()
            worker.executor.kick(handle.run_id)
            assert await handle.Result(timeout=10) == "hi"
        async with WorkflowRunner(FLAKY, store, execute=False) as starter:
            broken = await starter.Run()
            worker.executor.kick(broken.run_id)
            with pytest.raises(RunFailed):
                await broken.Result(timeout=10)
    spans = exporter.get_finished_spans()
    by_run = {
        run_id: [s for s in spans if s.attributes["holon.run.id"] == run_id]
        for run_id in (handle.run_id, broken.run_id)
    }
    greeted = {s.name: s for s in by_run[handle.run_id]}
    assert set(greeted) == {"holon.run", "step __start__", "step Greet"}
    run_span, step = greeted["holon.run"], greeted["step Greet"]
    assert run_span.attributes["holon.workflow.name"] == "greeter"
    assert run_span.attributes["holon.run.status"] == "completed"
    assert step.attributes["holon.step.name"] == "Greet"
    assert step.attributes["holon.step.attempt"] == 1
    assert step.parent is not None and step.parent.span_id == run_span.context.span_id
    assert run_span.start_time <= step.start_time <= step.end_time <= run_span.end_time
    failed = [s for s in by_run[broken.run_id] if s.name == "step Break"]
    assert [s.attributes["holon.step.attempt"] for s in failed] == [1, 2]
    assert {s.status.status_code for s in failed} == {StatusCode.ERROR}
    assert failed[0].attributes["error.type"] == "RuntimeError"
    failed_run = next(s for s in by_run[broken.run_id] if s.name == "holon.run")
    assert failed_run.attributes["holon.run.status"] == "failed"
    assert failed_run.status.status_code == StatusCode.ERROR


async def test_log_records_name_the_run_and_step(caplog: pytest.LogCaptureFixture) -> None:
    install_log_context()
    install_log_context()  # once is enough; twice changes nothing
    caplog.set_level(logging.INFO, logger="tests.telemetry")
    async with WorkflowRunner(GREETER, MemoryStore()) as runner:
        handle = await runner.Run()
        await handle.Result(timeout=10)
    (record,) = [r for r in caplog.records if r.getMessage() == "greeting"]
    assert (record.run_id, record.workflow, record.step) == (handle.run_id, "greeter", "Greet")
    outside = logging.getLogRecordFactory()("x", logging.INFO, "f", 1, "outside", None, None)
    assert (outside.run_id, outside.step) == (None, None)
