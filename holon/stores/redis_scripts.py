"""The Lua scripts of the Redis store: every write that must be atomic is one of these.

Each script touches the keys of one run only, which share one hash tag, so it runs in
one slot and works on Redis Cluster:

| key | type | holds |
| --- | --- | --- |
| `KEYS[1]` `{prefix}run:{<id>}` | hash | the run's small fields (below) |
| `KEYS[2]` `...:b` | string | the body, JSON |
| `KEYS[3]` `...:i` | string | the input, JSON, when too long to sit in the hash |
| `KEYS[4]` `...:r` | hash | step results, JSON by step name |
| `KEYS[5]` `...:t` | list | the timeline, one JSON event per entry, oldest first |

The hash stays small (every value short) so Redis keeps it in its compact encoding:
`wf`, `ver` (workflow and the version it started on), `av` (the version it moved to, when
a newer definition took it over), `st` (status), `in` (a short input), `seq`, `es`
(checkpoint and timeline sequence numbers), `tb` (timeline events trimmed away), `ctl`
(control request), `own`, `lx`, `ln`, `lr` (lease owner, expiry, acquiring request id,
recovered flag), `f` (last fencing token), `wk` (wake-up time), `ca`, `ua` (created and
updated), `lc` (id of the last commit applied), `wx` (wait keys, `\\x1f`-separated),
`an` (id of the last timeline append applied).

On a single server the scripts also keep the global indexes exact: the index key prefix
then comes first in the header and the scripts reach the index keys by name (a single
server allows it). On a Cluster the store passes an empty prefix, the scripts leave the
indexes alone, and the store maintains them as hints in the same pipeline instead.

Arguments travel packed, to keep the client's per-command cost low: a header of short
fields separated by `\\x1f`, and lists of JSON texts separated by `\\n` (compact JSON
never holds a raw newline). Every script validates everything before its first write (a
Lua error after a write is not rolled back); refusals are error replies `HOLON <CODE>`.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

from holon.stores.redis_lua import COMMON

__all__ = ["SCRIPTS", "Script"]


@dataclass(frozen=True)
class Script:
    """A Lua script and its SHA1, the name `EVALSHA` calls it by."""

    name: str
    source: str

    @functools.cached_property
    def sha(self) -> str:
        return hashlib.sha1(self.source.encode()).hexdigest()


# ARGV: header (ip, id, wf, ver, status, wake, created, updated, cap), input, body, events
_CREATE = r"""
local run, body, input, tl = KEYS[1], KEYS[2], KEYS[3], KEYS[5]
if redis.call('EXISTS', run) == 1 then return 0 end
local h = split(ARGV[1], '\31')
local ip, id = h[1], h[2]
local bad = check_indexes(ip, h[3], h[4], nil, h[5], {})
if bad then return bad end
if ip ~= '' then
  local sbad = check_type(ip .. 'workflows', 'set')
  if type(sbad) == 'table' then return sbad end
end
redis.call('HSET', run, 'wf', h[3], 'ver', h[4], 'st', h[5], 'seq', 0, 'es', 0, 'f', 0,
  'ca', h[7], 'ua', h[8])
if h[6] ~= '' then redis.call('HSET', run, 'wk', h[6]) end
if string.len(ARGV[2]) <= 48 then
  redis.call('HSET', run, 'in', ARGV[2])
else
  redis.call('SET', input, ARGV[2])
end
redis.call('SET', body, ARGV[3])
redis.call('DEL', tl)
local events = lines(ARGV[4])
append(run, tl, events, tonumber(h[9]))
redis.call('HSET', run, 'es', #events)
if ip ~= '' then
  redis.call('SADD', ip .. 'workflows', h[3])
  redis.call('SADD', idx(ip, 'versions', h[3]), h[4])
end
reindex(ip, id, run, nil)
return 1
"""

# ARGV: header (ip, id, owner, ttl, now, lease mode, request id, timers 0/1, limit or '')
# Returns {1, token, recovered} or {0, status, lease expiry or '', wake or ''}; the status
# is 'full' when `limit` runs of the workflow already hold a live lease while running.
_ACQUIRE = r"""
local run = KEYS[1]
local ok = check_type(run, 'hash')
if not ok then return redis.error_reply('HOLON NOTFOUND') end
if type(ok) == 'table' then return ok end
local h = split(ARGV[1], '\31')
local ip, id, owner, ttl, now, nonce = h[1], h[2], h[3], tonumber(h[4]), h[5], h[7]
local r = redis.call('HMGET', run, 'st', 'own', 'lx', 'f', 'ln', 'wk', 'lr', 'wf', 'ver', 'av')
local st, own, lx, wk = r[1], r[2], r[3], r[6]
local lnow = lease_now(h[6], now)
if own and tonumber(lx) > lnow then
  if r[5] == nonce then return {1, tonumber(r[4]), tonumber(r[7] or 0)} end
  return {0, st, lx, wk or ''}
end
local runnable = st == 'queued' or st == 'running'
if not runnable and h[8] == '1' and st == 'waiting' and wk then
  runnable = tonumber(wk) <= tonumber(now)
end
if not runnable then return {0, st, lx or '', wk or ''} end
if h[9] and h[9] ~= '' and leased(ip, r[8] or '', lnow) >= tonumber(h[9]) then
  return {0, 'full', lx or '', wk or ''}
end
local after = st
if st == 'queued' then after = 'running' end
local bad = check_indexes(ip, r[8] or '', r[10] or r[9] or '', st, after, {})
if bad then return bad end
-- The next token is above the last one and at least the server's clock in microseconds:
-- after a restart from older data (the last tokens lost) it still never goes back.
local t = redis.call('TIME')
local token = math.max(tonumber(r[4]) + 1, tonumber(t[1]) * 1000000 + tonumber(t[2]))
local recovered = 0
if st == 'running' then recovered = 1 end
redis.call('HSET', run, 'f', string.format('%.0f', token), 'own', owner,
  'lx', string.format('%.6f', lnow + ttl), 'ln', nonce, 'lr', recovered)
if st == 'queued' then redis.call('HSET', run, 'st', 'running') end
reindex(ip, id, run, st)
return {1, token, recovered}
"""

# ARGV: header (ip, id, token, ttl, now, lease mode). Returns the control request or false.
_RENEW = r"""
local run = KEYS[1]
local ok = check_type(run, 'hash')
if not ok then return redis.error_reply('HOLON NOTFOUND') end
if type(ok) == 'table' then return ok end
local h = split(ARGV[1], '\31')
local r = redis.call('HMGET', run, 'own', 'f', 'ctl', 'wf', 'ver', 'av')
if not r[1] or r[2] ~= h[3] then
  return redis.error_reply('HOLON STALE ' .. (r[1] and r[2] or 'none (released)'))
end
local lease = nil
if h[1] ~= '' then
  lease = cidx(h[1], 'lease', r[4] or '', r[6] or r[5] or '')
  local bad = check_type(lease, 'zset')
  if type(bad) == 'table' then return bad end
end
local lx = string.format('%.6f', lease_now(h[6], h[5]) + tonumber(h[4]))
redis.call('HSET', run, 'lx', lx)
if lease then redis.call('ZADD', lease, lx, h[2]) end
return r[3] or false
"""

# ARGV: header (ip, id, token). Returns {status, workflow} when released, else 0.
_RELEASE = r"""
local run = KEYS[1]
local ok = check_type(run, 'hash')
if not ok or type(ok) == 'table' then return 0 end
local h = split(ARGV[1], '\31')
local r = redis.call('HMGET', run, 'own', 'f', 'st', 'wf', 'ver', 'av')
if not r[1] or r[2] ~= h[3] then return 0 end
local av = r[6] or r[5] or ''
local bad = check_indexes(h[1], r[4] or '', av, r[3], r[3], {})
if bad then return bad end
redis.call('HDEL', run, 'own', 'lx', 'ln', 'lr')
reindex(h[1], h[2], run, r[3])
return {r[3], r[4] or '', av}
"""

# ARGV: header (ip, id, token or '', expected seq, commit id, status, wake or '', at,
# release 0/1, clear control 0/1, timeline cap, expiry of a finished run or '', wait keys
# given 0/1, number of results, of events, of wait keys, the version the run moves to or
# ''), body, then the results (name,
# JSON), the events (JSON each) and the wait keys. The short arguments travel as one:
# each argument costs the client a length header to format, on every step.
# Returns {seq, event_seq, control or false}, and the wait keys it had before when they
# were given (the client unindexes them on a Cluster).
_COMMIT = r"""
local run, body, res, tl = KEYS[1], KEYS[2], KEYS[4], KEYS[5]
local h = split(ARGV[1], '\31')
local ip, id, token, expected, nonce = h[1], h[2], h[3], tonumber(h[4]), h[5]
local r = redis.pcall('HMGET', run, 'seq', 'f', 'own', 'es', 'lc', 'ctl', 'st', 'wk', 'wf',
  'wx')
if r['err'] then
  return redis.error_reply('HOLON WRONGTYPE ' .. run .. ' holds a ' ..
    redis.call('TYPE', run)['ok'] .. ', not a hash')
end
if not r[1] then
  if redis.call('EXISTS', run) == 0 then return redis.error_reply('HOLON NOTFOUND') end
  return redis.error_reply('HOLON WRONGTYPE ' .. run .. ' holds a hash without a sequence')
end
local seq = tonumber(r[1])
if r[5] == nonce and seq == expected + 1 then
  return {seq, tonumber(r[4]), r[6] or false}
end
if token ~= '' and (not r[3] or r[2] ~= token) then
  return redis.error_reply('HOLON STALE ' .. (r[3] and r[2] or 'none (released)'))
end
if seq ~= expected then
  return redis.error_reply(string.format('HOLON SEQ %d %d', seq, expected))
end
local nres, nev, nkeys = tonumber(h[14]), tonumber(h[15]), tonumber(h[16])
local first_event = 3 + 2 * nres
local first_key = first_event + nev
if nres > 0 then
  local rok = check_type(res, 'hash')
  if type(rok) == 'table' then return rok end
end
local status, wake, given = h[6], h[7], h[13] == '1'
local new_keys = {}
for j = 0, nkeys - 1 do new_keys[j + 1] = ARGV[first_key + j] end
local moving = h[17] ~= ''
local reindexing = r[7] ~= status or h[9] == '1' or status == 'waiting' or r[8] or moving
local old_av = nil
if ip ~= '' and (reindexing or given) then
  local v = redis.call('HMGET', run, 'ver', 'av')
  old_av = v[2] or v[1] or ''
  local av = old_av
  if moving then av = h[17] end
  local touched = {}
  for _, k in ipairs(new_keys) do touched[#touched + 1] = k end
  if given and r[10] then
    for _, k in ipairs(split(r[10], '\31')) do touched[#touched + 1] = k end
  end
  local bad = check_indexes(ip, r[9] or '', av, r[7], status, touched)
  if bad then return bad end
  if av ~= old_av then
    bad = check_indexes(ip, r[9] or '', old_av, r[7], r[7], {})
    if bad then return bad end
  end
  if h[12] ~= '' then
    local ebad = check_type(ip .. 'expiry', 'zset')
    if type(ebad) == 'table' then return ebad end
  end
end
-- The first write doubles as the timeline's type check: nothing is written if it fails.
if nev > 0 then
  local length = redis.pcall('RPUSH', tl, unpack(ARGV, first_event, first_key - 1))
  if type(length) == 'table' then
    return redis.error_reply('HOLON WRONGTYPE ' .. tl .. ' holds a ' ..
      redis.call('TYPE', tl)['ok'] .. ', not a list')
  end
  local cap = tonumber(h[11])
  if cap > 0 and length > cap then
    redis.call('LTRIM', tl, -cap, -1)
    redis.call('HINCRBY', run, 'tb', length - cap)
  end
end
local es = tonumber(r[4]) + nev
if wake ~= '' then
  redis.call('HSET', run, 'st', status, 'seq', seq + 1, 'es', es, 'ua', h[8], 'lc', nonce,
    'wk', wake)
else
  redis.call('HSET', run, 'st', status, 'seq', seq + 1, 'es', es, 'ua', h[8], 'lc', nonce)
  if r[8] then redis.call('HDEL', run, 'wk') end
end
redis.call('SET', body, ARGV[2])
if h[9] == '1' then redis.call('HDEL', run, 'own', 'lx', 'ln', 'lr') end
if h[10] == '1' and r[6] then redis.call('HDEL', run, 'ctl') end
if nres > 0 then redis.call('HSET', res, unpack(ARGV, 3, first_event - 1)) end
local before = {}
if given then before = set_wait_keys(ip, id, run, new_keys) end
if moving then
  if ip ~= '' and old_av ~= h[17] then
    -- Out of the claim indexes of the version it leaves; `reindex` puts it in the new.
    for _, kind in ipairs({'ready', 'lease', 'timer'}) do
      redis.call('ZREM', cidx(ip, kind, r[9] or '', old_av), id)
    end
    redis.call('SADD', idx(ip, 'versions', r[9] or ''), h[17])
  end
  redis.call('HSET', run, 'av', h[17])
end
if reindexing then reindex(ip, id, run, r[7]) end
if ip ~= '' and h[12] ~= '' then
  redis.call('ZADD', ip .. 'expiry', h[12], id)
end
local ctl = false
if h[10] ~= '1' then ctl = r[6] or false end
if given then return {seq + 1, es, ctl, before} end
return {seq + 1, es, ctl}
"""

# ARGV: header (ip, id), control JSON
_REQUEST = r"""
local run = KEYS[1]
local ok = check_type(run, 'hash')
if not ok then return redis.error_reply('HOLON NOTFOUND') end
if type(ok) == 'table' then return ok end
redis.call('HSET', run, 'ctl', ARGV[2])
return 1
"""

# KEYS: run, timeline. ARGV: header (ip, id, request id, timeline cap), then the events
# (JSON each). Adds to the timeline alone; `an` remembers the last request applied, so
# sending it again (after a lost connection) appends nothing more. Returns the new es.
_APPEND = r"""
local run, tl = KEYS[1], KEYS[2]
local ok = check_type(run, 'hash')
if not ok then return redis.error_reply('HOLON NOTFOUND') end
if type(ok) == 'table' then return ok end
local h = split(ARGV[1], '\31')
if redis.call('HGET', run, 'an') == h[3] then
  return tonumber(redis.call('HGET', run, 'es'))
end
local tok = check_type(tl, 'list')
if type(tok) == 'table' then return tok end
local events = {}
for i = 2, #ARGV do events[#events + 1] = ARGV[i] end
append(run, tl, events, tonumber(h[4]))
redis.call('HSET', run, 'an', h[3])
return redis.call('HINCRBY', run, 'es', #events)
"""

# ARGV: header (ip, id, at, request id, timeline cap, max value bytes), body, event JSON
# Replaces the record without reading its body (and mends what it keeps so that it reads
# back); keys of the wrong type are replaced too. Returns the wait keys the run had.
_QUARANTINE = r"""
local run, body, tl = KEYS[1], KEYS[2], KEYS[5]
local t = redis.call('TYPE', run)['ok']
if t == 'none' then return redis.error_reply('HOLON NOTFOUND') end
local h = split(ARGV[1], '\31')
local ip, id, at = h[1], h[2], h[3]
local old, seq = nil, 0
if t == 'hash' then
  if redis.call('HGET', run, 'lc') == h[4] then return {} end
  mend(run, KEYS[3], KEYS[4], tonumber(h[6]))
  local r = redis.call('HMGET', run, 'st', 'seq', 'es', 'wf', 'ca', 'ver', 'wx', 'av')
  local touched = {}
  if r[7] then touched = split(r[7], '\31') end
  local bad = check_indexes(ip, r[4] or '', r[8] or r[6] or '', r[1], 'failed', touched)
  if bad then return bad end
  old = r[1]
  seq = tonumber(r[2]) or 0
  if not tonumber(r[3]) then redis.call('HSET', run, 'es', 0) end
  if not r[4] then redis.call('HSET', run, 'wf', '') end
  if not tonumber(r[5]) then redis.call('HSET', run, 'ca', at) end
  if not r[6] then redis.call('HSET', run, 'ver', '') end
else
  local bad = check_indexes(ip, '', '', nil, 'failed', {})
  if bad then return bad end
  redis.call('DEL', run)
  redis.call('HSET', run, 'wf', '', 'ver', '', 'in', 'null', 'f', 0, 'es', 0, 'ca', at)
  if ip ~= '' then redis.call('SADD', ip .. 'workflows', '') end
end
if redis.call('TYPE', tl)['ok'] ~= 'list' then redis.call('DEL', tl) end
local before = {}
if t == 'hash' then before = set_wait_keys(ip, id, run, {}) end
redis.call('HDEL', run, 'ctl', 'own', 'lx', 'ln', 'lr', 'wk')
redis.call('HSET', run, 'st', 'failed', 'seq', seq + 1, 'ua', at, 'lc', h[4])
if redis.call('HEXISTS', run, 'in') == 0 and redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('HSET', run, 'in', 'null')
end
redis.call('DEL', body)
redis.call('SET', body, ARGV[2])
append(run, tl, {ARGV[3]}, tonumber(h[5]))
redis.call('HINCRBY', run, 'es', 1)
reindex(ip, id, run, old)
return before
"""

# ARGV: header (ip, id). Deletes a finished run and its index entries.
# Returns {1, workflow, wait keys, status} or {0} when the run is missing or not finished.
_DELETE = r"""
local run = KEYS[1]
local ok = check_type(run, 'hash')
if not ok or type(ok) == 'table' then return {0} end
local h = split(ARGV[1], '\31')
local ip, id = h[1], h[2]
local r = redis.call('HMGET', run, 'st', 'wf', 'ver', 'av')
local st, wf = r[1], r[2] or ''
if st ~= 'completed' and st ~= 'failed' and st ~= 'stopped' and st ~= 'rejected'
    and st ~= 'expired' then
  return {0}
end
if ip ~= '' then
  local touched = {}
  local wx = redis.call('HGET', run, 'wx')
  if wx then touched = split(wx, '\31') end
  local bad = check_indexes(ip, wf, r[4] or r[3] or '', st, st, touched)
  if bad then return bad end
  local ebad = check_type(ip .. 'expiry', 'zset')
  if type(ebad) == 'table' then return ebad end
end
local before = set_wait_keys(ip, id, run, {})
if ip ~= '' then
  redis.call('ZREM', idx(ip, 'status', wf) .. ':' .. st, id)
  redis.call('ZREM', ip .. 'expiry', id)
  redis.call('HINCRBY', ip .. 'counts', st, -1)
  redis.call('HINCRBY', idx(ip, 'counts', wf), st, -1)
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
return {1, wf, before, st}
"""

# KEYS: run, timeline. ARGV: after seq, limit (-1: all).
# Returns {seq of the first event returned, events} or false when the run is missing.
_TIMELINE = r"""
local ok = check_type(KEYS[1], 'hash')
if not ok then return false end
if type(ok) == 'table' then return ok end
local tok = check_type(KEYS[2], 'list')
if type(tok) == 'table' then return tok end
local tb = tonumber(redis.call('HGET', KEYS[1], 'tb') or 0)
local start = tonumber(ARGV[1]) - tb
if start < 0 then start = 0 end
local limit = tonumber(ARGV[2])
local stop = -1
if limit >= 0 then stop = start + limit - 1 end
if limit == 0 then return {tb + start + 1, {}} end
return {tb + start + 1, redis.call('LRANGE', KEYS[2], start, stop)}
"""

# KEYS: ready, lease, timer indexes of one workflow's runs on one version. ARGV: now,
# lease mode, limit.
# Returns {ready ids, ids whose lease expired, ids whose timer is due}.
_CANDIDATES = r"""
local limit = tonumber(ARGV[3])
local lnow = lease_now(ARGV[2], ARGV[1])
return {
  redis.call('ZRANGE', KEYS[1], 0, limit - 1),
  redis.call('ZRANGE', KEYS[2], '-inf', tostring(lnow), 'BYSCORE', 'LIMIT', 0, limit),
  redis.call('ZRANGE', KEYS[3], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, limit),
}
"""


def _script(name: str, body: str) -> Script:
    return Script(name, f"-- holon:{name}\n{COMMON}\n{body}")


SCRIPTS: dict[str, Script] = {
    s.name: s
    for s in (
        _script("create", _CREATE),
        _script("acquire", _ACQUIRE),
        _script("renew", _RENEW),
        _script("release", _RELEASE),
        _script("commit", _COMMIT),
        _script("request", _REQUEST),
        _script("quarantine", _QUARANTINE),
        _script("append", _APPEND),
        _script("delete", _DELETE),
        _script("timeline", _TIMELINE),
        _script("candidates", _CANDIDATES),
    )
}
"""Every script by name."""
