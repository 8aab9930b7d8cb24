-- basket_create: create a basket with its stock, hold time and per-consumer limit.
-- KEYS[1] basket: the basket hash
-- KEYS[2] stream: the partition's event stream
-- KEYS[3] basketIndex: the partition's set of basket ids
-- KEYS[4] lostBaskets: the partition's set of baskets Redis lost, until the reconciler rebuilds them
-- ARGV[1] basketId
-- ARGV[2] stock
-- ARGV[3] holdSeconds
-- ARGV[4] maxPerConsumer
-- Returns {"ok", <the basket's BASKET fields>}, {"basket_exists"}, or
-- {"unavailable"} for a basket Redis lost and the reconciler has not rebuilt yet (it exists: a
-- new one must not take its place).
if redis.call('EXISTS', KEYS[1]) == 1 then return {'basket_exists'} end
if redis.call('SISMEMBER', KEYS[4], ARGV[1]) == 1 then return {'unavailable'} end
local now = nowMs()
local stock = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'stock', stock, 'pending', 0, 'confirmed', 0, 'capacity', stock,
  'hold', tonumber(ARGV[3]), 'max', tonumber(ARGV[4]), 'seq', 1, 'created', now)
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('XADD', KEYS[2], '*', 'type', 'basket_created', 'basket', ARGV[1], 'seq', 1,
  'stock', stock, 'capacity', stock, 'hold', ARGV[3], 'max', ARGV[4], 'at', now)
return recordReply('ok', readRecord(KEYS[1], BASKET), BASKET)
