-- basket_adjust: add units to a basket's available stock, or take them away. Never lets stock
-- fall below zero, nor capacity rise above the bound the caller gives: bounding capacity keeps
-- every counter (and the Postgres columns) far from any overflow, whatever an admin sends.
-- KEYS[1] basket: the basket hash
-- KEYS[2] stream: the partition's event stream
-- KEYS[3] lostBaskets: the partition's set of baskets Redis lost, until the reconciler rebuilds them
-- ARGV[1] basketId
-- ARGV[2] delta
-- ARGV[3] maxCapacity: the largest capacity a basket may have
-- Returns {"ok", <the basket's BASKET fields>, nowMs} or one of {"basket_not_found"},
-- {"insufficient_stock"}, {"capacity_exceeded"}, {"unavailable"} (under repair, or lost and
-- not rebuilt yet).
local b = redis.call('HMGET', KEYS[1], 'stock', 'maint', 'capacity')
if not b[1] then
  if redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then return {'unavailable'} end
  return {'basket_not_found'}
end
if b[2] then return {'unavailable'} end
local delta = tonumber(ARGV[2])
if tonumber(b[1]) + delta < 0 then return {'insufficient_stock'} end
if tonumber(b[3]) + delta > tonumber(ARGV[3]) then return {'capacity_exceeded'} end
local now = nowMs()
local stock = redis.call('HINCRBY', KEYS[1], 'stock', delta)
local capacity = redis.call('HINCRBY', KEYS[1], 'capacity', delta)
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('XADD', KEYS[2], '*', 'type', 'stock_adjusted', 'basket', ARGV[1], 'seq', seq,
  'stock', stock, 'capacity', capacity, 'delta', delta, 'at', now)
return basketView(KEYS[1], now)
