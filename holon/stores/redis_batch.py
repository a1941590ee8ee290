"""Group commit for the Redis store: concurrent writes share one pipeline.

Every write of the Redis store is a short list of commands (an `EVALSHA` and, on a
Cluster, a few index hints). Writers queue their commands; whoever finds no pipeline in
flight becomes the *leader*, sends everything queued as one pipeline, hands each writer
its replies, and passes the lead to the first writer that queued meanwhile. One writer
alone pays one round trip per write; a thousand concurrent writers share a few.

Every script is idempotent (commits by their commit id, lease acquisitions by their
request id), so a batch whose connection broke before the replies came back is sent
again as a whole.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["RETRY_DELAYS", "Batcher", "Command"]

logger = logging.getLogger("holon.stores.redis")

Command = tuple[Any, ...]
"""One Redis command: its name and arguments."""

Send = Callable[[Sequence[Command]], Awaitable[list[Any]]]

RETRY_DELAYS = (0.0, 0.05, 0.2, 0.5, 1.0, 2.0)
"""Pauses before each try of a batch whose connection broke (about 4 s in all)."""


class _Call:
    """One writer's commands, their replies once sent, and the wake-up that tells the
    writer they came (or that it now leads). Made once per write: slotted, and woken
    through a bare asyncio future rather than an `asyncio.Event` (no waiter queue, no
    coroutine to wait); an anyio event where the loop is not asyncio's."""

    __slots__ = ("_done", "abandoned", "commands", "error", "lead", "replies")

    def __init__(self, commands: Sequence[Command]) -> None:
        self.commands = commands
        self.replies: list[Any] | None = None
        self.error: BaseException | None = None
        self.lead = False
        self.abandoned = False
        self._done: asyncio.Future[None] | anyio.Event
        try:
            self._done = asyncio.get_running_loop().create_future()
        except RuntimeError:
            self._done = anyio.Event()

    def wake(self) -> None:
        done = self._done
        if isinstance(done, asyncio.Future):
            # A writer cancelled while waiting has cancelled its future with it.
            if not done.done():
                done.set_result(None)
        else:
            done.set()

    def wait(self) -> Awaitable[object]:
        done = self._done
        return done if isinstance(done, asyncio.Future) else done.wait()


class Batcher:
    """Sends queued command lists in shared pipelines, one pipeline at a time.

    Args:
        send: sends commands as one pipeline and returns one reply per command, with
            errors as exception objects in place of their reply.
        reload: loads the scripts again (after a `NOSCRIPT` reply).
        describe: names the server in connection errors.
        max_batch: the most commands one pipeline carries.
    """

    def __init__(
        self,
        send: Send,
        reload: Callable[[], Awaitable[None]],
        describe: Callable[[BaseException], Exception],
        *,
        max_batch: int = 2000,
    ) -> None:
        self._send = send
        self._reload = reload
        self._describe = describe
        self._max_batch = max_batch
        self._queue: list[_Call] = []
        self._busy = False
        self.pipelines = 0
        """Pipelines sent so far (for tests and benchmarks)."""

    async def call(self, commands: Sequence[Command]) -> list[Any]:
        """Send `commands` (in order, in one pipeline) and return their replies.

        Once queued, the commands are sent even if the caller is cancelled while it
        waits; a caller that leads a pipeline finishes sending it, shielded from
        cancellation, so the writers that share it are never abandoned.
        """
        call = _Call(commands)
        self._queue.append(call)
        if self._busy:
            try:
                await call.wait()
            except BaseException:
                # Cancelled while waiting. The commands stay queued and are sent by
                # whoever leads next; if we were just handed the lead, we take it.
                call.abandoned = True
                if call.lead and call.replies is None and call.error is None:
                    await self._lead_shielded(call)
                raise
        if call.replies is None and call.error is None:
            # We lead: nobody is sending, or the previous leader handed over to us.
            await self._lead_shielded(call)
        if call.error is not None:
            raise call.error
        assert call.replies is not None
        return call.replies

    async def _lead_shielded(self, call: _Call) -> None:
        with anyio.CancelScope(shield=True):
            self._busy = True
            try:
                await self._lead(call)
            finally:
                await self._hand_over()

    async def _hand_over(self) -> None:
        """Pass the lead to the first writer still waiting; send abandoned writes
        ourselves when nobody else is left to."""
        while self._queue:
            successor = next((c for c in self._queue if not c.abandoned), None)
            if successor is not None:
                successor.lead = True
                successor.wake()
                return
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            await self._flush(batch)
        self._busy = False

    async def _lead(self, own: _Call) -> None:
        while own.replies is None and own.error is None:
            batch: list[_Call] = []
            size = 0
            while self._queue and (
                not batch or size + len(self._queue[0].commands) <= self._max_batch
            ):
                call = self._queue.pop(0)
                batch.append(call)
                size += len(call.commands)
            await self._flush(batch)
            for call in batch:
                if call is not own:
                    call.wake()

    async def _flush(self, batch: list[_Call]) -> None:
        pending = batch
        reloaded = False
        for attempt, delay in enumerate(RETRY_DELAYS):
            if delay:
                await anyio.sleep(delay)
            commands = [c for call in pending for c in call.commands]
            try:
                replies = await self._send(commands)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                if attempt == len(RETRY_DELAYS) - 1:
                    error = self._describe(exc)
                    for call in pending:
                        call.error = error
                    return
                logger.warning("Redis connection lost (%s); sending the batch again", exc)
                continue
            except Exception as exc:
                for call in pending:
                    call.error = self._describe(exc)
                return
            self.pipelines += 1
            # Scripts are missing only after the server restarted or was flushed: look
            # for that once per batch, not once per writer.
            missing = not reloaded and any(isinstance(r, NoScriptError) for r in replies)
            again: list[_Call] = []
            position = 0
            for call in pending:
                mine = replies[position : position + len(call.commands)]
                position += len(call.commands)
                if missing and any(isinstance(r, NoScriptError) for r in mine):
                    again.append(call)
                else:
                    call.replies = mine
            if not again:
                return
            await self._reload()
            reloaded = True
            pending = again
        for call in pending:  # pragma: no cover - only after repeated NOSCRIPT
            call.error = self._describe(RuntimeError("scripts could not be loaded"))
