"""`holon serve APP`: the HTTP API, webhooks and dashboard of APP's workflows.

APP is `module:attr` naming a `Steward`, a `Workflow` or a list of them, as for
`holon worker`; their runs execute in this process unless `--no-worker`. Needs the
`http` extra (`pip install 'holon[http]'`). Tokens come from `HOLON_AUTH_FILE` or
`HOLON_AUTH`; with neither, one admin token is made and printed once
(`holon.http.serve.run_app`).
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from holon.cli.settings import BadArgument, settings
from holon.cli.worker import configure_logging
from holon.runtime.log_context import install_log_context
from holon.stores import open_store

__all__ = ["register"]

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s run=%(run_id)s step=%(step)s: %(message)s"


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_command(
        ctx: typer.Context,
        app_spec: Annotated[
            str, typer.Argument(metavar="APP", help="module:attr of a Steward, Workflow or list.")
        ],
        host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8080,
        worker: Annotated[
            bool, typer.Option("--worker/--no-worker", help="Execute APP's runs here.")
        ] = True,
        rate: Annotated[
            float, typer.Option(min=0.001, help="Requests a second each caller may make.")
        ] = 100.0,
        webhook_secret: Annotated[
            str | None,
            typer.Option(envvar="HOLON_WEBHOOK_SECRET", help="Key webhooks are signed with."),
        ] = None,
        notify: Annotated[
            list[str] | None, typer.Option(help="URL to POST notices to (repeatable).")
        ] = None,
        notify_secret: Annotated[
            str | None,
            typer.Option(envvar="HOLON_NOTIFY_SECRET", help="Key notices are signed with."),
        ] = None,
        telemetry: Annotated[
            bool, typer.Option("--telemetry", help="OpenTelemetry spans (needs the otel extra).")
        ] = False,
    ) -> None:
        """Serve the HTTP API and dashboard of APP until SIGTERM or SIGINT."""
        try:
            from holon.http.notify import Notifier
            from holon.http.serve import run_app
        except ImportError as exc:
            raise BadArgument(
                f"holon serve needs the http extra: pip install 'holon[http]' ({exc})"
            ) from None
        if notify and not notify_secret:
            raise BadArgument("--notify needs --notify-secret (or HOLON_NOTIFY_SECRET)")
        s = settings(ctx)
        configure_logging(False)
        # Each line names the run and step being executed, when there is one.
        install_log_context()
        for handler in logging.getLogger("holon").handlers:
            handler.setFormatter(logging.Formatter(_LOG_FORMAT))
        run_app(
            app_spec,
            host=host,
            port=port,
            store=open_store(s.store, key_prefix=s.key_prefix) if s.store or s.key_prefix else None,
            worker=worker,
            rate=rate,
            webhook_secret=webhook_secret,
            notifier=Notifier(notify, secret=notify_secret) if notify and notify_secret else None,
            telemetry=telemetry,
        )
