"""The Lua functions every script of the Redis store shares (see `redis_scripts`): packed
arguments, key types, the lease clock, index names and upkeep, the timeline, and the
checks a quarantine uses to mend what a corrupt record keeps."""

from __future__ import annotations

__all__ = ["COMMON"]

COMMON = r"""
local function split(s, sep)
  local out, start = {}, 1
  while true do
    local i = string.find(s, sep, start, true)
    if not i then
      out[#out + 1] = string.sub(s, start)
      return out
    end
    out[#out + 1] = string.sub(s, start, i - 1)
    start = i + 1
  end
end

local function lines(s)
  if s == '' then return {} end
  return split(s, '\n')
end

local function check_type(key, kind)
  local t = redis.call('TYPE', key)['ok']
  if t == 'none' then return false end
  if t ~= kind then
    return redis.error_reply('HOLON WRONGTYPE ' .. key .. ' holds a ' .. t .. ', not a ' .. kind)
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

-- A claim index (ready, lease, timer) of the runs of workflow `wf` now on version `av`:
-- executors claim by version, so that none takes a run it may not execute.
local function cidx(ip, kind, wf, av)
  return idx(ip, kind, wf) .. '@' .. av
end

-- How many runs of workflow `wf` hold a live lease while running, on any version: the
-- running runs' lease indexes are scored by lease expiry (0 once released).
local function leased(ip, wf, lnow)
  local count = 0
  for _, av in ipairs(redis.call('SMEMBERS', idx(ip, 'versions', wf))) do
    local after = '(' .. string.format('%.6f', lnow)
    count = count + redis.call('ZCOUNT', cidx(ip, 'lease', wf, av), after, '+inf')
  end
  return count
end

-- Before any write: every index key a write will touch must hold its own type (or
-- nothing). Returns an error reply naming the first that does not, else nil.
local function check_indexes(ip, wf, av, old_status, new_status, wait_keys)
  if ip == '' then return nil end
  local checks = {
    {idx(ip, 'status', wf) .. ':' .. new_status, 'zset'},
    {cidx(ip, 'ready', wf, av), 'zset'}, {cidx(ip, 'lease', wf, av), 'zset'},
    {cidx(ip, 'timer', wf, av), 'zset'}, {idx(ip, 'versions', wf), 'set'},
    {ip .. 'counts', 'hash'}, {idx(ip, 'counts', wf), 'hash'},
  }
  if old_status and old_status ~= new_status then
    checks[#checks + 1] = {idx(ip, 'status', wf) .. ':' .. old_status, 'zset'}
  end
  for _, k in ipairs(wait_keys) do checks[#checks + 1] = {idx(ip, 'waiting', k), 'zset'} end
  for _, c in ipairs(checks) do
    local bad = check_type(c[1], c[2])
    if type(bad) == 'table' then return bad end
  end
  return nil
end

-- Replace the run's wait keys with `keys`; returns the keys it had before.
local function set_wait_keys(ip, id, run, keys)
  local before = {}
  local old = redis.call('HGET', run, 'wx')
  if old then
    before = split(old, '\31')
    if ip ~= '' then
      for _, k in ipairs(before) do redis.call('ZREM', idx(ip, 'waiting', k), id) end
    end
  end
  if ip ~= '' then
    for _, k in ipairs(keys) do redis.call('ZADD', idx(ip, 'waiting', k), 0, id) end
  end
  if #keys > 0 then
    redis.call('HSET', run, 'wx', table.concat(keys, '\31'))
  else
    redis.call('HDEL', run, 'wx')
  end
  return before
end

-- Put the run in the indexes that match its stored state (single server only).
local function reindex(ip, id, run, old_status)
  if ip == '' then return end
  local r = redis.call('HMGET', run, 'st', 'wf', 'ca', 'own', 'lx', 'wk', 'ver', 'av')
  local st, wf, ca = r[1], r[2], r[3]
  local av = r[8] or r[7] or ''
  if old_status ~= st then
    if old_status then
      redis.call('ZREM', idx(ip, 'status', wf) .. ':' .. old_status, id)
      redis.call('HINCRBY', ip .. 'counts', old_status, -1)
      redis.call('HINCRBY', idx(ip, 'counts', wf), old_status, -1)
    end
    redis.call('HINCRBY', ip .. 'counts', st, 1)
    redis.call('HINCRBY', idx(ip, 'counts', wf), st, 1)
    redis.call('ZADD', idx(ip, 'status', wf) .. ':' .. st, ca, id)
  end
  local ready, lease = cidx(ip, 'ready', wf, av), cidx(ip, 'lease', wf, av)
  local timer = cidx(ip, 'timer', wf, av)
  if st == 'queued' then
    redis.call('ZADD', ready, ca, id)
  elseif old_status == 'queued' then
    redis.call('ZREM', ready, id)
  end
  if st == 'running' then
    redis.call('ZADD', lease, (r[4] and r[5]) or 0, id)
  elseif old_status == 'running' then
    redis.call('ZREM', lease, id)
  end
  if st == 'waiting' and r[6] then
    redis.call('ZADD', timer, r[6], id)
  elseif old_status == 'waiting' then
    redis.call('ZREM', timer, id)
  end
end

-- Append JSON events to the timeline, trimming it to `cap` (0: no cap); the caller
-- stores the new event sequence number.
local function append(run, tl, events, cap)
  if #events == 0 then return end
  local length = redis.call('RPUSH', tl, unpack(events))
  if cap > 0 and length > cap then
    redis.call('LTRIM', tl, -cap, -1)
    redis.call('HINCRBY', run, 'tb', length - cap)
  end
end

-- Whether `s` is UTF-8 text (a reply the client can decode).
local function is_utf8(s)
  local i, n = 1, #s
  while i <= n do
    local c = string.byte(s, i)
    local len
    if c < 128 then len = 1
    elseif c >= 194 and c <= 223 then len = 2
    elseif c >= 224 and c <= 239 then len = 3
    elseif c >= 240 and c <= 244 then len = 4
    else return false end
    for j = i + 1, i + len - 1 do
      local d = string.byte(s, j)
      if not d or d < 128 or d > 191 then return false end
    end
    i = i + len
  end
  return true
end

-- Whether a stored JSON value reads back: text, within `max` bytes, and JSON (where the
-- server's Lua has cjson to tell).
local function readable(s, max)
  if #s > max or not is_utf8(s) then return false end
  if cjson then return (pcall(cjson.decode, s)) end
  return true
end

-- Make what a quarantined record keeps read back: hash fields that are not text are
-- emptied (names) or dropped, an input or results that do not read are replaced.
local function mend(run, input, res, max)
  local fields = redis.call('HGETALL', run)
  for i = 1, #fields, 2 do
    local f, v = fields[i], fields[i + 1]
    if not is_utf8(f) then
      redis.call('HDEL', run, f)
    elseif f == 'in' then
      if not readable(v, max) then redis.call('HSET', run, 'in', 'null') end
    elseif not is_utf8(v) then
      if f == 'wf' or f == 'ver' then
        redis.call('HSET', run, f, '')
      else
        redis.call('HDEL', run, f)
      end
    end
  end
  local it = redis.call('TYPE', input)['ok']
  if it ~= 'none' and (it ~= 'string' or not readable(redis.call('GET', input), max)) then
    redis.call('DEL', input)
    redis.call('HSET', run, 'in', 'null')
  end
  local rt = redis.call('TYPE', res)['ok']
  if rt == 'hash' then
    local results = redis.call('HGETALL', res)
    for i = 1, #results, 2 do
      if not is_utf8(results[i]) or not readable(results[i + 1], max) then
        redis.call('HDEL', res, results[i])
      end
    end
  elseif rt ~= 'none' then
    redis.call('DEL', res)
  end
end
"""
