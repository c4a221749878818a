-- Admit a client's job against its caps: jobs in progress and ids submitted this (Beijing) day.
-- KEYS[1] the client's active-jobs zset, KEYS[2] its day counter, KEYS[3] its jobs index (one
-- hash slot: the client's tag). ARGV: job, created, ids, max_active, max_ids_per_day,
-- day_ttl_s, index_ttl_s. The caller has already dropped finished jobs from KEYS[1].
-- Returns {1, 'ok', 0} or {0, limit, used} with limit 'active' | 'ids_per_day'.
local n = tonumber(ARGV[3])
local active = redis.call('ZCARD', KEYS[1])
if active >= tonumber(ARGV[4]) then
  return {0, 'active', active}
end
local used = tonumber(redis.call('GET', KEYS[2]) or '0')
if used == nil then -- not a number (written by something else): start the count again
  redis.call('DEL', KEYS[2])
  used = 0
end
if used + n > tonumber(ARGV[5]) then
  return {0, 'ids_per_day', used}
end
redis.call('INCRBY', KEYS[2], n)
redis.call('EXPIRE', KEYS[2], ARGV[6])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[7])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[3], ARGV[7])
return {1, 'ok', 0}
