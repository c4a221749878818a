-- Delete a corrupt L2 value, unless another value was written since it was read.
-- KEYS[1] the answer. ARGV[1] the corrupt value as read.
-- Returns 1 if it was deleted.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
