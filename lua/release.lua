-- release: cancel a reservation (pending or confirmed -> cancelled), or expire due holds.
-- Units go back exactly once because only a pending or confirmed reservation gives any back,
-- and it leaves those states in the same atomic step.
-- KEYS[1] holds (zset)   KEYS[2] partition stream   KEYS[3] reservation hash ("" key when expiring)
-- ARGV[1] mode: "cancel" or "expire"   ARGV[2] key prefix of the partition, e.g. "{rg07}"
-- ARGV[3] reservationId (cancel) or batch size (expire)   ARGV[4] retention of finished reservations (s)
-- cancel returns {answer, basket, consumer, qty, status, exp, pay} with answer one of
-- "cancelled", "reservation_not_found", "reservation_expired", "unavailable";
-- expire returns the number of reservations expired.
local prefix = ARGV[2]
local retention = tonumber(ARGV[4])
local now = redis.call('TIME')
local nowMs = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)

-- Gives a reservation's units back and records the new status. `r` holds the HMGET fields.
local function finish(id, key, r, newStatus)
  local basketKey = prefix .. ':b:' .. r[1]
  local quantity = tonumber(r[3])
  local oldStatus = r[4]
  redis.call('HINCRBY', basketKey, 'stock', quantity)
  redis.call('HINCRBY', basketKey, oldStatus, -quantity)
  local seq = redis.call('HINCRBY', basketKey, 'seq', 1)
  local basket = redis.call('HMGET', basketKey, 'stock', 'capacity')
  local consumerKey = prefix .. ':c:' .. r[1] .. '/' .. r[2]
  if redis.call('DECRBY', consumerKey, quantity) <= 0 then redis.call('DEL', consumerKey) end
  redis.call('ZREM', KEYS[1], id)
  redis.call('HSET', key, 'status', newStatus, 'ended', nowMs)
  redis.call('EXPIRE', key, retention)
  redis.call('XADD', KEYS[2], '*', 'type', newStatus, 'basket', r[1], 'seq', seq,
    'stock', basket[1], 'capacity', basket[2], 'res', id, 'consumer', r[2], 'qty', quantity,
    'status', newStatus, 'exp', r[5], 'from', oldStatus, 'at', nowMs)
end

-- A basket under repair, or missing (Redis lost it and the reconciler has not rebuilt it yet),
-- is left alone: the caller gets "unavailable" and may retry.
local function underRepair(basketId)
  local b = redis.call('HMGET', prefix .. ':b:' .. basketId, 'stock', 'maint')
  return (not b[1]) or b[2] == '1'
end

if ARGV[1] == 'cancel' then
  local id = ARGV[3]
  local r = redis.call('HMGET', KEYS[3], 'basket', 'consumer', 'qty', 'status', 'exp', 'pay')
  if not r[1] then return {'reservation_not_found'} end
  local status = r[4]
  if status == 'cancelled' then
    return {'cancelled', r[1], r[2], r[3], r[4], r[5], r[6]}
  end
  if status == 'expired' then return {'reservation_expired'} end
  if underRepair(r[1]) then return {'unavailable'} end
  if status == 'pending' and tonumber(r[5]) <= nowMs then
    -- the hold ran out before the expiry loop got to it: it expires now, not cancels
    finish(id, KEYS[3], r, 'expired')
    return {'reservation_expired'}
  end
  finish(id, KEYS[3], r, 'cancelled')
  return {'cancelled', r[1], r[2], r[3], 'cancelled', r[5], r[6]}
end

-- expire: every due hold of this partition, up to the batch size
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', nowMs, 'LIMIT', 0, tonumber(ARGV[3]))
local expired = 0
for _, id in ipairs(due) do
  local key = prefix .. ':r:' .. id
  local r = redis.call('HMGET', key, 'basket', 'consumer', 'qty', 'status', 'exp')
  if r[4] == 'pending' then
    if not underRepair(r[1]) then
      finish(id, key, r, 'expired')
      expired = expired + 1
    end
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return expired
