"""Group commit for the Redis store through a redis-py client: concurrent writes share
pipelines.

This is the store's way where it sends through a client: on a Cluster (the client's
cluster pipeline routes each command to its node) and with a client handed in (fakeredis
in tests). On a single server the store writes on pipelined connections of its own
instead (`redis_lanes`).

Every write of the Redis store is a short list of commands (an `EVALSHA` and, on a
Cluster, a few index hints). Writers queue their commands; a writer who finds no
pipeline in flight becomes a *leader*, sends everything queued as one pipeline, hands
each writer its replies, and passes the lead to the first writer that queued meanwhile.
One writer alone pays one round trip per write; a thousand concurrent writers share a
few. One pipeline is in flight at a time and the queue is sent oldest first, so writes
are applied in the order they were made, even one whose writer stopped waiting.

A pipeline one of whose replies is not UTF-8 text (a corrupt record) is sent again one
command at a time, so that only the write that asked for it gets `UndecodableReply`.

Every script is idempotent (commits by their commit id, lease acquisitions by their
request id), so a batch whose connection broke before the replies came back is sent
again as a whole.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, overload

import anyio
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from holon.stores.redis_resp import UndecodableReply

__all__ = ["RETRY_DELAYS", "Batcher", "Command"]

logger = logging.getLogger("holon.stores.redis")

Command = tuple[Any, ...]
"""One Redis command: its name and arguments."""

Send = Callable[[Sequence[Command]], Awaitable[list[Any]]]

T = TypeVar("T")

RETRY_DELAYS = (0.0, 0.05, 0.2, 0.5, 1.0, 2.0)
"""Pauses before each try of a batch whose connection broke (about 4 s in all)."""


class _Call:
    """One writer's commands, their replies once sent, and the wake-up that tells the
    writer they came (or that it now leads). Slotted, and woken through a bare asyncio
    future rather than an `asyncio.Event` (no waiter queue, no coroutine to wait). The
    Redis client runs on asyncio only, and so does this."""

    __slots__ = ("_done", "_loop", "abandoned", "commands", "error", "first", "lead", "replies")

    def __init__(self, commands: Sequence[Command], loop: asyncio.AbstractEventLoop) -> None:
        self.commands = commands
        self.replies: list[Any] | None = None
        """The whole pipeline's replies once sent; this writer's start at `first`."""
        self.first = 0
        self.error: BaseException | None = None
        self.lead = False
        self.abandoned = False
        self._loop = loop
        self._done: asyncio.Future[None] = loop.create_future()

    def settle(self, replies: list[Any] | None, error: BaseException | None, first: int) -> None:
        self.replies, self.error, self.first = replies, error, first
        self.commands = ()  # sent: not kept while the writer waits its turn to resume

    def wake(self) -> None:
        # A writer cancelled while waiting has cancelled its future with it.
        if not self._done.done():
            self._done.set_result(None)

    def wait(self) -> Awaitable[object]:
        """Wait to be woken. A writer woken to lead whose own commands went in another
        leader's pipeline waits again, on a fresh wake-up (the caller checks, without
        yielding, that it has neither its replies nor the lead)."""
        done = self._done
        if done.done():
            done = self._done = self._loop.create_future()
        return done


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
        self._leading = False
        """Whether a writer leads a pipeline, or is told to lead and about to."""
        self.pipelines = 0
        """Pipelines sent so far (for tests and benchmarks)."""

    @overload
    async def call(self, commands: Sequence[Command], key: str | None = None) -> list[Any]: ...

    @overload
    async def call(
        self, commands: Sequence[Command], key: str, then: Callable[[str, list[Any], int], T]
    ) -> T: ...

    async def call(
        self,
        commands: Sequence[Command],
        key: str | None = None,
        then: Callable[[str, list[Any], int], Any] | None = None,
    ) -> Any:
        """Send `commands` (in order, in one pipeline) and return their replies, or what
        `then(key, replies, first)` makes of them (the pipeline's replies, this call's
        from `first` on): the writer's own decoding, done here rather than in a
        coroutine of its own around this one.

        Once queued, the commands are sent even if the caller is cancelled while it
        waits, and before any write queued after them; a caller that leads a pipeline
        finishes sending it, shielded from cancellation, so the writers that share it
        are never abandoned.
        """
        call = _Call(commands, asyncio.get_running_loop())
        self._queue.append(call)
        if not self._leading:
            self._leading = True
            call.lead = True
        while True:
            if call.lead:
                # Told to lead (or leading from the start): even when another leader
                # already took our commands, the lead is passed on, not dropped.
                await self._lead_shielded(call)
                continue
            if call.replies is not None or call.error is not None:  # settled
                break
            try:
                await call.wait()
            except BaseException:
                # Cancelled while waiting. The commands stay queued and are sent by
                # whoever leads next; if we were just handed the lead, we take it.
                call.abandoned = True
                if call.lead:
                    await self._lead_shielded(call)
                raise
        if call.error is not None:
            raise call.error
        replies, first = call.replies, call.first
        assert replies is not None
        if then is not None:
            assert key is not None
            return then(key, replies, first)
        return replies[first : first + len(commands)]

    async def _lead_shielded(self, call: _Call) -> None:
        """Send one pipeline of what is queued (the leader's own commands among them,
        unless another leader took them), then pass the lead on."""
        call.lead = False
        with anyio.CancelScope(shield=True):
            try:
                batch = self._take()
                if batch:
                    await self._flush(batch)
                    for queued in batch:
                        if queued is not call:
                            queued.wake()
            finally:
                await self._hand_over()

    def _take(self) -> list[_Call]:
        """Queued writes for one pipeline, oldest first, at most `max_batch` commands."""
        size = 0
        count = 0
        for queued in self._queue:
            if count and size + len(queued.commands) > self._max_batch:
                break
            size += len(queued.commands)
            count += 1
        batch, self._queue = self._queue[:count], self._queue[count:]
        return batch

    async def _hand_over(self) -> None:
        """Pass the lead to the first writer still waiting; send the writes whose
        writers all left ourselves, when nobody else is left to."""
        while self._queue:
            successor = next((c for c in self._queue if not c.abandoned), None)
            if successor is not None:
                successor.lead = True
                successor.wake()
                return
            await self._flush(self._take())
        self._leading = False

    async def _isolate(self, pending: list[_Call]) -> None:
        """A reply of the pipeline held text that is not UTF-8 (a corrupt record), and
        the client cannot say whose: each command is sent again alone (every command
        is idempotent), so that only the one that asked for it gets `UndecodableReply`
        in place of its reply."""
        for call in pending:
            replies: list[Any] = []
            try:
                for command in call.commands:
                    try:
                        (reply,) = await self._send([command])
                    except UnicodeDecodeError as exc:
                        reply = exc
                    if isinstance(reply, UnicodeDecodeError):
                        reply = UndecodableReply(f"the reply is not UTF-8 text ({reply})")
                    replies.append(reply)
            except Exception as exc:
                call.settle(None, self._describe(exc), 0)
                continue
            self.pipelines += 1
            call.settle(replies, None, 0)

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
                        call.settle(None, error, 0)
                    return
                logger.warning("Redis connection lost (%s); sending the batch again", exc)
                continue
            except UnicodeDecodeError:
                await self._isolate(pending)
                return
            except Exception as exc:
                for call in pending:
                    call.settle(None, self._describe(exc), 0)
                return
            if UnicodeDecodeError in map(type, replies):  # a Cluster's pipeline says so
                await self._isolate(pending)
                return
            self.pipelines += 1
            # Scripts are missing only after the server restarted or was flushed: look
            # for that once per batch, not once per writer.
            missing = not reloaded and NoScriptError in map(type, replies)
            again: list[_Call] = []
            position = 0
            for call in pending:
                count = len(call.commands)
                if missing and NoScriptError in map(type, replies[position : position + count]):
                    again.append(call)
                else:
                    call.settle(replies, None, position)
                position += count
            if not again:
                return
            await self._reload()
            reloaded = True
            pending = again
        for call in pending:  # pragma: no cover - only after repeated NOSCRIPT
            call.settle(None, self._describe(RuntimeError("scripts could not be loaded")), 0)
