"""`holon workflows`, `describe`, `schedules`: what the catalogue in the store holds."""

from __future__ import annotations

from typing import Annotated

import anyio
import typer

from holon.cli.output import when
from holon.cli.settings import settings

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    @app.command("workflows")
    def workflows_command(
        ctx: typer.Context,
        tag: Annotated[str | None, typer.Option(help="Only workflows with this tag.")] = None,
    ) -> None:
        """The workflows in the catalogue (latest versions) with their runs by status."""
        s = settings(ctx)

        async def go() -> None:
            async with s.client() as client:
                found = await client.Workflows(tag)
            if s.out.as_json:
                s.out.data(found)
                return
            s.out.table(
                ["WORKFLOW", "VERSION", "KIND", "OWNER", "RUNS", "DESCRIPTION"],
                (
                    [
                        w.name,
                        w.version,
                        w.kind,
                        w.owner,
                        " ".join(f"{k}:{n}" for k, n in sorted(w.runs.items())) or "-",
                        w.description,
                    ]
                    for w in found
                ),
            )

        anyio.run(go)

    @app.command("describe")
    def describe_command(
        ctx: typer.Context,
        workflow: Annotated[str, typer.Argument(help="The workflow's name.")],
        version: Annotated[str | None, typer.Option(help="A version (default: latest).")] = None,
    ) -> None:
        """A workflow's schemas, versions and Mermaid graph."""
        s = settings(ctx)

        async def go() -> None:
            async with s.client() as client:
                described = await client.Describe(workflow, version)
            if s.out.as_json:
                s.out.data(described)
                return
            s.out.say(f"{described['name']} {described['version']}  ({described['kind']})")
            if described.get("description"):
                s.out.say(f"  {described['description']}")
            s.out.say(f"  versions: {', '.join(described['versions'])}")
            s.out.say(f"  runs: {described.get('runs') or {}}")
            s.out.say(f"  input schema: {described.get('input_schema')}")
            s.out.say(f"  state schema: {described.get('state_schema')}")
            if described.get("mermaid"):
                s.out.say("")
                s.out.console.print(described["mermaid"], markup=False)

        anyio.run(go)

    @app.command("schedules")
    def schedules_command(
        ctx: typer.Context,
        workflow: Annotated[str | None, typer.Option(help="Only this workflow's.")] = None,
    ) -> None:
        """The schedules that start runs on a timetable."""
        s = settings(ctx)

        async def go() -> None:
            async with s.client() as client:
                found = await client.steward.Schedules(workflow)
            if s.out.as_json:
                s.out.data(found)
                return
            s.out.table(
                ["SCHEDULE", "WORKFLOW", "TIMETABLE", "PAUSED", "LAST TICK", "LAST RUN"],
                (
                    [
                        x.name,
                        x.workflow,
                        x.cron or f"every {x.every} s",
                        "yes" if x.paused else "no",
                        when(x.last_tick),
                        x.last_run,
                    ]
                    for x in found
                ),
            )

        anyio.run(go)
