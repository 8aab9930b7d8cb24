-- basket_create: create a basket with its stock and sale settings (hold time, per-consumer limit,
-- sale window).
-- KEYS[1] basket: the basket hash
-- KEYS[2] stream: the partition's event stream
-- KEYS[3] basketIndex: the partition's set of basket ids
-- KEYS[4] lostBaskets: the partition's set of baskets Redis lost, until the reconciler rebuilds them
-- ARGV[1] basketId
-- ARGV[2] stock
-- ARGV[3] SETTINGS: the basket's settings, one argument each in the prelude's SETTINGS order ("" for none)
-- Returns {"ok", <the basket's BASKET fields>, nowMs}, {"basket_exists"}, or
-- {"unavailable"} for a basket Redis lost and the reconciler has not rebuilt yet (it exists: a
-- new one must not take its place).
if redis.call('EXISTS', KEYS[1]) == 1 then return {'basket_exists'} end
if redis.call('SISMEMBER', KEYS[4], ARGV[1]) == 1 then return {'unavailable'} end
local now = nowMs()
local stock = tonumber(ARGV[2])
local settings = {}
for i = 1, #SETTINGS do settings[SETTINGS[i]] = ARGV[2 + i] end
redis.call('HSET', KEYS[1], unpack(withRecord({'stock', stock, 'pending', 0, 'confirmed', 0, 'capacity', stock,
  'seq', 1, 'created', now}, settings, SETTINGS)))
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('XADD', KEYS[2], '*', unpack(withRecord({'type', 'basket_created', 'basket', ARGV[1], 'seq', 1,
  'stock', stock, 'capacity', stock, 'at', now}, settings, SETTINGS)))
return basketView(KEYS[1], now)
