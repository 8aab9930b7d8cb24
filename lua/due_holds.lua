-- due_holds: the ids of a partition's holds that are due by Redis's clock (the clock the
-- release script decides by), oldest first, at most `limit`.
-- KEYS[1] holds: the partition's pending holds (zset, score = expiry in ms)
-- ARGV[1] limit
local now = redis.call('TIME')
local nowMs = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', nowMs), 'LIMIT', 0, tonumber(ARGV[1]))
