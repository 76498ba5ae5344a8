-- The streamc Redis sink: applies one window result idempotently, together with its
-- change-log entry and its notification. A script runs alone, so the three are atomic.
--
-- KEYS: [1] rows of the key (sorted set: score window_start, member the row's JSON)
--       [2] revisions of its windows (hash: "start:end" -> 2 * revision + retracted)
--       [3] the change log (stream)       [4] the feed's key index (sorted set)
-- ARGV: [1] window id "start:end"  [2] window_start  [3] window_end
--       [4] order = 2 * revision + (1 if retracted)  [5] the row (JSON)
--       [6] channel  [7] windows kept per key  [8] TTL in ms (0: none)
--       [9] change-log length (approximate)  [10] feed id
-- Returns the change-log id of the change, or 0 when nothing changed.
local rows, revs, log, index = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local win, wstart, wend = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local order, row, channel = tonumber(ARGV[4]), ARGV[5], ARGV[6]
local keep, ttl, maxlen, feed = tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9], ARGV[10]
local retract = order % 2 == 1

-- A window's changes are ordered by (revision, retracted): an older or equal one (a
-- replay after a restart) changes nothing, and a retraction is never undone by a replay
-- of the revisions before it.
local seen = redis.call('HGET', revs, win)
if seen and tonumber(seen) >= order then return 0 end

-- This window's member (windows of one key rarely share a start: session merges).
local old = nil
for _, m in ipairs(redis.call('ZRANGEBYSCORE', rows, wstart, wstart)) do
  local ok, r = pcall(cjson.decode, m)
  if ok and tonumber(r.window_end) == wend then
    old = m
    break
  end
end

if not old and not seen and redis.call('ZCARD', rows) >= keep then
  -- Older than the newest `keep` windows: outside what is kept, nothing to do.
  local first = redis.call('ZRANGE', rows, 0, 0, 'WITHSCORES')
  if first[2] and wstart < tonumber(first[2]) then return 0 end
end

redis.call('HSET', revs, win, order)
local op = 'upsert'
if retract then
  if not old then return 0 end
  op = 'retract'
  redis.call('ZREM', rows, old)
else
  if old then redis.call('ZREM', rows, old) end
  redis.call('ZADD', rows, wstart, row)
end

-- Keep the newest `keep` windows; their revision records go with them.
local extra = redis.call('ZCARD', rows) - keep
if extra > 0 then
  for _, m in ipairs(redis.call('ZRANGE', rows, 0, extra - 1)) do
    local ok, r = pcall(cjson.decode, m)
    if ok then
      redis.call('HDEL', revs, string.format('%d:%d', r.window_start, r.window_end))
    end
  end
  redis.call('ZREMRANGEBYRANK', rows, 0, extra - 1)
end
-- Records of retracted windows older than every kept one (amortized: only once the
-- hash has grown well past the sorted set).
if redis.call('HLEN', revs) > 2 * keep + 16 then
  local first = redis.call('ZRANGE', rows, 0, 0, 'WITHSCORES')
  local lo = tonumber(first[2] or wstart)
  for _, w in ipairs(redis.call('HKEYS', revs)) do
    local s = tonumber(string.match(w, '^(-?%d+):'))
    if s and s < lo then redis.call('HDEL', revs, w) end
  end
end

if ttl > 0 then
  redis.call('PEXPIRE', rows, ttl)
  redis.call('PEXPIRE', revs, ttl)
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('EXISTS', rows) == 1 then
  redis.call('ZADD', index, now, rows)
else
  redis.call('ZREM', index, rows)
end
if ttl > 0 then
  redis.call('ZREMRANGEBYSCORE', index, '-inf', now - ttl)
end

local last = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)
local prev = '0-0'
if last[1] then prev = last[1][1] end
local id = redis.call('XADD', log, 'MAXLEN', '~', maxlen, '*',
  'feed', feed, 'key', rows, 'op', op, 'row', row)
redis.call('PUBLISH', channel, '{"stream":' .. cjson.encode(log) .. ',"id":"' .. id ..
  '","prev":"' .. prev .. '","feed":' ..
  cjson.encode(feed) .. ',"key":' .. cjson.encode(rows) .. ',"op":"' .. op ..
  '","row":' .. row .. '}')
return id
