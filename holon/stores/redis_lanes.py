"""Pipelined connections for the Redis store: writes go out as they come, and replies are
matched to them, in order, as they arrive.

A lane is one connection of the store's own. A write (a short list of commands) is
queued and handed back a future; at the end of the event loop's turn everything queued
is packed and written in one go, so the writes of every run that took a step in that
turn share one system call and one trip (group commit). Nothing waits for a pipeline to
come back before the next goes out: the server works through one while this process
prepares the next. Replies are parsed in the connection's own callback, as they arrive,
and each write's future is resolved there, decoded by the writer's own function: no
task, coroutine or lock stands between a run and its reply.

A connection carries its writes in the order they were queued and the server applies
them in that order, so a run whose writes all go through one lane (the store picks the
lane from the run's id) has them applied in order, even one whose writer stopped waiting
(cancelled at a worker's shutdown) before the next was queued.

A reply whose text is not UTF-8 (a corrupt record) reaches the writer that asked for
it as an `UndecodableReply` in place of the reply; the connection and the other writes
of its pipeline carry on.

Every script is idempotent (commits by their commit id, lease acquisitions by their
request id): when the connection breaks, everything sent and not yet answered is sent
again, ahead of what is queued, on a new connection, after a short pause that grows on
each failure in a row. After a reply that says the scripts are missing (the server
restarted or was flushed), the scripts are loaded again and the writes that met it are
sent again. A server still loading its data after a restart refuses every command
(`LOADING`) without running it: the writes that met that are sent again, ahead of the
rest, after a pause that grows while it lasts (the lane holds its queue meanwhile, so a
run's writes keep their order).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from holon.stores.redis_batch import RETRY_DELAYS, Command
from holon.stores.redis_resp import ReplyReader, UndecodableReply, new_reader, pack_command

__all__ = ["Decode", "Lane"]

logger = logging.getLogger("holon.stores.redis")

Decode = Callable[[str, list[Any], int], Any]
"""A writer's reading of its replies: `(key, replies, first)`, its own replies starting
at `replies[first]`. Its result is the write's; an exception it raises is the write's."""

WAITAOF: Command = ("WAITAOF", 1, 0, 5000)
"""Sent after each pipeline when every write must reach the append-only file first."""

# A queued write: its commands packed, how many there are, the future its writer awaits
# (None for the lane's own script loads), its key and its decoding (None: the replies
# themselves). Packed when queued: the bytes are all a write needs to be sent, again if
# need be, and they are not among the objects the garbage collector walks while the
# write waits (the command tuples are, and are dropped at once).
_Write = tuple[bytes, int, "asyncio.Future[Any] | None", str | None, Decode | None]


class _Wire(asyncio.Protocol):
    """One connection of a lane: passes what it hears on to the lane while it is the
    lane's current connection (a closed one may still report its end later)."""

    __slots__ = ("lane", "transport", "writer")

    def __init__(self, lane: Lane, writer: asyncio.StreamWriter) -> None:
        self.lane = lane
        self.writer = writer
        """Kept while the connection is in use: a stream writer closes it when dropped."""
        self.transport = writer.transport

    def data_received(self, data: bytes) -> None:
        if self.lane._wire is self:
            self.lane._received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lane._wire is self:
            self.lane._lost(exc)


class Lane:
    """One pipelined connection at a time, opened when there is something to send.

    Args:
        connect: opens a connection (authenticated, on the right database) and returns
            its stream writer; the lane then reads from and writes to its transport
            directly.
        describe: the error a writer gets for a failure that is not a reply.
        reload: the commands that load every script (sent after a `NOSCRIPT` reply).
        max_batch: the most commands whose replies are handed out together (a
            pipeline); more queued in one turn are written at once all the same.
        check_ack: given, `WAITAOF` follows every pipeline and this turns its reply into
            the error every write of the pipeline gets instead of its own (None: fine).
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[asyncio.StreamWriter]],
        describe: Callable[[BaseException], Exception],
        reload: Sequence[Command],
        *,
        max_batch: int = 256,
        check_ack: Callable[[Any], Exception | None] | None = None,
    ) -> None:
        self._connect = connect
        self._describe = describe
        self._reload: _Write = (_pack(reload), len(reload), None, None, None)
        self._max_batch = max(1, max_batch)
        self._check_ack = check_ack
        self._wire: _Wire | None = None
        self._reader: ReplyReader = new_reader()
        self._queued: list[_Write] = []
        self._flush_scheduled = False
        self._sent: deque[tuple[list[_Write], int]] = deque()
        """Pipelines written and not yet answered, oldest first, with their reply count."""
        self._replies: list[Any] = []
        """Replies so far of the oldest pipeline in `_sent`."""
        self._expected = 0
        """Replies the oldest pipeline in `_sent` has."""
        self._failures = 0
        """Connections lost or refused in a row (none answered in between)."""
        self._reloads = 0
        """Script loads in a row with no pipeline since answered without `NOSCRIPT`."""
        self._loading = 0
        """Pipelines in a row refused because the server was loading its data."""
        self._holding = False
        """True while writes refused by a loading server wait to be sent again."""
        self._connecting: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        """The event loop of the writes, from the first until `close`."""
        self.pipelines = 0
        """Pipelines answered so far (for tests and benchmarks)."""

    # -- writing ------------------------------------------------------------------------

    def call(
        self, commands: Sequence[Command], key: str | None = None, decode: Decode | None = None
    ) -> asyncio.Future[Any]:
        """Queue `commands` (sent in order, in one pipeline) and return the future of
        their replies, or of what `decode(key, replies, first)` makes of them.

        Once queued, the commands are sent even if the writer stops waiting (the future
        is cancelled); they are applied before any write queued after them on this lane.
        """
        count = len(commands)
        payload = pack_command(commands[0]) if count == 1 else _pack(commands)
        # The loop is looked up once: asking for the running loop (as a bare `Future()`
        # does) costs a system call, to check the process has not forked.
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queued.append((payload, count, future, key, decode))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        """Write everything queued, as pipelines of at most `max_batch` commands."""
        self._flush_scheduled = False
        if self._holding:
            return  # `_resume` flushes once the pause for a loading server is over
        wire = self._wire
        if wire is None:
            self._start_connecting()
            return
        queued, self._queued = self._queued, []
        if not queued:
            return
        payload: list[bytes] = []
        batch: list[_Write] = []
        size = 0
        for write in queued:
            count = write[1]
            if size and size + count > self._max_batch:
                self._close_batch(batch, size, payload)
                batch, size = [], 0
            batch.append(write)
            size += count
            payload.append(write[0])
        self._close_batch(batch, size, payload)
        wire.transport.write(b"".join(payload))

    def _close_batch(self, batch: list[_Write], size: int, payload: list[bytes]) -> None:
        if self._check_ack is not None:
            payload.append(_PACKED_WAITAOF)
            size += 1
        if not self._sent:
            self._expected = size
        self._sent.append((batch, size))

    # -- reading ------------------------------------------------------------------------

    def _received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        replies = self._replies
        while True:
            try:
                reply = reader.gets()
            except UnicodeDecodeError as exc:
                # Stored bytes that are not text (a corrupt record): read whole, so the
                # stream is intact; the caller that asked for them gets the error.
                reply = UndecodableReply(f"the reply is not UTF-8 text ({exc})")
            except Exception as exc:  # a protocol error: the stream cannot be trusted
                self._abort(exc)
                return
            if reply is False:
                return
            if not self._sent:
                self._abort(RedisConnectionError(f"a reply nothing asked for: {reply!r}"))
                return
            replies.append(reply)
            if len(replies) >= self._expected:
                batch, _ = self._sent.popleft()
                self._replies = []
                self._expected = self._sent[0][1] if self._sent else 0
                self._answer(batch, replies)
                replies = self._replies

    def _answer(self, batch: list[_Write], replies: list[Any]) -> None:
        """Hand each write of an answered pipeline its replies."""
        self.pipelines += 1
        self._failures = 0
        if self._check_ack is not None:
            error = self._check_ack(replies.pop())
            if error is not None:
                for _, _, future, _, _ in batch:
                    if future is not None and not future.done():
                        future.set_exception(error)
                return
        # Scripts are missing, or the server is loading its data, only after the server
        # restarted or was flushed: look for that once per pipeline, not once per write.
        refused = ResponseError in map(type, replies)
        missing = refused and _has_refusal(replies, 0, len(replies), "NOSCRIPT")
        loading = refused and _has_refusal(replies, 0, len(replies), "LOADING")
        again: list[_Write] = []
        not_run: list[_Write] = []
        position = 0
        for write in batch:
            _, count, future, key, decode = write
            if loading and _has_refusal(replies, position, count, "LOADING"):
                not_run.append(write)
            elif missing and _has_refusal(replies, position, count, "NOSCRIPT"):
                again.append(write)
            elif future is None or future.done():
                pass  # our own script loads, or a writer that stopped waiting
            elif decode is None:
                future.set_result(replies[position : position + count])
            else:
                try:
                    future.set_result(decode(key, replies, position))  # type: ignore[arg-type]
                except Exception as exc:
                    future.set_exception(exc)
            position += count
        if not_run:
            self._hold(not_run)
        elif not loading:
            self._loading = 0
        if not again:
            self._reloads = 0
            return
        self._reloads += 1
        if self._reloads > 2:
            error = self._describe(RuntimeError("scripts could not be loaded"))
            for _, _, future, _, _ in again:
                if future is not None and not future.done():
                    future.set_exception(error)
            return
        # Load the scripts, then send again what met their absence, ahead of the rest.
        self._queued[:0] = [self._reload, *again]
        self._schedule_flush()

    def _hold(self, writes: list[_Write]) -> None:
        """Send `writes`, which a loading server refused unrun, again after a pause,
        ahead of everything queued; give up after the pauses of a broken connection."""
        if self._loading >= len(RETRY_DELAYS) or self._loop is None:
            self._loading = 0
            error = self._describe(RuntimeError("the server stayed busy loading its data"))
            for _, _, future, _, _ in writes:
                if future is not None and not future.done():
                    future.set_exception(error)
            return
        delay = max(RETRY_DELAYS[self._loading], 0.01)
        self._loading += 1
        logger.warning("Redis is loading its data; sending %d writes again", len(writes))
        self._queued[:0] = writes
        if not self._holding:
            self._holding = True
            self._loop.call_later(delay, self._resume)

    def _resume(self) -> None:
        self._holding = False
        self._schedule_flush()

    # -- the connection -----------------------------------------------------------------

    def _lost(self, exc: Exception | None) -> None:
        self._wire = None
        if self._sent:
            self._failures += 1
            logger.warning(
                "Redis connection lost (%s); sending what was unanswered again",
                exc or "closed by the server",
            )
        else:  # idle (a server's client timeout, say): the next write connects at once
            logger.info("Redis connection closed (%s)", exc or "by the server")
        self._requeue_sent()
        if self._queued:
            self._start_connecting(exc)

    def _abort(self, exc: Exception) -> None:
        """Drop a connection whose byte stream cannot be trusted, and send everything
        unanswered again on a new one."""
        wire = self._wire
        if wire is not None:
            wire.transport.abort()
            self._lost(exc)

    def _requeue_sent(self) -> None:
        unanswered = [write for batch, _ in self._sent for write in batch]
        self._sent.clear()
        self._replies = []
        self._expected = 0
        self._reader = new_reader()
        self._queued[:0] = unanswered

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _start_connecting(self, cause: BaseException | None = None) -> None:
        if (self._connecting is None or self._connecting.done()) and self._loop is not None:
            self._connecting = self._loop.create_task(self._connect_with_retries(cause))

    async def _connect_with_retries(self, cause: BaseException | None) -> None:
        while self._queued:
            if self._failures >= len(RETRY_DELAYS):
                self._failures = 0
                self._fail_queued(self._describe(cause or RedisConnectionError("no connection")))
                return
            delay = RETRY_DELAYS[self._failures]
            if delay:
                await asyncio.sleep(delay)
            try:
                writer = await self._connect()
            except AuthenticationError as exc:
                self._fail_queued(self._describe(exc))
                return
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                self._failures += 1
                cause = exc
                logger.warning("Redis connection failed (%s); trying again", exc)
                continue
            except Exception as exc:  # refused for good: authentication, no such db
                self._fail_queued(self._describe(exc))
                return
            self._reader = new_reader()
            self._wire = _Wire(self, writer)
            writer.transport.set_protocol(self._wire)
            self._connecting = None
            self._flush()
            return

    def _fail_queued(self, error: Exception) -> None:
        queued, self._queued = self._queued, []
        for _, _, future, _, _ in queued:
            if future is not None and not future.done():
                future.set_exception(error)

    def close(self, error: Exception) -> None:
        """Close the connection; writes unanswered get `error` (their outcome is unknown).
        A write queued later opens a new connection."""
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
        wire, self._wire = self._wire, None
        self._requeue_sent()
        self._fail_queued(error)
        self._loop = None
        self._flush_scheduled = False
        if wire is not None:
            wire.transport.close()


def _pack(commands: Sequence[Command]) -> bytes:
    return b"".join([pack_command(command) for command in commands])


_PACKED_WAITAOF = pack_command(WAITAOF)


def _has_refusal(replies: list[Any], first: int, count: int, code: str) -> bool:
    """Whether one of the replies is an error reply starting with `code`."""
    return any(
        isinstance(reply, ResponseError) and str(reply).startswith(code)
        for reply in replies[first : first + count]
    )
