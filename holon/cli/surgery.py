"""`holon rerun`, `replay`, `fork`: run surgery from the terminal (see
`holon.control.surgery`). `rerun` and `replay` run the workflow's code: they need
`--app`."""

from __future__ import annotations

import getpass
from typing import Annotated

import anyio
import typer

from holon.cli.settings import parse_json, settings

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    @app.command("rerun")
    def rerun_command(
        ctx: typer.Context,
        run: Annotated[str, typer.Argument(help="The run's id.")],
        step: Annotated[str, typer.Argument(help="The step to run again.")],
        seq: Annotated[
            int | None, typer.Option(help="The timeline event it started at (default: last).")
        ] = None,
    ) -> None:
        """Run one step again in a sandbox from its recorded snapshot; show the diff."""
        s = settings(ctx)
        s.needs_app("rerun")

        async def go() -> None:
            async with s.client() as client:
                report = await (await client.Get(run)).Rerun(step, seq)
            if s.out.as_json:
                s.out.data({**report.__dict__, "same": report.same})
                return
            s.out.say(f"re-ran step {step} of run {run} from before event {report.seq}")
            s.out.say(f"  outcome: {report.outcome}")
            s.out.say(f"  state patch: {report.state_patch}")
            s.out.say(f"  output: {report.output}")
            if report.same:
                s.out.say("  same as recorded")
            for field, sides in report.diff.items():
                s.out.say(f"  {field} differs: recorded {sides['recorded']}, now {sides['rerun']}")

        anyio.run(go)

    @app.command("replay")
    def replay_command(
        ctx: typer.Context,
        run: Annotated[str, typer.Argument(help="The run's id.")],
        as_: Annotated[str | None, typer.Option("--as", help="Who replays it.")] = None,
    ) -> None:
        """Run the whole workflow again in a sandbox; external steps answered from the
        recording; report the first divergence."""
        s = settings(ctx)
        s.needs_app("replay")

        async def go() -> None:
            async with s.client() as client:
                report = await (await client.Get(run)).Replay(by=as_ or getpass.getuser())
            if s.out.as_json:
                s.out.data({**report.__dict__, "diverged": report.diverged})
                return
            s.out.say(
                f"sandbox run {report.run_id} [sandbox]: {report.status.value}, "
                f"{report.steps} steps, external calls answered: {report.played or 'none'}"
            )
            if report.error:
                s.out.say(f"  error: {report.error}")
            divergence = report.divergence
            if divergence is None:
                s.out.say("  no divergence from the original")
            else:
                s.out.say(
                    f"  diverged at step #{divergence.index} ({', '.join(divergence.fields)}):"
                )
                s.out.say(f"    original: {divergence.original}")
                s.out.say(f"    replay:   {divergence.replay}")

        anyio.run(go)

    @app.command("fork")
    def fork_command(
        ctx: typer.Context,
        run: Annotated[str, typer.Argument(help="The run's id.")],
        at: Annotated[int, typer.Option(help="The timeline event (a step_started) to fork at.")],
        state: Annotated[str | None, typer.Option(help="A state patch: JSON, or @file.")] = None,
        as_: Annotated[str | None, typer.Option("--as", help="Who forks it.")] = None,
    ) -> None:
        """Start a new, real run from a recorded checkpoint of RUN."""
        s = settings(ctx)
        patch = parse_json("--state", state)

        async def go() -> None:
            async with s.client() as client:
                forked = await (await client.Get(run)).Fork(at, patch, by=as_ or getpass.getuser())
                status = await forked.Status()
            if s.out.as_json:
                s.out.data(
                    {"run_id": forked.run_id, "status": status, "forked_from": run, "at": at}
                )
            else:
                s.out.say(f"forked run {forked.run_id} from {run} at event {at}: {status.value}")

        anyio.run(go)
