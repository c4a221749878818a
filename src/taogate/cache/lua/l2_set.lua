-- Write an answer to L2 unless an invalidation came after it was fetched.
-- KEYS[1] the answer, KEYS[2] the id's invalidation marker (one hash slot: the id's tag).
-- ARGV: the encoded answer, its fetch time (wall seconds), TTL seconds.
-- a marker that is not a string, or not a finite time, is garbage: dropped, or ignored
if redis.call('TYPE', KEYS[2])['ok'] ~= 'string' then redis.call('DEL', KEYS[2]) end
local marker = tonumber(redis.call('GET', KEYS[2]))
if marker ~= nil and marker ~= marker then marker = nil end
if marker ~= nil and marker >= tonumber(ARGV[2]) and marker ~= math.huge then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[3]))
return 1
