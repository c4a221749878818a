-- Take one call slot for a credential, atomically, for every replica at once, in every scope
-- the call consumes from (its key, and the N others: egress, account, method, key x method).
-- KEYS[1] the key's state hash, KEYS[2] its list of recent send times; KEYS[1+2i] and
-- KEYS[2+2i] the same for the call's i-th other scope (all in one hash slot).
-- ARGV: qps, safety, burst, window_guard_s, recovery_per_s, daily_budget (0 = none),
--       key_ttl_s, probe_hold_s, share (of each quota for the replicas deciding here, <= 1),
--       urgent (1: the caller has interactive lookups waiting), claim_s,
--       then for each other scope: kind ('egress' | 'account' | 'method' | 'pair'),
--       qps (its calls/s, every key's together; 0 = not paced, only paused), pace (the part
--       of qps paced), burst, guard_s (its window guard), has_aimd (1: bans cut its rate)
-- Returns {granted 0|1, wait_us, reason, now_us, probe 0|1}. Times come from the server (TIME),
-- so replicas with drifting clocks still share one schedule. The reason is the key's (fresh,
-- quarantined, probing, banned, budget, rate, window), 'yield', or the kind of the scope that
-- holds the call. No slot is taken unless every scope admits the call; then all are. (A refusal
-- may still drop a value of the wrong type, stamp a fresh state's birth, or write an urgent
-- claim: none of them takes a slot.)
--
-- Priority across replicas: an urgent caller told to wait claims the slot it waits for, on the
-- key or the scope that holds it (until that slot opens + claim_s); meanwhile callers that are
-- not urgent (refresh, bulk) on any key consuming from it are told to 'yield', so another
-- replica's bulk work never takes the slot an interactive lookup waits for.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local qps, safety, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local guard, recovery, budget = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local ttl, probe_hold = tonumber(ARGV[7]), tonumber(ARGV[8])
local share = tonumber(ARGV[9]) or 1
local urgent, claim = tonumber(ARGV[10]) or 1, tonumber(ARGV[11]) or 0
local KEY_ARGS, SCOPE_ARGS = 11, 6
local n = (#KEYS - 2) / 2
if n < 0 or n ~= math.floor(n) or #ARGV ~= KEY_ARGS + SCOPE_ARGS * n then
  return redis.error_reply('acquire.lua: ' .. #KEYS .. ' keys do not match ' .. #ARGV .. ' args')
end

-- What is read back may be garbage (values.lua, prepended): a time absent or out of bounds
-- is 0 (and a birth time ahead of now counts as none)
local function at(x) return time_of(x, 0, now, ttl) end
local function us(x) return math.floor(x * 1000000) end
local function wait(seconds, reason) return {0, math.ceil(seconds * 1000000), reason, us(now), 0} end

own(KEYS[1], 'hash')
own(KEYS[2], 'list')
local f = redis.call('HMGET', KEYS[1], 'tat', 'banned_until', 'factor', 'factor_at',
  'decreased_at', 'quarantined', 'probe_at', 'probing_until', 'day', 'calls_today', 'born',
  'urgent_until', 'spent_day')
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

-- A state with no birth time is new: Redis restarted (or the key expired) and the calls of the
-- last second are unknown here. Everyone waits one window before the first grant.
local born = num(f[11], nil)
if born ~= nil and (born < 0 or born > now + 1) then born = nil end
if born == nil then
  redis.call('HSET', KEYS[1], 'born', fmt(now))
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
local midnight = (today + 1) * 86400 - 28800
-- the platform said the key's quota of the day is spent (outcome.lua's 'exhausted')
if num(f[13], -1) == today then return wait(midnight - now, 'budget') end
if today ~= day then day = today; calls_today = 0 end
if budget > 0 and calls_today >= budget then return wait(midnight - now, 'budget') end

factor = recovered(factor, factor_at, decreased_at, recovery, now)

-- The other scopes: their pauses first (the longest one answers, by its scope's kind)
local scopes = {}
local paused_until, paused_kind = 0, nil
for i = 1, n do
  local a = KEY_ARGS + SCOPE_ARGS * (i - 1)
  local s = {
    state = KEYS[1 + 2 * i], sent = KEYS[2 + 2 * i], kind = ARGV[a + 1],
    qps = math.max(0, num(ARGV[a + 2], 0)), pace = num(ARGV[a + 3], 1),
    burst = math.max(1, num(ARGV[a + 4], 1)), guard = num(ARGV[a + 5], guard),
    aimd = ARGV[a + 6] == '1', factor = 1,
  }
  if s.pace <= 0 or s.pace > 1 then s.pace = 1 end
  own(s.state, 'hash')
  if s.qps > 0 then own(s.sent, 'list') end
  local g = redis.call('HMGET', s.state, 'paused_until', 'urgent_until', 'tat', 'factor',
    'factor_at', 'decreased_at')
  local until_ = at(g[1])
  if until_ > now and until_ > paused_until then paused_until, paused_kind = until_, s.kind end
  s.urgent_until = at(g[2])
  s.tat = at(g[3])
  if s.aimd then
    s.factor = share_of(g[4])
    s.factor = recovered(s.factor, share_of(g[5]), at(g[6]), recovery, now)
  end
  scopes[i] = s
end
if paused_kind ~= nil then return wait(paused_until - now, paused_kind) end

-- a claim on the key or on any of the call's scopes (an urgent caller waiting for it, through
-- any of the keys consuming from it) holds the calls that are not urgent
local urgent_until = at(f[12])
if urgent == 0 then
  local held = urgent_until
  for _, s in ipairs(scopes) do held = math.max(held, s.urgent_until) end
  if now < held then return wait(held - now, 'yield') end
end

-- Pacing: the key's schedule and window, then each paced scope's. The longest wait answers,
-- and an urgent caller claims the slot it waits for (on the key, or on that scope).
local longest, longest_reason, longest_state, longest_until = 0, nil, nil, 0
local function hold(seconds, reason, state, current)
  if seconds > longest then
    longest, longest_reason, longest_state, longest_until = seconds, reason, state, current
  end
end

local interval = (1 / (qps * safety * factor * share)) * (1 + 1e-9)
local start = math.max(tat, now)
hold(start - now - (burst - 1) * interval, 'rate', KEYS[1], urgent_until)
local limit = math.max(1, math.floor(qps * share + 1e-9))
if redis.call('LLEN', KEYS[2]) >= limit then
  hold(at(redis.call('LINDEX', KEYS[2], -limit)) + 1 + guard - now, 'window', KEYS[1], urgent_until)
end

for _, s in ipairs(scopes) do
  if s.qps > 0 then
    s.interval = (1 / (s.qps * s.pace * s.factor * share)) * (1 + 1e-9)
    s.start = math.max(s.tat, now)
    hold(s.start - now - (s.burst - 1) * s.interval, s.kind, s.state, s.urgent_until)
    s.limit = math.max(1, math.floor(s.qps * share + 1e-9))
    if redis.call('LLEN', s.sent) >= s.limit then
      local free_at = at(redis.call('LINDEX', s.sent, -s.limit)) + 1 + s.guard
      hold(free_at - now, s.kind, s.state, s.urgent_until)
    end
  end
end

if longest_reason ~= nil then
  if urgent == 1 and claim > 0 and now + longest + claim > longest_until then
    redis.call('HSET', longest_state, 'urgent_until', fmt(now + longest + claim))
    redis.call('EXPIRE', longest_state, ttl)
  end
  return wait(longest, longest_reason)
end

-- every scope admits the call: take its slot in each
redis.call('HSET', KEYS[1], 'tat', fmt(start + interval), 'factor', fmt(factor), 'day', day,
  'calls_today', calls_today + 1)
if probe == 1 then redis.call('HSET', KEYS[1], 'probing_until', fmt(now + probe_hold)) end
redis.call('RPUSH', KEYS[2], fmt(now))
redis.call('LTRIM', KEYS[2], -limit, -1)
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
for _, s in ipairs(scopes) do
  if s.qps > 0 then
    redis.call('HSET', s.state, 'tat', fmt(s.start + s.interval))
    if s.aimd then redis.call('HSET', s.state, 'factor', fmt(s.factor)) end
    redis.call('RPUSH', s.sent, fmt(now))
    redis.call('LTRIM', s.sent, -s.limit, -1)
    redis.call('EXPIRE', s.state, ttl)
    redis.call('EXPIRE', s.sent, ttl)
  end
end
return {1, 0, 'ok', us(now), probe}
