-- repair_reservations: write reservations of one basket into Redis (what the repair's plan says
-- Redis should hold), one bounded chunk per call. Runs only for the repair that owns the basket:
-- `maint` must hold its token (see repair_lease.lua); the lease is renewed. repair_basket comes
-- last and ends the repair.
-- KEYS[1] basket: the basket hash (its `maint` token is checked)
-- KEYS[2] holds: the partition's pending holds (zset)
-- KEYS[3...] reservation: once per reservation
-- ARGV[1] token: the repair's owner token
-- ARGV[2] leaseMilliseconds
-- ARGV[3...] id basket consumer qty status exp pay ttl: once per reservation (pay "" for none;
-- ttl: seconds a finished reservation has left of its retention, 0 for an active one)
-- Returns {"ok", count} or {"lease_lost"} (another repair owns the basket: nothing written).
if redis.call('HGET', KEYS[1], 'maint') ~= ARGV[1] then return {'lease_lost'} end
local now = redis.call('TIME')
local nowMs = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('HSET', KEYS[1], 'lease', nowMs + tonumber(ARGV[2]))
local count = #KEYS - 2
for i = 1, count do
  local a = 3 + (i - 1) * 8
  local id, status, exp, ttl = ARGV[a], ARGV[a + 4], ARGV[a + 5], tonumber(ARGV[a + 7])
  local key = KEYS[2 + i]
  redis.call('HSET', key, 'basket', ARGV[a + 1], 'consumer', ARGV[a + 2], 'qty', ARGV[a + 3],
    'status', status, 'exp', exp, 'pay', ARGV[a + 6])
  if status == 'pending' then
    redis.call('PERSIST', key)
    redis.call('ZADD', KEYS[2], tonumber(exp), id)
  else
    redis.call('ZREM', KEYS[2], id)
    if status == 'confirmed' then redis.call('PERSIST', key) else redis.call('EXPIRE', key, ttl) end
  end
end
return {'ok', count}
