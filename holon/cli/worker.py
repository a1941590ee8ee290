"""`holon worker APP`: execute runs in this process until SIGTERM or SIGINT.

APP is `module:attr` naming a `Steward`, a `Workflow` or a list of them (the current
directory is importable). The first SIGTERM or SIGINT stops it gracefully: no more
claims, and each run goes back to the store as its step finishes (for up to
`--drain-deadline` seconds); a second one stops it at once (`holon.worker.serve`).

It logs one line each time a run changes status (the `holon.runs` logger);
`--verbose` adds one per checkpoint.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import anyio
import typer

from holon.cli.settings import BadArgument, settings
from holon.control.steward import Steward
from holon.stores import open_store
from holon.worker.serve import load_app, serve
from holon.worker.worker import Worker

__all__ = ["configure_logging", "register"]


def configure_logging(verbose: bool) -> None:
    """Lines on stderr: holon's notices, each run's status changes, and with `verbose`
    each checkpoint."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("holon")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False
    logging.getLogger("holon.runs").setLevel(logging.DEBUG if verbose else logging.INFO)


def register(app: typer.Typer) -> None:
    @app.command("worker")
    def worker_command(
        ctx: typer.Context,
        app_spec: Annotated[
            str, typer.Argument(metavar="APP", help="module:attr of a Steward, Workflow or list.")
        ],
        concurrency: Annotated[int, typer.Option(min=1, help="Most runs at once.")] = 100,
        name: Annotated[str | None, typer.Option(help="This worker's name (host:pid:…).")] = None,
        lease_ttl: Annotated[
            float, typer.Option(min=0.1, help="Seconds a run's lease lasts unrenewed.")
        ] = 10.0,
        poll_interval: Annotated[
            float | None, typer.Option(min=0.01, help="Seconds between looks for runs.")
        ] = None,
        drain_deadline: Annotated[
            float, typer.Option(min=0, help="Seconds a stopping worker lets steps finish.")
        ] = 30.0,
        poison_after: Annotated[
            int, typer.Option(min=1, help="Executor deaths in one step before a run fails.")
        ] = 5,
        version_grace: Annotated[
            float,
            typer.Option(
                min=0.01, help="Seconds before a run no live worker may execute is paused."
            ),
        ] = 300.0,
        health_port: Annotated[
            int | None, typer.Option(min=0, max=65535, help="Serve /livez and /readyz here.")
        ] = None,
        verbose: Annotated[
            bool, typer.Option("--verbose", "-v", help="A log line per checkpoint.")
        ] = False,
    ) -> None:
        """Execute runs of APP's workflows until SIGTERM or SIGINT."""
        s = settings(ctx)
        loaded = load_app(app_spec)
        if isinstance(loaded, Steward) and s.store is None and not s.key_prefix:
            store = loaded.store  # the steward's own store, unless --store says otherwise
            owned = False
        else:
            store = open_store(s.store, key_prefix=s.key_prefix)
            owned = True
        workflows = loaded.workflows if isinstance(loaded, Steward) else loaded
        if isinstance(loaded, Steward) and not workflows:
            raise BadArgument(
                f"APP {app_spec!r} is a Steward with no workflow registered in this process"
            )
        configure_logging(verbose)
        worker = Worker(
            workflows,
            store,
            concurrency=concurrency,
            name=name,
            lease_ttl=lease_ttl,
            poll_interval=poll_interval,
            drain_deadline=drain_deadline,
            poison_after=poison_after,
            version_grace=version_grace,
        )

        async def go() -> None:
            try:
                await serve(worker, health_port=health_port)
            finally:
                if owned:
                    await store.close()

        anyio.run(go)
