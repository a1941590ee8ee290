"""Redis's wire protocol (RESP2) for the store's own connections: commands packed into
bytes and replies parsed from bytes as they arrive, by hiredis when it is installed and
by the plain-Python fallback here when it is not (same interface, same results)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, Protocol

from redis.exceptions import ResponseError

__all__ = ["ReplyReader", "UndecodableReply", "new_reader", "pack_command"]


class UndecodableReply(Exception):
    """Stands in the replies for one whose text is not UTF-8: handed to the one caller
    that asked for it (a corrupt record is that run's fault alone), while the
    connection, whose byte stream is intact, carries on."""


class ReplyReader(Protocol):
    """hiredis's `Reader` interface: bytes in, one reply out per `gets()` (False while
    the next reply is incomplete). Errors come back as `ResponseError` objects.

    A reply holding text that is not UTF-8 raises `UnicodeDecodeError` from `gets()`
    once it has been read whole, so the next `gets()` starts at the next reply."""

    def feed(self, data: bytes, /) -> None: ...

    def gets(self) -> Any: ...


class _Incomplete(Exception):
    """The buffer ends inside a reply."""


class PlainReader:
    """RESP2 replies parsed in Python, text decoded as UTF-8 (as `decode_responses`)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._position = 0
        self._undecodable: UnicodeDecodeError | None = None

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def gets(self) -> Any:
        if self._position >= len(self._buffer):
            return False
        start = self._position
        self._undecodable = None
        try:
            reply = self._parse()
        except _Incomplete:
            self._position = start
            return False
        # Drop what was consumed once it is worth the copy.
        if self._position > 65536:
            del self._buffer[: self._position]
            self._position = 0
        if self._undecodable is not None:
            # Read whole, as hiredis does: the stream stays in step with the replies.
            raise self._undecodable
        return reply

    def _line(self) -> bytes:
        end = self._buffer.find(b"\r\n", self._position)
        if end < 0:
            raise _Incomplete
        line = bytes(self._buffer[self._position : end])
        self._position = end + 2
        return line

    def _parse(self) -> Any:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return ResponseError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            end = self._position + size
            if end + 2 > len(self._buffer):
                raise _Incomplete
            data = bytes(self._buffer[self._position : end])
            self._position = end + 2
            try:
                return data.decode()
            except UnicodeDecodeError as exc:
                self._undecodable = self._undecodable or exc
                return None
        if kind == b"*":
            count = int(rest)
            if count < 0:
                return None
            return [self._parse() for _ in range(count)]
        raise ResponseError(f"Protocol error: unexpected reply type {kind!r}")


def _encode(arg: Any) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode()
    if isinstance(arg, bool):
        raise TypeError(f"a Redis command argument cannot be a bool ({arg!r})")
    if isinstance(arg, int | float):
        return repr(arg).encode()
    raise TypeError(f"a Redis command argument must be text or a number, not {arg!r}")


def plain_pack_command(command: Sequence[Any]) -> bytes:
    """One command as RESP2 bytes (an array of bulk strings)."""
    parts = [b"*%d\r\n" % len(command)]
    for arg in command:
        data = _encode(arg)
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


hiredis: Any
try:  # hiredis packs commands and parses replies in C when it is installed
    hiredis = importlib.import_module("hiredis")
except ImportError:  # pragma: no cover - depends on the optional extra
    hiredis = None

pack_command: Any = plain_pack_command if hiredis is None else hiredis.pack_command
"""Packs one command (a sequence of text and numbers) into RESP2 bytes."""


def new_reader() -> ReplyReader:
    """A reply parser for one connection's byte stream."""
    if hiredis is None:  # pragma: no cover - depends on the optional extra
        return PlainReader()
    reader: ReplyReader = hiredis.Reader(encoding="utf-8", replyError=ResponseError)
    return reader
