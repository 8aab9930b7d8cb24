-- repair_basket: the last step of a repair: write a basket's counters and its consumers' units
-- from Postgres, and put the basket back in service (clears `maint`).
-- KEYS[1] basket: the basket hash
-- KEYS[2] stream: the partition's event stream
-- KEYS[3] basketIndex: the partition's set of basket ids
-- KEYS[4] consumerUnits: units each consumer holds on the basket (hash, rewritten whole)
-- ARGV[1] basketId
-- ARGV[2] stock
-- ARGV[3] pending
-- ARGV[4] confirmed
-- ARGV[5] capacity
-- ARGV[6] holdSeconds
-- ARGV[7] maxPerConsumer
-- ARGV[8] seq
-- ARGV[9] reason: the drift that caused the repair
-- ARGV[10...] consumerId units: once per consumer holding units
-- Returns {"ok"}.
local now = redis.call('TIME')
local nowMs = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('DEL', KEYS[4])
for i = 10, #ARGV - 1, 2 do
  redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[1], 'stock', ARGV[2], 'pending', ARGV[3], 'confirmed', ARGV[4], 'capacity', ARGV[5],
  'hold', ARGV[6], 'max', ARGV[7], 'seq', ARGV[8])
redis.call('HDEL', KEYS[1], 'maint')
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('XADD', KEYS[2], '*', 'type', 'basket_repaired', 'basket', ARGV[1], 'seq', ARGV[8],
  'stock', ARGV[2], 'capacity', ARGV[5], 'hold', ARGV[6], 'max', ARGV[7], 'reason', ARGV[9], 'at', nowMs)
return {'ok'}
