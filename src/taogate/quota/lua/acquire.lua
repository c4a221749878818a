-- Take one call slot for a credential, atomically, for every replica at once.
-- KEYS[1] the credential's state hash, KEYS[2] its list of recent send times, KEYS[3] and
-- KEYS[4] the same for its egress (all in one hash slot: the egress's).
-- ARGV: qps, safety, burst, window_guard_s, recovery_per_s, daily_budget (0 = none),
--       key_ttl_s, probe_hold_s, share (of the key for the replicas deciding here, <= 1),
--       urgent (1: the caller has interactive lookups waiting), claim_s,
--       egress_qps (calls/s of all credentials on the egress together; 0 = no cap),
--       egress_guard_s (the window guard of the egress's cap)
-- Returns {granted 0|1, wait_us, reason, now_us, probe 0|1}. Times come from the server (TIME),
-- so replicas with drifting clocks still share one schedule.
--
-- Priority across replicas: an urgent caller told to wait claims the slot it waits for (until
-- that slot opens + claim_s); meanwhile callers that are not urgent (refresh, bulk) are told to
-- 'yield', so another replica's bulk work never takes the slot an interactive lookup waits for.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local qps, safety, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local guard, recovery, budget = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local ttl, probe_hold = tonumber(ARGV[7]), tonumber(ARGV[8])
local share = tonumber(ARGV[9]) or 1
local urgent, claim = tonumber(ARGV[10]) or 1, tonumber(ARGV[11]) or 0
local egress_qps = tonumber(ARGV[12]) or 0
local egress_guard = tonumber(ARGV[13]) or guard

-- What is read back may be garbage (written by hand, an old version): a key of the wrong type
-- is dropped; a field that is not a finite number counts as absent, and so does a time further
-- ahead than the keys live (or a birth time ahead of now); a factor is kept in [0.01, 1].
local function own(key, kind)
  local found = redis.call('TYPE', key)['ok']
  if found ~= kind and found ~= 'none' then redis.call('DEL', key) end
end
own(KEYS[1], 'hash')
own(KEYS[2], 'list')
if egress_qps > 0 then
  own(KEYS[3], 'hash')
  own(KEYS[4], 'list')
end
local function num(x, default)
  local n = tonumber(x)
  if n == nil or n ~= n or n == math.huge or n == -math.huge then return default end
  return n
end
local function at(x)
  local n = num(x, 0)
  if n < 0 or n > now + ttl then return 0 end
  return n
end
local function share_of(x) return math.min(1, math.max(0.01, num(x, 1))) end

local f = redis.call('HMGET', KEYS[1], 'tat', 'banned_until', 'factor', 'factor_at',
  'decreased_at', 'quarantined', 'probe_at', 'probing_until', 'day', 'calls_today', 'born',
  'urgent_until')
local tat = at(f[1])
local banned_until = at(f[2])
local factor = share_of(f[3])
local factor_at = share_of(f[4])
local decreased_at = at(f[5])
local quarantined = num(f[6], 0)
local probe_at = at(f[7])
local probing_until = at(f[8])
local day = num(f[9], -1)
local calls_today = math.max(0, math.floor(num(f[10], 0)))

local function us(x) return math.floor(x * 1000000) end
local function wait(seconds, reason) return {0, math.ceil(seconds * 1000000), reason, us(now), 0} end

-- A state with no birth time is new: Redis restarted (or the key expired) and the calls of the
-- last second are unknown here. Everyone waits one window before the first grant.
local born = num(f[11], nil)
if born ~= nil and (born < 0 or born > now + 1) then born = nil end
if born == nil then
  redis.call('HSET', KEYS[1], 'born', string.format('%.6f', now))
  redis.call('EXPIRE', KEYS[1], ttl)
  return wait(1 + guard, 'fresh')
end
if now < born + 1 + guard then return wait(born + 1 + guard - now, 'fresh') end

local probe = 0
if quarantined == 1 then
  if now < probe_at then return wait(probe_at - now, 'quarantined') end
  if now < probing_until then return wait(probing_until - now, 'probing') end
  probe = 1
end
if now < banned_until then return wait(banned_until - now, 'banned') end

local today = math.floor((now + 28800) / 86400)  -- the Beijing calendar day
if today ~= day then day = today; calls_today = 0 end
if budget > 0 and calls_today >= budget then
  return wait((today + 1) * 86400 - 28800 - now, 'budget')
end

if factor < 1 then factor = share_of(factor_at + recovery * (now - decreased_at)) end
local urgent_until = at(f[12])
-- a claim on the egress (an urgent caller waiting for the egress, on any of its keys) holds
-- every key on it
local egress_urgent_until = 0
if egress_qps > 0 then
  egress_urgent_until = at(redis.call('HGET', KEYS[3], 'urgent_until'))
end
if urgent == 0 then
  local held = math.max(urgent_until, egress_urgent_until)
  if now < held then return wait(held - now, 'yield') end
end
-- an urgent caller that must wait claims the slot it waits for: the key's, or the egress's
local function wait_claiming(seconds, reason)
  if urgent == 1 and claim > 0 then
    local key, current = KEYS[1], urgent_until
    if reason == 'egress' then key, current = KEYS[3], egress_urgent_until end
    if now + seconds + claim > current then
      redis.call('HSET', key, 'urgent_until', string.format('%.6f', now + seconds + claim))
    end
  end
  return wait(seconds, reason)
end

local interval = (1 / (qps * safety * factor * share)) * (1 + 1e-9)
local tolerance = (burst - 1) * interval
local start = math.max(tat, now)
if start - now > tolerance then return wait_claiming(start - now - tolerance, 'rate') end

local limit = math.max(1, math.floor(qps * share + 1e-9))
if redis.call('LLEN', KEYS[2]) >= limit then
  local free_at = at(redis.call('LINDEX', KEYS[2], -limit)) + 1 + guard
  if now < free_at then return wait_claiming(free_at - now, 'window') end
end

-- the egress: every credential on it together, paced and windowed like one key
local egress_start = now
local egress_interval = 0
local egress_limit = 0
if egress_qps > 0 then
  egress_interval = (1 / (egress_qps * share)) * (1 + 1e-9)
  egress_start = math.max(at(redis.call('HGET', KEYS[3], 'tat')), now)
  -- room for one call of catch-up (burst 2); the window below holds the cap
  if egress_start - now > egress_interval then
    return wait_claiming(egress_start - now - egress_interval, 'egress')
  end
  egress_limit = math.max(1, math.floor(egress_qps * share + 1e-9))
  if redis.call('LLEN', KEYS[4]) >= egress_limit then
    local free_at = at(redis.call('LINDEX', KEYS[4], -egress_limit)) + 1 + egress_guard
    if now < free_at then return wait_claiming(free_at - now, 'egress') end
  end
end

redis.call('HSET', KEYS[1], 'tat', string.format('%.6f', start + interval),
  'factor', string.format('%.6f', factor), 'day', day, 'calls_today', calls_today + 1)
if probe == 1 then
  redis.call('HSET', KEYS[1], 'probing_until', string.format('%.6f', now + probe_hold))
end
redis.call('RPUSH', KEYS[2], string.format('%.6f', now))
redis.call('LTRIM', KEYS[2], -limit, -1)
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
if egress_qps > 0 then
  redis.call('HSET', KEYS[3], 'tat', string.format('%.6f', egress_start + egress_interval))
  redis.call('RPUSH', KEYS[4], string.format('%.6f', now))
  redis.call('LTRIM', KEYS[4], -egress_limit, -1)
  redis.call('EXPIRE', KEYS[3], ttl)
  redis.call('EXPIRE', KEYS[4], ttl)
end
return {1, 0, 'ok', us(now), probe}
