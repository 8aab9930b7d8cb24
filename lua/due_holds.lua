-- due_holds: the ids of a partition's holds that are due by Redis's clock (the clock the
-- release script decides by), oldest first: `limit` of them after skipping `offset` (holds a
-- round could not expire yet, such as those of a basket under repair, are skipped over so they
-- never hold up the rest of the partition).
-- KEYS[1] holds: the partition's pending holds (zset, score = expiry in ms)
-- ARGV[1] offset
-- ARGV[2] limit
local now = redis.call('TIME')
local nowMs = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', nowMs), 'LIMIT', tonumber(ARGV[1]), tonumber(ARGV[2]))
