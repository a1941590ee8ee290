"""Notices out: a signed JSON POST to configured URLs when a run needs someone.

```py
notifier = Notifier(["https://chat.example/hooks/holon"], secret="shared-secret")
app = create_app(steward, worker=True, notifier=notifier)
```

A notice is sent when a run starts waiting for a person (an approval or a question),
fails (its retries exhausted, or a step that may not retry), or is stopped. Each is a
JSON object (`id`, `kind`, `run_id`, `workflow`, `step`, `at`, `data`) signed like an
inbound webhook: `X-Holon-Timestamp`, `X-Holon-Signature: sha256=<HMAC-SHA256 of
"<timestamp>.<body>">`, and `X-Holon-Delivery` (the notice id, the same on every
retry, so a receiver can drop duplicates). A URL that fails (no answer, or a 5xx or
429) is tried again with exponential backoff up to `attempts` times.

Notices never hold up a run: the store's write only puts the notice in a bounded
queue (a full queue drops it, with a warning); a task of the app sends them.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from holon.clock import Clock, SystemClock
from holon.http.signing import sign
from holon.stores.base import NewEvent, Store

__all__ = ["Notice", "Notifier"]

logger = logging.getLogger("holon.notify")

_PERSON_WAITS = frozenset({"approval", "input"})


@dataclass(frozen=True)
class Notice:
    id: str
    kind: str
    """`waiting_for_person`, `failed` or `stopped`."""
    run_id: str
    step: str | None
    at: float
    data: dict[str, Any]


class Notifier:
    """Sends notices about runs to `urls` (see the module docstring).

    Args:
        urls: where every notice is POSTed.
        secret: the HMAC-SHA256 key notices are signed with.
        attempts: tries per URL before a notice is given up (logged).
        backoff: seconds before the second try; doubled each time, up to `max_backoff`.
        timeout: seconds each POST may take.
        queue: notices kept waiting to be sent; past that, new ones are dropped.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        secret: str,
        attempts: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        timeout: float = 10.0,
        queue: int = 10_000,
        clock: Clock | None = None,
    ) -> None:
        if not urls or not all(isinstance(u, str) and u.startswith("http") for u in urls):
            raise ValueError(f"Notifier needs http(s) URLs, got {urls!r}")
        if not secret:
            raise ValueError("Notifier needs a secret to sign notices with")
        if attempts < 1:
            raise ValueError(f"attempts must be at least 1, got {attempts}")
        self.urls = list(urls)
        self.secret = secret
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.clock: Clock = clock or SystemClock()
        self.store: Store | None = None
        """Where a notice's workflow name is read from; set by the app."""
        self.queue = queue
        self._send: MemoryObjectSendStream[Notice] | None = None
        """Open while `run` sends notices."""

    # -- from the store's writes (must not block) -----------------------------------------

    def observe(self, run_id: str, events: Sequence[NewEvent]) -> None:
        """An `ObservedStore` observer: queue a notice for each event that calls for one."""
        for event in events:
            kind = _notice_kind(event)
            if kind is None:
                continue
            # A traceback stays in the timeline: it says too much to send out.
            data = {k: v for k, v in event.data.items() if k != "traceback"}
            notice = Notice(uuid.uuid4().hex, kind, run_id, event.step, event.at, data)
            if self._send is None:
                logger.warning("notifier not running: dropped %s notice of run %s", kind, run_id)
                continue
            try:
                self._send.send_nowait(notice)
            except anyio.WouldBlock:
                logger.warning("notice queue full: dropped %s notice of run %s", kind, run_id)

    # -- sending -------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Send queued notices until cancelled, each URL's delivery in its own task."""
        send, receive = anyio.create_memory_object_stream[Notice](self.queue)
        self._send = send
        task_status.started()
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client, receive:
                await self._send_all(client, receive)
        finally:
            self._send = None
            send.close()

    async def _send_all(
        self, client: httpx.AsyncClient, receive: MemoryObjectReceiveStream[Notice]
    ) -> None:
        async with anyio.create_task_group() as group:
            async for notice in receive:
                body = await self._body(notice)
                for url in self.urls:
                    group.start_soon(self._deliver, client, url, notice, body)

    async def _body(self, notice: Notice) -> bytes:
        workflow = None
        if self.store is not None:
            try:
                record = await self.store.load_run(notice.run_id)
                workflow = record.workflow if record is not None else None
            except Exception:  # a notice goes out even when the run cannot be read now
                logger.warning("notice of run %s: could not read its workflow", notice.run_id)
        document = {
            "id": notice.id,
            "kind": notice.kind,
            "run_id": notice.run_id,
            "workflow": workflow,
            "step": notice.step,
            "at": notice.at,
            "data": notice.data,
        }
        return json.dumps(document, separators=(",", ":"), default=str).encode()

    async def _deliver(
        self, client: httpx.AsyncClient, url: str, notice: Notice, body: bytes
    ) -> None:
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            timestamp = str(math.floor(self.clock.now()))
            headers = {
                "Content-Type": "application/json",
                "X-Holon-Timestamp": timestamp,
                "X-Holon-Signature": sign(self.secret, timestamp, body),
                "X-Holon-Delivery": notice.id,
            }
            problem: str
            try:
                answer = await client.post(url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if answer.status_code < 300:
                    return
                problem = f"HTTP {answer.status_code}"
                if answer.status_code < 500 and answer.status_code != 429:
                    break  # the receiver refuses it: trying again changes nothing
            if attempt < self.attempts:
                logger.info("notice %s to %s: %s; again in %.1f s", notice.id, url, problem, delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
        logger.warning(
            "notice %s (%s of run %s) to %s given up: %s",
            notice.id,
            notice.kind,
            notice.run_id,
            url,
            problem,
        )


def _notice_kind(event: NewEvent) -> str | None:
    if event.kind == "waiting" and event.data.get("wait_kind") in _PERSON_WAITS:
        return "waiting_for_person"
    if event.kind in ("failed", "stopped"):
        return event.kind
    return None
