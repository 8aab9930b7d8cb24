-- repair_reservations: write reservations of one basket back into Redis from Postgres (the
-- reconciler calls this after it has taken the basket out of service with `maint` = 1 and
-- drained its events, so nothing races it; repair_basket comes last and ends the repair).
-- KEYS[1] holds: the partition's pending holds (zset)
-- KEYS[2...] reservation: once per reservation
-- ARGV[1] retentionSeconds: how long a finished reservation stays readable
-- ARGV[2...] id basket consumer qty status exp pay: once per reservation (pay "" for none)
-- Returns {"ok", count}.
local retention = tonumber(ARGV[1])
local count = #KEYS - 1
for i = 1, count do
  local a = 2 + (i - 1) * 7
  local id, status, exp = ARGV[a], ARGV[a + 4], ARGV[a + 5]
  local key = KEYS[1 + i]
  redis.call('HSET', key, 'basket', ARGV[a + 1], 'consumer', ARGV[a + 2], 'qty', ARGV[a + 3],
    'status', status, 'exp', exp, 'pay', ARGV[a + 6])
  if status == 'pending' then
    redis.call('PERSIST', key)
    redis.call('ZADD', KEYS[1], tonumber(exp), id)
  else
    redis.call('ZREM', KEYS[1], id)
    if status == 'confirmed' then redis.call('PERSIST', key) else redis.call('EXPIRE', key, retention) end
  end
end
return {'ok', count}
