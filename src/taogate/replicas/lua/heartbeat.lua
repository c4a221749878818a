-- Mark this replica alive; count the live replicas and the recently departed ones.
-- KEYS[1] the live set, KEYS[2] the departed set (scores: server time; one hash slot).
-- ARGV: replica id, seconds after which a silent replica has departed, seconds a departed
--       replica is still counted (it may be cut off from Redis and deciding locally).
-- Returns {live, departed}.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local silent, remember = tonumber(ARGV[2]), tonumber(ARGV[3])
-- a key of the wrong type (written by hand) is dropped, not an error every beat
for _, key in ipairs(KEYS) do
  local found = redis.call('TYPE', key)['ok']
  if found ~= 'zset' and found ~= 'none' then redis.call('DEL', key) end
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - silent)
for _, id in ipairs(gone) do
  redis.call('ZADD', KEYS[2], now, id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - silent)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - remember)
redis.call('EXPIRE', KEYS[1], math.ceil(remember * 2))
redis.call('EXPIRE', KEYS[2], math.ceil(remember * 2))
return {redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2])}
