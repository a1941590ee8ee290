"""The Lua scripts of the Redis store: every write that must be atomic is one of these.

Each script touches the keys of one run only (`KEYS[1]` its hash, `KEYS[2]` its step
results, `KEYS[3]` its timeline stream), which share one hash tag, so each script runs
in one slot and works on Redis Cluster.

On a single server the scripts also keep the global indexes exact: `ARGV[1]` is then the
index key prefix and the scripts reach the index keys by name (a single server allows
it). On a Cluster the store passes an empty `ARGV[1]`, the scripts leave the indexes
alone, and the store updates them as hints in the same pipeline instead.

Every script validates everything before its first write: a Lua error after a write is
not rolled back. Refusals are error replies starting with `HOLON <CODE>`.

Run hash fields:

| field | meaning |
| --- | --- |
| `wf`, `ver` | workflow name and version |
| `st` | status |
| `in`, `b` | input and body, JSON |
| `seq`, `es` | checkpoint and timeline sequence numbers |
| `ctl` | pending control request, JSON (absent when none) |
| `own`, `lx`, `ln`, `lr` | lease owner, expiry, the acquiring request's id, recovered flag |
| `f` | last fencing token issued |
| `wk` | wake-up time of a waiting run (absent when none) |
| `ca`, `ua` | created and updated times |
| `lc`, `lp` | id of the last commit applied and its reply, for retries |
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = ["SCRIPTS", "Script"]


@dataclass(frozen=True)
class Script:
    """A Lua script and its SHA1, the name `EVALSHA` calls it by."""

    name: str
    source: str

    @property
    def sha(self) -> str:
        return hashlib.sha1(self.source.encode()).hexdigest()


_COMMON = r"""
local function check_type(key)
  local t = redis.call('TYPE', key)['ok']
  if t == 'none' then return false end
  if t ~= 'hash' then
    return redis.error_reply('HOLON WRONGTYPE ' .. key .. ' holds a ' .. t .. ', not a hash')
  end
  return true
end

local function lease_now(mode, now)
  if mode == 's' then
    local t = redis.call('TIME')
    return tonumber(t[1]) + tonumber(t[2]) / 1000000
  end
  return tonumber(now)
end

-- A name made safe inside a hash tag (the same escaping as the Python side).
local function esc(name)
  local function hex(c) return string.format('%%%02X', string.byte(c)) end
  return (string.gsub(name, '[%%{}]', hex))
end

local function idx(ip, kind, name)
  return ip .. kind .. ':{' .. esc(name) .. '}'
end

-- Replace the run's wait keys with the n keys in ARGV after position i (n < 0: keep).
-- Returns the keys it had before.
local function set_wait_keys(ip, id, run, i)
  local n = tonumber(ARGV[i])
  local before = {}
  if n < 0 then return before end
  local old = redis.call('HGET', run, 'wx')
  if old then
    for k in string.gmatch(old, '[^\31]+') do
      before[#before + 1] = k
      if ip ~= '' then redis.call('ZREM', idx(ip, 'waiting', k), id) end
    end
  end
  local keys = {}
  for j = 1, n do
    keys[j] = ARGV[i + j]
    if ip ~= '' then redis.call('ZADD', idx(ip, 'waiting', keys[j]), 0, id) end
  end
  if n > 0 then
    redis.call('HSET', run, 'wx', table.concat(keys, '\31'))
  else
    redis.call('HDEL', run, 'wx')
  end
  return before
end

-- Put the run in the indexes that match its stored state (single server only).
local function reindex(ip, id, run, old_status)
  if ip == '' then return end
  local r = redis.call('HMGET', run, 'st', 'wf', 'ca', 'own', 'lx', 'wk')
  local st, wf, ca = r[1], r[2], r[3]
  if old_status ~= st then
    if old_status then
      redis.call('ZREM', ip .. 'status:' .. old_status, id)
      redis.call('HINCRBY', ip .. 'counts', old_status, -1)
      redis.call('HINCRBY', idx(ip, 'counts', wf), old_status, -1)
    end
    redis.call('HINCRBY', ip .. 'counts', st, 1)
    redis.call('HINCRBY', idx(ip, 'counts', wf), st, 1)
  end
  redis.call('ZADD', ip .. 'status:' .. st, ca, id)
  local ready, lease, timer = idx(ip, 'ready', wf), idx(ip, 'lease', wf), idx(ip, 'timer', wf)
  if st == 'queued' then
    redis.call('ZADD', ready, ca, id)
  else
    redis.call('ZREM', ready, id)
  end
  if st == 'running' then
    redis.call('ZADD', lease, (r[4] and r[5]) or 0, id)
  else
    redis.call('ZREM', lease, id)
  end
  if st == 'waiting' and r[6] then
    redis.call('ZADD', timer, r[6], id)
  else
    redis.call('ZREM', timer, id)
  end
end

-- Append events from ARGV starting at i (kind, at, step, data per event).
local function append(tl, es, cap, i, n)
  for _ = 1, n do
    es = es + 1
    local id = es .. '-0'
    local fields = {'k', ARGV[i], 'a', ARGV[i + 1], 'd', ARGV[i + 3]}
    if ARGV[i + 2] ~= '' then
      fields[7] = 's'
      fields[8] = ARGV[i + 2]
    end
    if cap > 0 then
      redis.call('XADD', tl, 'MAXLEN', cap, id, unpack(fields))
    else
      redis.call('XADD', tl, id, unpack(fields))
    end
    i = i + 4
  end
  return es, i
end
"""

# ARGV: ip, id, wf, ver, st, input, body, wake, created, updated, cap, n_events, events...
_CREATE = r"""
local run, tl = KEYS[1], KEYS[3]
if redis.call('EXISTS', run) == 1 then return 0 end
local ip, id = ARGV[1], ARGV[2]
local n = tonumber(ARGV[12])
redis.call('HSET', run, 'wf', ARGV[3], 'ver', ARGV[4], 'st', ARGV[5], 'in', ARGV[6],
  'b', ARGV[7], 'seq', 0, 'es', n, 'f', 0, 'ca', ARGV[9], 'ua', ARGV[10])
if ARGV[8] ~= '' then redis.call('HSET', run, 'wk', ARGV[8]) end
append(tl, 0, tonumber(ARGV[11]), 13, n)
if ip ~= '' then
  redis.call('ZADD', ip .. 'created', ARGV[9], id)
  redis.call('ZADD', idx(ip, 'wf', ARGV[3]), ARGV[9], id)
end
reindex(ip, id, run, nil)
return 1
"""

# ARGV: ip, id, owner, ttl, now, lease mode, request id, timers (0/1)
# Returns {1, token, recovered} or {0, status, lease expiry or '', wake or ''}.
_ACQUIRE = r"""
local run = KEYS[1]
local ok = check_type(run)
if not ok then return redis.error_reply('HOLON NOTFOUND') end
if type(ok) == 'table' then return ok end
local ip, id, owner, ttl, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local nonce = ARGV[7]
local r = redis.call('HMGET', run, 'st', 'own', 'lx', 'f', 'ln', 'wk', 'lr')
local st, own, lx, wk = r[1], r[2], r[3], r[6]
local lnow = lease_now(ARGV[6], now)
if own and tonumber(lx) > lnow then
  if r[5] == nonce then return {1, tonumber(r[4]), tonumber(r[7] or 0)} end
  return {0, st, lx, wk or ''}
end
local runnable = st == 'queued' or st == 'running'
if not runnable and ARGV[8] == '1' and st == 'waiting' and wk then
  runnable = tonumber(wk) <= tonumber(now)
end
if not runnable then return {0, st, lx or '', wk or ''} end
local token = tonumber(r[4]) + 1
local recovered = 0
if st == 'running' then recovered = 1 end
redis.call('HSET', run, 'f', token, 'own', owner, 'lx', string.format('%.6f', lnow + ttl),
  'ln', nonce, 'lr', recovered)
if st == 'queued' then redis.call('HSET', run, 'st', 'running') end
reindex(ip, id, run, st)
return {1, token, recovered}
"""

# ARGV: ip, id, token, ttl, now, lease mode
_RENEW = r"""
local run = KEYS[1]
local ok = check_type(run)
if not ok then return redis.error_reply('HOLON NOTFOUND') end
if type(ok) == 'table' then return ok end
local r = redis.call('HMGET', run, 'own', 'f', 'ctl')
if not r[1] or r[2] ~= ARGV[3] then
  return redis.error_reply('HOLON STALE ' .. (r[1] and r[2] or 'none (released)'))
end
local lx = lease_now(ARGV[6], ARGV[5]) + tonumber(ARGV[4])
lx = string.format('%.6f', lx)
redis.call('HSET', run, 'lx', lx)
if ARGV[1] ~= '' then
  redis.call('ZADD', idx(ARGV[1], 'lease', redis.call('HGET', run, 'wf')), lx, ARGV[2])
end
return r[3] or false
"""

# ARGV: ip, id, token. Returns {status, workflow} when released, else 0.
_RELEASE = r"""
local run = KEYS[1]
local ok = check_type(run)
if not ok or type(ok) == 'table' then return 0 end
local r = redis.call('HMGET', run, 'own', 'f', 'st', 'wf')
if not r[1] or r[2] ~= ARGV[3] then return 0 end
redis.call('HDEL', run, 'own', 'lx', 'ln', 'lr')
reindex(ARGV[1], ARGV[2], run, r[3])
return {r[3], r[4] or ''}
"""

# ARGV: ip, id, token or '', expected seq, commit id, status, body, wake or '', at,
#       release (0/1), clear control (0/1), timeline cap, when a completed run expires
#       (or ''), n_results,
#       results (name, value)..., n_events, events..., n_wait_keys (-1: keep), keys...
# Returns {seq, event_seq, control or false, the wait keys it had before (when replaced)}.
_COMMIT = r"""
local run, res, tl = KEYS[1], KEYS[2], KEYS[3]
local ok = check_type(run)
if not ok then return redis.error_reply('HOLON NOTFOUND') end
if type(ok) == 'table' then return ok end
local ip, id, token, expected, nonce = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local r = redis.call('HMGET', run, 'seq', 'f', 'own', 'es', 'lc', 'ctl', 'st')
local seq = tonumber(r[1])
if r[5] == nonce and seq == expected + 1 then
  return {seq, tonumber(r[4]), r[6] or false, {}}
end
if token ~= '' and (not r[3] or r[2] ~= token) then
  return redis.error_reply('HOLON STALE ' .. (r[3] and r[2] or 'none (released)'))
end
if seq ~= expected then return redis.error_reply('HOLON SEQ ' .. seq) end
local status = ARGV[6]
redis.call('HSET', run, 'st', status, 'b', ARGV[7], 'seq', seq + 1, 'ua', ARGV[9], 'lc', nonce)
if ARGV[8] ~= '' then redis.call('HSET', run, 'wk', ARGV[8]) else redis.call('HDEL', run, 'wk') end
if ARGV[10] == '1' then redis.call('HDEL', run, 'own', 'lx', 'ln', 'lr') end
if ARGV[11] == '1' then redis.call('HDEL', run, 'ctl') end
local i = 15
local nres = tonumber(ARGV[14])
for _ = 1, nres do
  redis.call('HSET', res, ARGV[i], ARGV[i + 1])
  i = i + 2
end
local n = tonumber(ARGV[i])
local es, j = append(tl, tonumber(r[4]), tonumber(ARGV[12]), i + 1, n)
redis.call('HSET', run, 'es', es)
local before = set_wait_keys(ip, id, run, j)
reindex(ip, id, run, r[7])
local expire_at = ARGV[13]
if ip ~= '' and expire_at ~= '' and status == 'completed' then
  redis.call('ZADD', ip .. 'expiry', expire_at, id)
end
local ctl = false
if ARGV[11] ~= '1' then ctl = r[6] or false end
return {seq + 1, es, ctl, before}
"""

# ARGV: ip, id, control JSON
_REQUEST = r"""
local run = KEYS[1]
local ok = check_type(run)
if not ok then return redis.error_reply('HOLON NOTFOUND') end
if type(ok) == 'table' then return ok end
redis.call('HSET', run, 'ctl', ARGV[3])
return 1
"""

# ARGV: ip, id, body, at, event data, request id, timeline cap, 0 (no wait keys)
# Replaces the record without reading its body; a key of the wrong type is replaced too.
# Returns the wait keys the run had.
_QUARANTINE = r"""
local run, tl = KEYS[1], KEYS[3]
local t = redis.call('TYPE', run)['ok']
if t == 'none' then return redis.error_reply('HOLON NOTFOUND') end
local ip, id = ARGV[1], ARGV[2]
local old, seq, es = nil, 0, 0
if t == 'hash' then
  if redis.call('HGET', run, 'lc') == ARGV[6] then return {} end
  local r = redis.call('HMGET', run, 'st', 'seq', 'es', 'wf', 'ca')
  old = r[1]
  seq = tonumber(r[2]) or 0
  es = tonumber(r[3]) or 0
  if not r[4] then redis.call('HSET', run, 'wf', '') end
  if not tonumber(r[5]) then redis.call('HSET', run, 'ca', ARGV[4]) end
else
  redis.call('DEL', run)
  redis.call('HSET', run, 'wf', '', 'ver', '', 'in', 'null', 'f', 0, 'ca', ARGV[4])
end
if redis.call('TYPE', tl)['ok'] ~= 'stream' then redis.call('DEL', tl) end
local last = redis.call('XREVRANGE', tl, '+', '-', 'COUNT', 1)[1]
if last then
  local top = tonumber(string.match(last[1], '^(%d+)'))
  if top > es then es = top end
end
es = es + 1
local cap = tonumber(ARGV[7])
local fields = {'k', 'failed', 'a', ARGV[4], 'd', ARGV[5]}
if cap > 0 then
  redis.call('XADD', tl, 'MAXLEN', cap, es .. '-0', unpack(fields))
else
  redis.call('XADD', tl, es .. '-0', unpack(fields))
end
local before = {}
if t == 'hash' then before = set_wait_keys(ip, id, run, 8) end
redis.call('HDEL', run, 'ctl', 'own', 'lx', 'ln', 'lr', 'wk')
redis.call('HSET', run, 'st', 'failed', 'b', ARGV[3], 'seq', seq + 1, 'es', es, 'ua', ARGV[4],
  'lc', ARGV[6])
if ip ~= '' then
  redis.call('ZADD', ip .. 'created', redis.call('HGET', run, 'ca'), id)
end
reindex(ip, id, run, old)
return before
"""

# ARGV: ip, id, 0. Deletes a finished run and its index entries.
# Returns {1, workflow, wait keys, status} or {0} when the run is missing or not finished.
_DELETE = r"""
local run, res, tl = KEYS[1], KEYS[2], KEYS[3]
local ok = check_type(run)
if not ok or type(ok) == 'table' then return {0} end
local ip, id = ARGV[1], ARGV[2]
local r = redis.call('HMGET', run, 'st', 'wf')
local st, wf = r[1], r[2] or ''
if st ~= 'completed' and st ~= 'failed' and st ~= 'stopped' and st ~= 'rejected'
    and st ~= 'expired' then
  return {0}
end
local before = set_wait_keys(ip, id, run, 3)
if ip ~= '' then
  redis.call('ZREM', ip .. 'status:' .. st, id)
  redis.call('ZREM', ip .. 'created', id)
  redis.call('ZREM', idx(ip, 'wf', wf), id)
  redis.call('ZREM', ip .. 'expiry', id)
  redis.call('HINCRBY', ip .. 'counts', st, -1)
  redis.call('HINCRBY', idx(ip, 'counts', wf), st, -1)
end
redis.call('DEL', run, res, tl)
return {1, wf, before, st}
"""

# KEYS: ready, lease, timer indexes of one workflow. ARGV: now, lease mode, limit.
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
    return Script(name, f"-- holon:{name}\n{_COMMON}\n{body}")


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
        _script("candidates", _CANDIDATES),
        _script("delete", _DELETE),
    )
}
"""Every script by name."""
