-- Prepended to every limits script by quota/redis.py: how a script reads values that may be
-- garbage (written by hand, by an old version, by a bug), and the AIMD factor they share.
-- A key of the wrong type is dropped; a field that is not a finite number counts as absent,
-- and so does a time outside [0, now + ttl] (further ahead than the keys live); a factor is
-- kept in [0.01, 1].
local function own(key, kind)
  local found = redis.call('TYPE', key)['ok']
  if found ~= kind and found ~= 'none' then redis.call('DEL', key) end
end
local function num(x, default)
  local n = tonumber(x)
  if n == nil or n ~= n or n == math.huge or n == -math.huge then return default end
  return n
end
local function time_of(x, default, now, ttl)
  local n = num(x, default)
  if n < 0 or n > now + ttl then return default end
  return n
end
local function share_of(x) return math.min(1, math.max(0.01, num(x, 1))) end
local function fmt(x) return string.format('%.6f', x) end

-- A rate's factor at `now`: what its last cut (to `factor_at` at `decreased_at`) has climbed
-- back to, by `recovery` of the full rate a second.
local function recovered(factor, factor_at, decreased_at, recovery, now)
  if factor < 1 then return share_of(factor_at + recovery * (now - decreased_at)) end
  return factor
end

-- A ban seen at `now` by a call granted at `granted`: cut the factor of hash `key` by
-- `decrease` (to no less than `min_factor`), once per ban: calls already on the wire when the
-- ban began (granted before `banned_at`) come back limited too, and do not cut it again.
local function cut_once(key, factor, granted, banned_at, decrease, min_factor, now)
  if granted < banned_at then return factor end
  factor = math.max(min_factor, factor * decrease)
  redis.call('HSET', key, 'factor', fmt(factor), 'factor_at', fmt(factor),
    'decreased_at', fmt(now), 'banned_at', fmt(now))
  return factor
end

