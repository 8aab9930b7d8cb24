-- due_holds: the ids of a partition's holds that are due by Redis's clock (the clock the
-- release script decides by), oldest first, at most `limit`.
-- KEYS[1] holds: the partition's pending holds (zset, score = expiry in ms)
-- ARGV[1] limit
local now = nowMs()
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now), 'LIMIT', 0, tonumber(ARGV[1]))
