"""The inboxes of a Redis store: events sent before anyone waited for them, kept until
they are delivered or expire.

An inbox is two keys with one hash tag (so that a Cluster keeps them on one node): a
hash of the kept events' documents by event id, and a sorted set of the same ids scored
by expiry time. A short script keeps an event, so that the check for a duplicate, the
count against the bound and the write are one step."""

from __future__ import annotations

import math
from typing import Any

from redis.exceptions import RedisError

from holon.stores import _codec
from holon.stores.redis_codec import _tag
from holon.stores.redis_reads import RedisReads

__all__ = ["RedisInbox"]

# KEYS: the documents (hash), the expiry times (zset). ARGV: event id, document, expiry,
# the most events kept, now (the caller's clock: the keys' own time to live is counted
# from it, so that they go when their last event expires).
# Returns 1 when the event is kept (now or before), 0 when the inbox is full.
_KEEP = """
local docs, expiry = KEYS[1], KEYS[2]
local gone = redis.call('ZRANGE', expiry, '-inf', ARGV[5], 'BYSCORE')
for _, id in ipairs(gone) do redis.call('HDEL', docs, id) end
redis.call('ZREMRANGEBYSCORE', expiry, '-inf', ARGV[5])
if redis.call('HEXISTS', docs, ARGV[1]) == 1 then return 1 end
if redis.call('HLEN', docs) >= tonumber(ARGV[4]) then return 0 end
redis.call('HSET', docs, ARGV[1], ARGV[2])
redis.call('ZADD', expiry, ARGV[3], ARGV[1])
local last = redis.call('ZRANGE', expiry, -1, -1, 'WITHSCORES')
local ttl = math.ceil(tonumber(last[2]) - tonumber(ARGV[5])) + 1
redis.call('EXPIRE', docs, ttl)
redis.call('EXPIRE', expiry, ttl)
return 1
"""


class RedisInbox(RedisReads):
    """Kept events (see `Store.keep_event`)."""

    def _inbox_keys(self, inbox: str) -> tuple[str, str]:
        tag = _tag(inbox)
        return f"{self.key_prefix}inbox:{{{tag}}}", f"{self.key_prefix}inbox-at:{{{tag}}}"

    async def keep_event(
        self,
        inbox: str,
        event_id: str,
        document: dict[str, Any],
        *,
        expires_at: float,
        most: int,
        now: float,
    ) -> bool:
        docs, expiry = self._inbox_keys(inbox)
        text = _codec.dump({**document, "kept_at": now})
        try:
            kept = await self._client.eval(
                _KEEP, 2, docs, expiry, event_id, text, repr(expires_at), most, repr(now)
            )
        except RedisError as exc:
            raise self._describe(exc, docs) from None
        return bool(kept)

    async def kept_events(self, inbox: str, now: float) -> list[dict[str, Any]]:
        docs, expiry = self._inbox_keys(inbox)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.zrange(expiry, f"({now!r}", "+inf", byscore=True)
                pipe.hgetall(docs)
                live, stored = await pipe.execute()
        except RedisError as exc:
            raise self._describe(exc, docs) from None
        events = [
            _codec.load(stored[event_id], run_id="-", what=f"kept event {event_id}")
            for event_id in live
            if event_id in stored
        ]
        events.sort(key=lambda doc: (doc.pop("kept_at", math.inf), doc.get("event_id", "")))
        return events

    async def drop_kept_event(self, inbox: str, event_id: str) -> None:
        docs, expiry = self._inbox_keys(inbox)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.hdel(docs, event_id)
                pipe.zrem(expiry, event_id)
                await pipe.execute()
        except RedisError as exc:
            raise self._describe(exc, docs) from None
