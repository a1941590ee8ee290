"""Running a worker as a process: what `holon worker APP` does.

`load_app("module:attr")` imports what a worker executes (a `Steward`, a `Workflow`, or a
list of them). `serve(...)` runs a `Worker` until SIGTERM or SIGINT: the first signal
stops it gracefully (no more claims; runs go back to the store as their steps finish,
for up to the drain deadline), a second one exits at once. With `health_port`, it answers
`GET /livez` (200 while the process runs) and `GET /readyz` (200 while it claims runs,
503 before it is connected and while it drains) for container orchestrators.
"""

from __future__ import annotations

import importlib
import logging
import signal
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import anyio

from holon.control.steward import Steward
from holon.definition.builder import Workflow
from holon.errors import HolonError
from holon.worker.health import serve_health
from holon.worker.worker import Worker

__all__ = ["AppError", "load_app", "serve"]

logger = logging.getLogger("holon.worker")

App = Steward | Workflow | Iterable[Workflow]


class AppError(HolonError):
    """`module:attr` names nothing a worker can execute."""


def load_app(spec: str) -> App:
    """Import `module:attr` (the current directory is importable, as for `python -m`) and
    return it: a `Steward`, a `Workflow`, or a list or tuple of workflows."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise AppError(f"APP must be module:attr (e.g. myapp.workflows:steward), got {spec!r}")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AppError(f"cannot import module {module_name!r} of APP {spec!r}: {exc}") from exc
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise AppError(f"module {module_name!r} has no {attribute!r} (APP {spec!r})") from None
    if isinstance(target, Steward | Workflow):
        return target
    if isinstance(target, list | tuple) and target and all(isinstance(w, Workflow) for w in target):
        return list(target)
    raise AppError(
        f"APP {spec!r} is a {type(target).__name__}; a worker executes a Steward, a Workflow "
        "or a list of Workflows"
    )


async def serve(worker: Worker, *, health_port: int | None = None) -> None:
    """Run `worker` until SIGTERM or SIGINT (see the module docstring)."""
    async with anyio.create_task_group() as group:
        if health_port is not None:
            await group.start(serve_health, worker, health_port)
        async with worker:
            group.start_soon(_on_signals, worker)
            await worker.run()
        group.cancel_scope.cancel()


async def _on_signals(worker: Worker) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        first = True
        async for received in signals:
            if first:
                first = False
                logger.info(
                    "%s: stopping; runs go back to the store as their steps finish (up to "
                    "%.0f s; send it again to stop at once)",
                    signal.Signals(received).name,
                    worker.drain_deadline,
                )
                worker.stop()
            else:
                logger.warning("%s again: stopping at once", signal.Signals(received).name)
                worker.stop(now=True)
                return
