"""`holon approve`, `reject`, `answer`, `pause`, `resume`, `stop`, `retry`: steer runs.

`pause`, `resume`, `stop` and `retry` take one RUN, or, instead, a filter
(`--workflow`, `--status`, `--version`, `--since`, `--before`) that they apply to every
matching run, reporting each run's outcome (`holon.control.bulk`).
"""

from __future__ import annotations

import getpass
from typing import Annotated, Any

import anyio
import typer

from holon.cli.output import Output
from holon.cli.runs import since_time
from holon.cli.settings import BadArgument, Settings, parse_json, settings
from holon.control.bulk import BulkReport
from holon.control.client import Client
from holon.stores.base import RunStatus

__all__ = ["register"]

AsOption = Annotated[
    str | None, typer.Option("--as", help="Who does it (default: your user name).")
]
WorkflowFilter = Annotated[str | None, typer.Option(help="Bulk: runs of this workflow.")]
StatusFilter = Annotated[RunStatus | None, typer.Option(help="Bulk: runs in this status.")]
VersionFilter = Annotated[str | None, typer.Option(help="Bulk: runs of this version.")]
SinceFilter = Annotated[str | None, typer.Option(help="Bulk: runs started since (2h, a date).")]
BeforeFilter = Annotated[str | None, typer.Option(help="Bulk: runs started before (2h, a date).")]


def _who(given: str | None) -> str:
    return given or getpass.getuser()


def _print_report(out: Output, report: BulkReport) -> None:
    if out.as_json:
        out.data({"verb": report.verb, "counts": report.counts, "runs": report.outcomes})
        return
    out.table(
        ["RUN", "OUTCOME", "STATUS", "DETAIL"],
        ([o.run_id, o.outcome, o.status, o.detail] for o in report.outcomes),
    )
    counts = ", ".join(f"{n} {k}" for k, n in sorted(report.counts.items())) or "no runs matched"
    out.say(f"{report.verb}: {counts}")


def _steer(
    s: Settings,
    verb: str,
    run: str | None,
    filters: dict[str, Any],
    by: str,
    one: Any,
) -> None:
    """Apply `verb` to RUN (calling `one(handle)`) or, with no RUN, to every run the
    filters match."""
    given = {k: v for k, v in filters.items() if v is not None}
    if run is not None and given:
        raise BadArgument(f"{verb}: give RUN or filters ({', '.join(given)}), not both")
    if run is None and not given:
        raise BadArgument(
            f"{verb}: give RUN, or filters (--workflow, --status, --version, --since, "
            "--before) to apply it to every matching run"
        )

    async def go() -> None:
        async with s.client() as client:
            if run is None:
                report = await _bulk(client, verb, filters, by)
                _print_report(s.out, report)
                return
            status = await one(await client.Get(run))
            if s.out.as_json:
                s.out.data({"run_id": run, "status": status})
            else:
                s.out.say(f"run {run}: {status.value}")

    anyio.run(go)


async def _bulk(client: Client, verb: str, filters: dict[str, Any], by: str) -> BulkReport:
    return await client.Bulk(
        verb,
        workflow=filters["workflow"],
        status=filters["status"],
        version=filters["version"],
        started_after=since_time("--since", filters["since"]),
        started_before=since_time("--before", filters["before"]),
        by=by,
    )


def register(app: typer.Typer) -> None:
    @app.command("approve")
    def approve_command(
        ctx: typer.Context,
        run: Annotated[str, typer.Argument(help="The run's id.")],
        as_: Annotated[str, typer.Option("--as", help="The identity approving.")],
        comment: Annotated[str | None, typer.Option(help="Recorded with the decision.")] = None,
        digest: Annotated[str | None, typer.Option(help="The payload digest you saw.")] = None,
        role: Annotated[list[str] | None, typer.Option(help="A role you hold.")] = None,
    ) -> None:
        """Approve the gate a run waits at."""
        _decide(settings(ctx), "approve", run, as_, comment, digest, role)

    @app.command("reject")
    def reject_command(
        ctx: typer.Context,
        run: Annotated[str, typer.Argument(help="The run's id.")],
        as_: Annotated[str, typer.Option("--as", help="The identity rejecting.")],
        comment: Annotated[str | None, typer.Option(help="Recorded with the decision.")] = None,
        digest: Annotated[str | None, typer.Option(help="The payload digest you saw.")] = None,
        role: Annotated[list[str] | None, typer.Option(help="A role you hold.")] = None,
    ) -> None:
        """Reject the gate a run waits at."""
        _decide(settings(ctx), "reject", run, as_, comment, digest, role)

    @app.command("answer")
    def answer_command(
        ctx: typer.Context,
        run: Annotated[str, typer.Argument(help="The run's id.")],
        value: Annotated[str, typer.Argument(help="The answer: JSON, else taken as text.")],
        as_: Annotated[str, typer.Option("--as", help="The identity answering.")],
        comment: Annotated[str | None, typer.Option(help="Recorded with the answer.")] = None,
    ) -> None:
        """Answer the question (HumanInput) a run waits at."""
        s = settings(ctx)
        try:
            answer = parse_json("VALUE", value)
        except BadArgument:
            answer = value  # plain text

        async def go() -> None:
            async with s.client() as client:
                status = await (await client.Get(run)).Answer(answer, as_, comment)
            _said(s, run, status)

        anyio.run(go)

    @app.command("pause")
    def pause_command(
        ctx: typer.Context,
        run: Annotated[str | None, typer.Argument(help="The run's id (or use filters).")] = None,
        as_: AsOption = None,
        workflow: WorkflowFilter = None,
        status: StatusFilter = None,
        version: VersionFilter = None,
        since: SinceFilter = None,
        before: BeforeFilter = None,
    ) -> None:
        """Pause a run (or every run matching the filters) at its next step boundary."""
        by = _who(as_)
        filters = _filters(workflow, status, version, since, before)
        _steer(settings(ctx), "pause", run, filters, by, lambda h: h.Pause(by=by))

    @app.command("resume")
    def resume_command(
        ctx: typer.Context,
        run: Annotated[str | None, typer.Argument(help="The run's id (or use filters).")] = None,
        goto: Annotated[str | None, typer.Option(help="Run this step next.")] = None,
        state: Annotated[str | None, typer.Option(help="A state patch: JSON, or @file.")] = None,
        as_: AsOption = None,
        workflow: WorkflowFilter = None,
        status: StatusFilter = None,
        version: VersionFilter = None,
        since: SinceFilter = None,
        before: BeforeFilter = None,
    ) -> None:
        """Resume a paused run, optionally at another step with a state patch."""
        by = _who(as_)
        patch = parse_json("--state", state)
        filters = _filters(workflow, status, version, since, before)
        if run is None and (goto or patch is not None):
            raise BadArgument("resume: --goto and --state apply to one RUN, not to a filter")
        _steer(
            settings(ctx),
            "resume",
            run,
            filters,
            by,
            lambda h: h.Resume(goto=goto, state=patch, by=by),
        )

    @app.command("stop")
    def stop_command(
        ctx: typer.Context,
        run: Annotated[str | None, typer.Argument(help="The run's id (or use filters).")] = None,
        as_: AsOption = None,
        workflow: WorkflowFilter = None,
        status: StatusFilter = None,
        version: VersionFilter = None,
        since: SinceFilter = None,
        before: BeforeFilter = None,
    ) -> None:
        """Stop a run (or every run matching the filters), cancelling a running step."""
        by = _who(as_)
        filters = _filters(workflow, status, version, since, before)
        _steer(settings(ctx), "stop", run, filters, by, lambda h: h.Stop(by=by))

    @app.command("retry")
    def retry_command(
        ctx: typer.Context,
        run: Annotated[str | None, typer.Argument(help="The run's id (or use filters).")] = None,
        goto: Annotated[str | None, typer.Option(help="Continue at this step.")] = None,
        state: Annotated[str | None, typer.Option(help="A state patch: JSON, or @file.")] = None,
        as_: AsOption = None,
        workflow: WorkflowFilter = None,
        status: StatusFilter = None,
        version: VersionFilter = None,
        since: SinceFilter = None,
        before: BeforeFilter = None,
    ) -> None:
        """Continue a failed, stopped or expired run from its last checkpoint."""
        by = _who(as_)
        patch = parse_json("--state", state)
        filters = _filters(workflow, status, version, since, before)
        if run is None and (goto or patch is not None):
            raise BadArgument("retry: --goto and --state apply to one RUN, not to a filter")
        _steer(
            settings(ctx),
            "retry",
            run,
            filters,
            by,
            lambda h: h.Retry(goto=goto, state=patch, by=by),
        )


def _filters(
    workflow: str | None,
    status: RunStatus | None,
    version: str | None,
    since: str | None,
    before: str | None,
) -> dict[str, Any]:
    since_time("--since", since)  # a bad value is refused before anything is done
    since_time("--before", before)
    return {
        "workflow": workflow,
        "status": status,
        "version": version,
        "since": since,
        "before": before,
    }


def _said(s: Settings, run: str, status: RunStatus) -> None:
    if s.out.as_json:
        s.out.data({"run_id": run, "status": status})
    else:
        s.out.say(f"run {run}: {status.value}")


def _decide(
    s: Settings,
    verdict: str,
    run: str,
    by: str,
    comment: str | None,
    digest: str | None,
    roles: list[str] | None,
) -> None:
    async def go() -> None:
        async with s.client() as client:
            handle = await client.Get(run)
            decide = handle.Approve if verdict == "approve" else handle.Reject
            status = await decide(by, comment, digest, roles=roles or ())
        _said(s, run, status)

    anyio.run(go)
