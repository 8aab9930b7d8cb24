-- repair: rebuild a basket's Redis state from Postgres (the reconciler calls this after it has
-- taken the basket out of service with `maint` = 1 and drained its events, so nothing races it).
-- KEYS[1] basket hash   KEYS[2] holds (zset)   KEYS[3] partition stream   KEYS[4] basket index (set)
-- ARGV[1] mode: "reservations" or "basket"   ARGV[2] key prefix   ARGV[3] basketId
-- reservations: ARGV[4] retention of finished reservations (s), then 6 values per reservation:
--   id, consumerId, quantity, status, expiresAtMs, paymentId ("" for none)
-- basket: ARGV[4] stock  ARGV[5] pending  ARGV[6] confirmed  ARGV[7] capacity  ARGV[8] hold
--   ARGV[9] max  ARGV[10] seq  ARGV[11] reason, then consumer-key/units pairs to set (units 0 deletes)
-- The "basket" call is the last one: it writes the counters and puts the basket back in service.
local prefix = ARGV[2]
local basketId = ARGV[3]

if ARGV[1] == 'reservations' then
  local retention = tonumber(ARGV[4])
  local i = 5
  while i + 5 <= #ARGV do
    local id, consumer, quantity, status, exp, pay = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
    local key = prefix .. ':r:' .. id
    redis.call('HSET', key, 'basket', basketId, 'consumer', consumer, 'qty', quantity, 'status', status,
      'exp', exp, 'pay', pay)
    if status == 'pending' then
      redis.call('PERSIST', key)
      redis.call('ZADD', KEYS[2], tonumber(exp), id)
    else
      redis.call('ZREM', KEYS[2], id)
      if status == 'confirmed' then redis.call('PERSIST', key) else redis.call('EXPIRE', key, retention) end
    end
    i = i + 6
  end
  return 'ok'
end

local now = redis.call('TIME')
local nowMs = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local i = 12
while i + 1 <= #ARGV do
  if tonumber(ARGV[i + 1]) > 0 then
    redis.call('SET', ARGV[i], ARGV[i + 1])
  else
    redis.call('DEL', ARGV[i])
  end
  i = i + 2
end
redis.call('HSET', KEYS[1], 'stock', ARGV[4], 'pending', ARGV[5], 'confirmed', ARGV[6], 'capacity', ARGV[7],
  'hold', ARGV[8], 'max', ARGV[9], 'seq', ARGV[10])
redis.call('HDEL', KEYS[1], 'maint')
redis.call('SADD', KEYS[4], basketId)
redis.call('XADD', KEYS[3], '*', 'type', 'basket_repaired', 'basket', basketId, 'seq', ARGV[10],
  'stock', ARGV[4], 'capacity', ARGV[7], 'hold', ARGV[8], 'max', ARGV[9], 'reason', ARGV[11], 'at', nowMs)
return 'ok'
