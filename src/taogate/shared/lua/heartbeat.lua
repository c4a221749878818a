-- Mark this replica alive and count the live ones.
-- KEYS[1] the sorted set of replicas (score: last heartbeat, server time).
-- ARGV: replica id, seconds after which a silent replica counts as gone.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 10))
return redis.call('ZCARD', KEYS[1])
