-- repair_reservations: write reservations of one basket into Redis (what the repair's plan says
-- Redis should hold), one bounded chunk per call. Runs only for the repair that owns the basket:
-- `maint` must hold its token (see repair_lease.lua); the lease is renewed. repair_basket comes
-- last and ends the repair.
-- KEYS[1] basket: the basket hash (its `maint` token is checked)
-- KEYS[2] holds: the partition's pending holds (zset)
-- KEYS[3...] reservation: once per reservation
-- ARGV[1] token: the repair's owner token
-- ARGV[2] leaseMilliseconds
-- ARGV[3...] id RESERVATION ttl: once per reservation: its id, its fields in the prelude's
-- RESERVATION order ("" for an unknown one), and ttl: seconds a finished reservation has left
-- of its retention, 0 for an active one
-- Returns {"ok", count} or {"lease_lost"} (another repair owns the basket: nothing written).
if redis.call('HGET', KEYS[1], 'maint') ~= ARGV[1] then return {'lease_lost'} end
local now = nowMs()
redis.call('HSET', KEYS[1], 'lease', now + tonumber(ARGV[2]))
-- one reservation's arguments: its id, its RESERVATION fields, its ttl
local stride = #RESERVATION + 2
local count = #KEYS - 2
for i = 1, count do
  local first = 3 + (i - 1) * stride
  local record = {}
  for j = 1, #RESERVATION do record[RESERVATION[j]] = ARGV[first + j] end
  local id, ttl = ARGV[first], tonumber(ARGV[first + stride - 1])
  local key = KEYS[2 + i]
  -- a key of another type (corruption) is replaced: the HSET would fail on it with the repair half
  -- done, and every later repair with it (the basket out of service for good)
  local kind = redis.call('TYPE', key).ok
  if kind ~= 'hash' and kind ~= 'none' then redis.call('DEL', key) end
  redis.call('HSET', key, unpack(withRecord({}, record, RESERVATION)))
  if record.status == 'pending' then
    redis.call('PERSIST', key)
    redis.call('ZADD', KEYS[2], tonumber(record.exp), id)
  else
    redis.call('ZREM', KEYS[2], id)
    if record.status == 'confirmed' then redis.call('PERSIST', key) else redis.call('EXPIRE', key, ttl) end
  end
end
return {'ok', count}
