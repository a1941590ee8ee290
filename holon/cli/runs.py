"""`holon run`, `list`, `show`, `pending`, `send`: start runs and look at them."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any

import anyio
import typer
from rich.live import Live
from rich.text import Text

from holon.cli.output import Output, when
from holon.cli.settings import BadArgument, RunEnded, parse_json, settings
from holon.control.client import Client
from holon.control.handle import RunHandle
from holon.control.sandbox import SANDBOX_PREFIX, is_sandbox
from holon.runtime.waits import WaitInfo, describe
from holon.stores.base import RunRecord, RunStatus, TimelineEvent

__all__ = ["ended", "follow", "register", "since_time", "wait_text"]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def since_time(option: str, text: str | None) -> float | None:
    """`--since 2h` (or 30m, 45s, 7d, or an ISO date/time, UTC unless it says) as
    seconds since the epoch."""
    if text is None:
        return None
    found = _DURATION.match(text.strip())
    if found:
        return dt.datetime.now(dt.UTC).timestamp() - float(found[1]) * _UNITS[found[2]]
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BadArgument(
            f"{option} takes a duration (30m, 2h, 7d) or an ISO date/time, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def wait_text(info: WaitInfo) -> str:
    """Whom or what a wait waits for, in a few words."""
    if info.kind == "approval":
        more = f" ({info.approvals_needed} more)" if info.approvals_needed > 1 else ""
        return f"approval by {', '.join(info.approvers)}{more}"
    if info.kind == "input":
        return f"an answer to {info.question!r}" if info.question else "an answer"
    if info.kind == "event":
        return f"event {info.event!r}"
    return f"a timer due {when(info.deadline)}"


def _event_detail(event: TimelineEvent) -> str:
    data = {k: v for k, v in event.data.items() if k not in ("traceback",)}
    return ", ".join(f"{k}={v}" for k, v in data.items() if v is not None)


def _summary(record: RunRecord, events: list[TimelineEvent]) -> dict[str, Any]:
    info = describe(record)
    origin = record.body.origin
    cursor = record.body.cursor
    return {
        "run_id": record.run_id,
        "workflow": record.workflow,
        "version": record.current_version,
        "status": record.status.value,
        "sandbox": is_sandbox(record),
        "origin": origin.model_dump(mode="json") if origin else None,
        "steps_done": sum(1 for e in events if e.kind == "step_completed"),
        "current_step": cursor.step if cursor and not record.status.terminal else None,
        "waiting_for": wait_text(info) if info else None,
        "wait": info,
        "error": record.body.error.model_dump(mode="json") if record.body.error else None,
        "output": record.body.output if record.status == RunStatus.COMPLETED else None,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }


def _print_summary(out: Output, summary: dict[str, Any]) -> None:
    flag = " [sandbox]" if summary["sandbox"] else ""
    out.say(
        f"run {summary['run_id']}{flag}  workflow {summary['workflow']} "
        f"{summary['version']}  status {summary['status']}"
    )
    origin = summary["origin"]
    if origin:
        out.say(f"  {origin['kind']} of run {origin['run_id']} at event {origin['seq']}")
    progress = f"  steps done: {summary['steps_done']}"
    if summary["current_step"]:
        progress += f"   current step: {summary['current_step']}"
    if summary["waiting_for"]:
        progress += f"   waiting for: {summary['waiting_for']}"
    out.say(progress)
    if summary["error"]:
        error = summary["error"]
        out.say(f"  error in {error.get('step')}: {error['type']}: {error['message']}")


def _print_event(out: Output, event: TimelineEvent) -> None:
    if out.as_json:
        out.line(event)
    else:
        out.say(
            f"  {event.seq:>4}  {when(event.at)}  {event.kind:<16} {event.step or '':<16} "
            f"{_event_detail(event)}"
        )


def _progress_line(summary: dict[str, Any]) -> str:
    line = f"{summary['status']}: {summary['steps_done']} steps done"
    if summary["current_step"]:
        line += f", at {summary['current_step']}"
    if summary["waiting_for"]:
        line += f", waiting for {summary['waiting_for']}"
    return line


async def follow(out: Output, handle: RunHandle, after: int) -> RunRecord:
    """Print the run's events as they happen until it ends; returns its final record.

    On a terminal, a progress line under the events (steps done, the current step,
    whom a wait waits for) is kept up to date as they come."""
    if out.as_json or not out.console.is_terminal:
        async for event in handle.Watch(after=after, emitted=False):
            _print_event(out, event)
    else:
        events = await handle.Timeline()
        with Live(console=out.console, transient=True, auto_refresh=False) as live:
            async for event in handle.Watch(after=after, emitted=False):
                events.append(event)
                _print_event(out, event)
                summary = _summary(await handle.Record(), events)
                live.update(Text(_progress_line(summary), style="bold"), refresh=True)
    record = await handle.Record()
    if out.as_json:
        out.line({"run_id": record.run_id, "status": record.status.value})
    else:
        out.say(f"run {record.run_id} {record.status.value}")
    return record


def ended(record: RunRecord) -> None:
    """Raise `RunEnded` (exit code 4) unless the followed run completed."""
    if record.status != RunStatus.COMPLETED:
        raise RunEnded(f"run {record.run_id} ended {record.status.value}")


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_command(
        ctx: typer.Context,
        workflow: Annotated[str, typer.Argument(help="The workflow's name in the catalogue.")],
        input: Annotated[
            str | None, typer.Option("--input", "-i", help="The input: JSON, or @file.")
        ] = None,
        version: Annotated[str | None, typer.Option(help="A version (default: latest).")] = None,
        run_id: Annotated[
            str | None, typer.Option(help="An id (starting again is a no-op).")
        ] = None,
        as_: Annotated[str | None, typer.Option("--as", help="Who starts the run.")] = None,
        follow_: Annotated[
            bool, typer.Option("--follow", "-f", help="Watch it to its end.")
        ] = False,
    ) -> None:
        """Start a run of a workflow by name; a worker executes it."""
        s = settings(ctx)
        value = parse_json("--input", input)

        async def go() -> None:
            async with s.client() as client:
                handle = await client.Start(
                    workflow, value, version=version, run_id=run_id, started_by=as_
                )
                if s.out.as_json and not follow_:
                    s.out.data({"run_id": handle.run_id, "status": await handle.Status()})
                    return
                s.out.say(f"started run {handle.run_id} of {workflow}")
                if follow_:
                    ended(await follow(s.out, handle, 0))

        anyio.run(go)

    @app.command("list")
    def list_command(
        ctx: typer.Context,
        status: Annotated[RunStatus | None, typer.Option(help="Only runs in this status.")] = None,
        workflow: Annotated[str | None, typer.Option(help="Only runs of this workflow.")] = None,
        version: Annotated[str | None, typer.Option(help="Only runs of this version.")] = None,
        since: Annotated[
            str | None, typer.Option(help="Only runs started since: 2h, 30m, 7d or a date.")
        ] = None,
        limit: Annotated[int, typer.Option(min=1, help="At most this many runs.")] = 50,
    ) -> None:
        """Runs in the store, newest first (sandbox runs are flagged)."""
        s = settings(ctx)
        after = since_time("--since", since)

        async def go() -> None:
            async with s.client() as client:
                found = await _listed(client, status, workflow, version, after, limit)
            if s.out.as_json:
                s.out.data(
                    [
                        {**r.model_dump(mode="json"), "sandbox": _sandboxed(r.workflow)}
                        for r in found
                    ]
                )
                return
            s.out.table(
                ["RUN", "WORKFLOW", "VERSION", "STATUS", "STARTED", "UPDATED"],
                (
                    [
                        r.run_id + (" [sandbox]" if _sandboxed(r.workflow) else ""),
                        r.workflow,
                        r.version,
                        r.status.value,
                        when(r.created_at),
                        when(r.updated_at),
                    ]
                    for r in found
                ),
            )

        anyio.run(go)

    @app.command("show")
    def show_command(
        ctx: typer.Context,
        run: Annotated[str, typer.Argument(help="The run's id.")],
        follow_: Annotated[
            bool, typer.Option("--follow", "-f", help="Keep printing events until it ends.")
        ] = False,
    ) -> None:
        """A run: status, progress (steps done, current step, whom a wait waits for)
        and its timeline; --follow prints events live until the run ends."""
        s = settings(ctx)

        async def go() -> None:
            async with s.client() as client:
                handle = await client.Get(run)
                record = await handle.Record()
                events = await handle.Timeline()
                summary = _summary(record, events)
                if s.out.as_json and not follow_:
                    s.out.data({**summary, "timeline": events})
                    return
                if s.out.as_json:
                    s.out.line(summary)
                else:
                    _print_summary(s.out, summary)
                for event in events:
                    _print_event(s.out, event)
                if follow_:
                    last = events[-1].seq if events else 0
                    ended(await follow(s.out, handle, last))

        anyio.run(go)

    @app.command("pending")
    def pending_command(
        ctx: typer.Context,
        as_: Annotated[str, typer.Option("--as", help="The identity approving.")],
        role: Annotated[list[str] | None, typer.Option(help="A role the identity holds.")] = None,
    ) -> None:
        """The approvals an identity can act on now."""
        s = settings(ctx)

        async def go() -> None:
            async with s.client() as client:
                found: list[WaitInfo] = []
                cursor: str | None = None
                while True:
                    page = await client.Pending(as_, role or (), cursor=cursor)
                    found += page.items
                    if page.next_cursor is None:
                        break
                    cursor = page.next_cursor
            if s.out.as_json:
                s.out.data(found)
                return
            s.out.table(
                ["RUN", "WORKFLOW", "STEP", "QUESTION", "NEEDED", "DIGEST"],
                (
                    [w.run_id, w.workflow, w.step, w.question, w.approvals_needed, w.digest]
                    for w in found
                ),
            )

        anyio.run(go)

    @app.command("send")
    def send_command(
        ctx: typer.Context,
        event: Annotated[str, typer.Argument(help="The event's name.")],
        payload: Annotated[str | None, typer.Option(help="The payload: JSON, or @file.")] = None,
        run: Annotated[
            str | None, typer.Option(help="Only this run (default: every run waiting on it).")
        ] = None,
        event_id: Annotated[str | None, typer.Option(help="Sending it again is a no-op.")] = None,
    ) -> None:
        """Deliver an event to the runs waiting on it."""
        s = settings(ctx)
        value = parse_json("--payload", payload)

        async def go() -> None:
            async with s.client() as client:
                if run is not None:
                    status = await (await client.Get(run)).Send(event, value, event_id)
                    reached = [run]
                    s.out.say(f"run {run}: {status.value}")
                else:
                    reached = await client.Send(event, value, event_id)
                    s.out.say(f"{len(reached)} runs got {event!r}")
            if s.out.as_json:
                s.out.data({"event": event, "runs": reached})

        anyio.run(go)


def _sandboxed(workflow: str) -> bool:
    return workflow.startswith(SANDBOX_PREFIX)


async def _listed(
    client: Client,
    status: RunStatus | None,
    workflow: str | None,
    version: str | None,
    after: float | None,
    limit: int,
) -> list[Any]:
    found: list[Any] = []
    cursor: str | None = None
    while len(found) < limit:
        page = await client.List(status, workflow, limit=min(500, limit), cursor=cursor)
        found += [
            r
            for r in page.items
            if (version is None or r.version == version)
            and (after is None or r.created_at >= after)
        ]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    return found[:limit]
