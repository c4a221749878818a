-- Record the rows of a job, exactly once per id, and finish the job when every id has one.
-- KEYS[1] the job's results hash, KEYS[2] its meta hash (one hash slot: the job's tag).
-- ARGV: ttl_s, then triples (num_iid, row, status) with status found | not_found | failed.
-- Returns {done, total, state}. Both keys expire ttl_s after this call: a job is kept that
-- long after its last change, finished or not.
--
-- What is read back may be garbage (written by hand, an old version): a key that is not a hash
-- is replaced, a counter that is not a count is taken as 0.
local ttl = tonumber(ARGV[1])
local meta_type = redis.call('TYPE', KEYS[2])['ok']
if meta_type ~= 'hash' then
  -- no job (it expired or was never there) or not a job: nothing to record into
  if meta_type ~= 'none' then redis.call('DEL', KEYS[2]) end
  return {0, 0, false}
end
local results_type = redis.call('TYPE', KEYS[1])['ok']
if results_type ~= 'hash' and results_type ~= 'none' then redis.call('DEL', KEYS[1]) end

local function count(x)
  local n = tonumber(x)
  if n == nil or n ~= n or n < 0 or n == math.huge then return 0 end
  return math.floor(n)
end

local m = redis.call('HMGET', KEYS[2], 'done', 'total', 'state', 'found', 'not_found', 'failed')
local done, total, state = count(m[1]), count(m[2]), m[3]
local counts = {found = count(m[4]), not_found = count(m[5]), failed = count(m[6])}
local added = 0
for i = 2, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    counts[ARGV[i + 2]] = (counts[ARGV[i + 2]] or 0) + 1
    added = added + 1
  end
end
if added > 0 then
  done = done + added
  redis.call('HSET', KEYS[2], 'done', done, 'found', counts.found, 'not_found',
    counts.not_found, 'failed', counts.failed)
end
if state == 'queued' and done > 0 then
  state = 'running'
  redis.call('HSET', KEYS[2], 'state', state)
end
if done >= total and (state == 'running' or state == 'queued') then
  local t = redis.call('TIME')
  state = (counts.failed >= total) and 'failed' or 'done'
  redis.call('HSET', KEYS[2], 'state', state, 'finished', t[1])
end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('EXPIRE', KEYS[1], ttl) end
redis.call('EXPIRE', KEYS[2], ttl)
return {done, total, state}
