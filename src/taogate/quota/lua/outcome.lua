-- Record what the upstream said about a credential's call, for every replica.
-- KEYS[1] the credential's state hash.
-- ARGV: op ('ban' | 'exhausted' | 'invalid' | 'probe_ok' | 'probe_end' | 'release' | 'rotated'),
--       granted_at_us, retry_after_s, aimd_decrease, aimd_min_factor, recovery_per_s,
--       probe_after_s, max_probe_after_s, is_probe (0|1), key_ttl_s
-- Returns {banned_until_us, quarantined, probe_at_us, factor_millionths, now_us}.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local op = ARGV[1]
local granted = tonumber(ARGV[2]) / 1000000
local retry_after = tonumber(ARGV[3])
local decrease, min_factor, recovery = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local base_probe, max_probe = tonumber(ARGV[7]), tonumber(ARGV[8])
local is_probe, ttl = tonumber(ARGV[9]), tonumber(ARGV[10])

-- What is read back may be garbage (values.lua, prepended)
own(KEYS[1], 'hash')
local function at(x, default) return time_of(x, default, now, ttl) end

local f = redis.call('HMGET', KEYS[1], 'banned_until', 'banned_at', 'factor', 'factor_at',
  'decreased_at', 'quarantined', 'probe_at', 'probe_after', 'day', 'calls_today')
local banned_until = at(f[1], 0)
local banned_at = at(f[2], -1)
local factor = share_of(f[3])
local factor_at = share_of(f[4])
local decreased_at = at(f[5], 0)
local quarantined = num(f[6], 0)
local probe_at = at(f[7], 0)
local probe_after = math.min(max_probe, math.max(0, num(f[8], 0)))

if op == 'ban' then
  factor = recovered(factor, factor_at, decreased_at, recovery, now)
  factor = cut_once(KEYS[1], factor, granted, banned_at, decrease, min_factor, now)
  banned_until = math.max(banned_until, now + retry_after)
  redis.call('HSET', KEYS[1], 'banned_until', fmt(banned_until))
  if is_probe == 1 then redis.call('HSET', KEYS[1], 'probing_until', '0') end
elseif op == 'exhausted' then
  -- the platform says the key's quota of the day is spent: no call until midnight in Beijing
  -- (acquire.lua answers 'budget' while spent_day is its Beijing day)
  -- the day of the call the platform answered (granted_at), not of this record: a record
  -- landing after midnight must not spend the new day
  local at_grant = granted
  if at_grant <= 0 or at_grant > now then at_grant = now end
  redis.call('HSET', KEYS[1], 'spent_day', math.floor((at_grant + 28800) / 86400))
  if is_probe == 1 then redis.call('HSET', KEYS[1], 'probing_until', '0') end
elseif op == 'invalid' then
  if quarantined == 0 or is_probe == 1 then
    probe_after = math.min(max_probe, math.max(base_probe, probe_after * 2))
    quarantined = 1
    probe_at = now + probe_after
    redis.call('HSET', KEYS[1], 'quarantined', 1, 'probe_at', fmt(probe_at),
      'probe_after', fmt(probe_after), 'probing_until', '0')
  end
elseif op == 'probe_ok' then
  if is_probe == 1 then
    quarantined = 0
    redis.call('HSET', KEYS[1], 'quarantined', 0, 'probe_after', 0, 'probing_until', '0')
  end
elseif op == 'rotated' then
  -- a new secret: a quarantined key deserves its probe now, for every replica
  if quarantined == 1 and probe_at > now then
    probe_at = now
    redis.call('HSET', KEYS[1], 'probe_at', fmt(now), 'probing_until', '0')
  end
elseif op == 'probe_end' then
  if is_probe == 1 then redis.call('HSET', KEYS[1], 'probing_until', '0') end
elseif op == 'release' then
  local today = math.floor((granted + 28800) / 86400)
  local calls = math.floor(num(f[10], 0))
  if num(f[9], -1) == today and calls > 0 then
    redis.call('HSET', KEYS[1], 'calls_today', calls - 1)
  end
  if is_probe == 1 then redis.call('HSET', KEYS[1], 'probing_until', '0') end
end
redis.call('EXPIRE', KEYS[1], ttl)
return {math.floor(banned_until * 1000000), quarantined, math.floor(probe_at * 1000000),
  math.floor(factor * 1000000), math.floor(now * 1000000)}
