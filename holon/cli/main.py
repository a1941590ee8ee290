"""`holon`: run, find and steer runs from a terminal.

```
holon --store sqlite:///.holon/holon.db list --status waiting
holon approve RUN --as alice --comment "looks right"
holon --json show RUN
```

Global options come before the verb: `--store` (`HOLON_STORE`), `--key-prefix`
(`HOLON_KEY_PREFIX`), `--app module:attr` (`HOLON_APP`), `--json`, `--debug`. People get
tables, scripts `--json`. An error is one line on stderr (`--debug`: with its traceback).

Exit codes:

| code | meaning |
| --- | --- |
| 0 | done |
| 1 | refused: the verb does not apply to the run now, a decision was refused, the store failed |
| 2 | a bad argument (the message names it) |
| 3 | no such run, workflow or schedule |
| 4 | `--follow`: the run ended other than `completed` |
| 130 | interrupted (Ctrl-C) |

Adding commands: write a module of `holon/cli/` with a function `register(app)` that
adds its commands to the `typer.Typer` it is given (`@app.command()`), then list the
module in `COMMAND_MODULES` below. Commands read the global options with
`settings(ctx)` (`holon.cli.settings`) and print through its `out` (`holon.cli.output`).
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from types import ModuleType
from typing import Annotated

import typer

from holon.cli import catalogue, runs, serve, steer, surgery, worker
from holon.cli.output import Output
from holon.cli.settings import BadArgument, RunEnded, Settings
from holon.errors import HolonError, RunNotFound, WorkflowNotFound
from holon.worker.serve import AppError

__all__ = [
    "COMMAND_MODULES",
    "EXIT_ERROR",
    "EXIT_NOT_FOUND",
    "EXIT_RUN_ENDED",
    "EXIT_USAGE",
    "build_app",
    "main",
]

COMMAND_MODULES: tuple[ModuleType, ...] = (runs, steer, surgery, catalogue, worker, serve)
"""The modules whose `register(app)` adds commands to `holon`, in help order."""

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_RUN_ENDED = 4
EXIT_INTERRUPTED = 130


def _global_options(
    ctx: typer.Context,
    store: Annotated[
        str | None,
        typer.Option(envvar="HOLON_STORE", help="Store URL (default: sqlite:///.holon/holon.db)."),
    ] = None,
    key_prefix: Annotated[
        str, typer.Option(envvar="HOLON_KEY_PREFIX", help="The deployment's key prefix.")
    ] = "",
    app: Annotated[
        str | None,
        typer.Option(envvar="HOLON_APP", help="module:attr of the workflows' code."),
    ] = None,
    json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
) -> None:
    """Durable workflows of AI agents, tools and people: run, find and steer runs."""
    ctx.obj = Settings(store=store, key_prefix=key_prefix, app=app, out=Output(json), debug=debug)


def build_app() -> typer.Typer:
    """The `holon` command with every module's commands."""
    app = typer.Typer(
        name="holon",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(_global_options)
    for module in COMMAND_MODULES:
        module.register(app)
    return app


def _exit_code(error: BaseException) -> int:
    if isinstance(error, RunNotFound | WorkflowNotFound):
        return EXIT_NOT_FOUND
    if isinstance(error, BadArgument | AppError):
        return EXIT_USAGE
    return EXIT_ERROR


def main(argv: Sequence[str] | None = None) -> None:
    """The `holon` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or bool(os.environ.get("HOLON_DEBUG"))
    command = typer.main.get_command(build_app())
    errors = Output(as_json=False)
    try:
        # Standalone: typer reports a usage error itself, naming the argument at fault,
        # and exits 2; `--help` and completion exit 0.
        command.main(args=args, prog_name="holon", standalone_mode=True)
    except RunEnded as exc:
        errors.error(str(exc))
        code = EXIT_RUN_ENDED
    except HolonError as exc:
        if debug:
            traceback.print_exc()
        errors.error(str(exc))
        code = _exit_code(exc)
    except (ValueError, TypeError) as exc:  # an argument a library call refused
        if debug:
            traceback.print_exc()
        errors.error(str(exc))
        code = EXIT_USAGE
    except KeyboardInterrupt:
        errors.error("interrupted")
        code = EXIT_INTERRUPTED
    except Exception as exc:  # a bug or an unexpected failure: still one line
        if debug:
            traceback.print_exc()
        errors.error(f"unexpected {type(exc).__name__}: {exc} (--debug shows the traceback)")
        code = EXIT_ERROR
    else:
        code = 0
    sys.exit(code)


if __name__ == "__main__":
    main()
