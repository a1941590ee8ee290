"""OpenTelemetry spans for runs and steps (`pip install 'holon[otel]'`).

```py
spans = RunSpans()                                  # the global tracer provider
worker = Worker(steward, store=ObservedStore(store, [spans.observe]).store)
```

Spans are made from the timeline events an executor writes (see `ObservedStore`), so
the engine carries no tracing code; writes by starters and operators make none. Each
stretch of a run in one executor (from its first step there until it waits, pauses,
ends or is handed back) is a `holon.run` span; each step is a `step NAME` span under
it, timed by the step's own measured duration; a failed attempt is a `step NAME` span
with error status. Attributes: `holon.workflow.name`, `holon.run.id`,
`holon.step.name`, `holon.step.attempt`, `holon.run.status`; failures set the span
status to ERROR with `error.type`, as the general semantic conventions ask.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from holon.errors import HolonError
from holon.runtime.log_context import current_run
from holon.stores.base import NewEvent

__all__ = ["RunSpans"]

_HALTS = frozenset(
    {"waiting", "paused", "stopped", "completed", "failed", "handed_back", "rejected", "expired"}
)


def _ns(at: float) -> int:
    return int(at * 1_000_000_000)


class RunSpans:
    """An `ObservedStore` observer that turns timeline events into spans."""

    def __init__(self, tracer_provider: Any = None) -> None:
        try:
            from opentelemetry import trace
        except ImportError:
            raise HolonError("OpenTelemetry is not installed: pip install 'holon[otel]'") from None
        self._trace = trace
        self.tracer = trace.get_tracer("holon", tracer_provider=tracer_provider)
        self._open: dict[str, Any] = {}
        """Run id -> the `holon.run` span of its stretch in this process."""

    def observe(self, run_id: str, events: Sequence[NewEvent]) -> None:
        run = current_run()
        if run is None or run.run_id != run_id:
            return  # written by a starter or an operator, not by this run's executor
        workflow = run.workflow
        for event in events:
            if event.kind == "handed_back" and run_id not in self._open:
                continue
            span = self._run_span(run_id, workflow, event)
            if event.kind == "step_completed" and event.step is not None:
                self._step(span, run_id, workflow, event, None, run.attempt)
            elif event.kind in ("attempt_failed", "failed") and event.step is not None:
                # The last attempt of a failed step ends the run: `failed` is its end.
                error = str(event.data.get("error"))
                self._step(span, run_id, workflow, event, error, run.attempt)
            if event.kind in _HALTS:
                self._end(run_id, event)

    def _attributes(self, run_id: str, workflow: str) -> dict[str, str]:
        return {"holon.run.id": run_id, "holon.workflow.name": workflow}

    def _run_span(self, run_id: str, workflow: str, event: NewEvent) -> Any:
        span = self._open.get(run_id)
        if span is None:
            span = self.tracer.start_span(
                "holon.run", attributes=self._attributes(run_id, workflow), start_time=_ns(event.at)
            )
            self._open[run_id] = span
        return span

    def _step(
        self,
        parent: Any,
        run_id: str,
        workflow: str,
        event: NewEvent,
        error: str | None,
        attempt: int,
    ) -> None:
        trace = self._trace
        duration = float(event.data.get("duration_ms") or 0.0) / 1000.0
        attributes: dict[str, Any] = {
            **self._attributes(run_id, workflow),
            "holon.step.name": str(event.step),
            "holon.step.attempt": int(event.data.get("attempt") or attempt),
            "holon.run.status": "failed" if error else "completed",
        }
        if error is not None:
            attributes["error.type"] = error
        span = self.tracer.start_span(
            f"step {event.step}",
            context=trace.set_span_in_context(parent),
            attributes=attributes,
            start_time=_ns(event.at - duration),
        )
        if error is not None:
            span.set_status(trace.Status(trace.StatusCode.ERROR, str(event.data.get("message"))))
        span.end(end_time=_ns(event.at))

    def _end(self, run_id: str, event: NewEvent) -> None:
        span = self._open.pop(run_id, None)
        if span is None:
            return
        trace = self._trace
        span.set_attribute("holon.run.status", event.kind)
        if event.kind == "failed":
            span.set_attribute("error.type", str(event.data.get("error")))
            span.set_status(trace.Status(trace.StatusCode.ERROR, str(event.data.get("message"))))
        span.end(end_time=_ns(event.at))
