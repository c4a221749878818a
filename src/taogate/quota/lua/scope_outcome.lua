-- Record a ban of a scope other than a key (an account, a method, a key x method, an egress),
-- for every replica: acquire.lua holds every call consuming from it until its pause ends.
-- KEYS[1] the scope's state hash.
-- ARGV: op ('ban': pause and cut the scope's rate, once per ban | 'pause': pause only),
--       granted_at_us (the server time the call was granted), retry_after_s, aimd_decrease,
--       aimd_min_factor, recovery_per_s, has_aimd (1: bans cut this scope's rate), key_ttl_s
-- Returns {paused_until_us, factor_millionths, now_us}.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local op = ARGV[1]
local granted = (tonumber(ARGV[2]) or 0) / 1000000
local retry_after = tonumber(ARGV[3]) or 0
local decrease, min_factor, recovery = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local has_aimd, ttl = ARGV[7] == '1', tonumber(ARGV[8])
if retry_after ~= retry_after then retry_after = 0 end
retry_after = math.min(ttl, math.max(0, retry_after))  -- a pause lives as long as the keys
if op ~= 'ban' and op ~= 'pause' then
  return redis.error_reply('scope_outcome.lua: unknown op')
end

-- What is read back may be garbage (values.lua, prepended)
own(KEYS[1], 'hash')
local function at(x, default) return time_of(x, default, now, ttl) end

local f = redis.call('HMGET', KEYS[1], 'paused_until', 'banned_at', 'factor', 'factor_at',
  'decreased_at')
local paused_until = at(f[1], 0)
local factor = 1
if has_aimd then
  factor = recovered(share_of(f[3]), share_of(f[4]), at(f[5], 0), recovery, now)
  if op == 'ban' then
    factor = cut_once(KEYS[1], factor, granted, at(f[2], -1), decrease, min_factor, now)
  end
end
paused_until = math.max(paused_until, now + retry_after)
redis.call('HSET', KEYS[1], 'paused_until', fmt(paused_until))
redis.call('EXPIRE', KEYS[1], ttl)
return {math.floor(paused_until * 1000000), math.floor(factor * 1000000),
  math.floor(now * 1000000)}
