-- Record the rows of a job, exactly once per id, and finish the job when every id has one.
-- KEYS[1] the job's results hash, KEYS[2] its meta hash (one hash slot: the job's tag).
-- ARGV: ttl_s, then triples (num_iid, row, status) with status found | not_found | failed.
-- Returns {done, total, state}.
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('HINCRBY', KEYS[2], ARGV[i + 2], 1)
    redis.call('HINCRBY', KEYS[2], 'done', 1)
  end
end
local m = redis.call('HMGET', KEYS[2], 'done', 'total', 'state', 'failed')
local done, total, state = tonumber(m[1]) or 0, tonumber(m[2]) or 0, m[3]
if state == 'queued' and done > 0 then
  state = 'running'
  redis.call('HSET', KEYS[2], 'state', state)
end
if done >= total and (state == 'running' or state == 'queued') then
  local t = redis.call('TIME')
  state = ((tonumber(m[4]) or 0) >= total) and 'failed' or 'done'
  redis.call('HSET', KEYS[2], 'state', state, 'finished', t[1])
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
end
return {done, total, state}
