-- release: cancel one reservation (pending or confirmed -> cancelled), or expire due holds.
-- Units go back exactly once because only a pending or confirmed reservation gives any back,
-- and it leaves those states in the same atomic step.
-- A reservation's basket and consumer never change, so the caller reads them first and passes
-- every key here; the script checks they still match and touches no other key.
-- KEYS[1] holds: the partition's pending holds (zset)
-- KEYS[2] stream: the partition's event stream
-- KEYS[3...] reservation basket consumerUnits: once per reservation
-- ARGV[1] mode: "cancel" (exactly one reservation) or "expire" (those that are due)
-- ARGV[2] retentionSeconds: how long a finished reservation stays readable
-- ARGV[3...] reservationId basketId consumerId: once per reservation, as the caller read them
-- cancel returns {answer, basket, consumer, qty, status, exp, pay} with answer one of
-- "cancelled" (with the reservation's fields), "reservation_not_found", "reservation_expired",
-- "unavailable", "stale_keys" (the reservation is not the one the caller read);
-- expire returns {"expired", count, kept}: kept is how many listed holds it could not expire now
-- (their basket is under repair, or the caller's read of them is stale); each is looked at
-- again 5 s later (its score moves on; its expiry is the reservation's own `exp`), so holds
-- that must wait never hold up the rest of the partition.
local retention = tonumber(ARGV[2])
local now = redis.call('TIME')
local nowMs = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)

-- Gives a reservation's units back and records the new status. `r` holds the HMGET fields.
local function finish(id, key, basketKey, unitsKey, r, newStatus)
  local quantity = tonumber(r[3])
  local oldStatus = r[4]
  redis.call('HINCRBY', basketKey, 'stock', quantity)
  redis.call('HINCRBY', basketKey, oldStatus, -quantity)
  local seq = redis.call('HINCRBY', basketKey, 'seq', 1)
  local basket = redis.call('HMGET', basketKey, 'stock', 'capacity')
  if redis.call('HINCRBY', unitsKey, r[2], -quantity) <= 0 then redis.call('HDEL', unitsKey, r[2]) end
  redis.call('ZREM', KEYS[1], id)
  redis.call('HSET', key, 'status', newStatus, 'ended', nowMs)
  redis.call('EXPIRE', key, retention)
  redis.call('XADD', KEYS[2], '*', 'type', newStatus, 'basket', r[1], 'seq', seq,
    'stock', basket[1], 'capacity', basket[2], 'res', id, 'consumer', r[2], 'qty', quantity,
    'status', newStatus, 'exp', r[5], 'from', oldStatus, 'at', nowMs)
end

-- A basket under repair, or missing (Redis lost it and the reconciler has not rebuilt it yet),
-- is left alone: the caller gets "unavailable" and may retry.
local function underRepair(basketKey)
  local b = redis.call('HMGET', basketKey, 'stock', 'maint')
  return (not b[1]) or b[2] ~= false
end

local function read(i)
  local key = KEYS[3 * i]
  return key, redis.call('HMGET', key, 'basket', 'consumer', 'qty', 'status', 'exp', 'pay')
end

if ARGV[1] == 'cancel' then
  local id = ARGV[3]
  local key, r = read(1)
  if not r[1] then return {'reservation_not_found'} end
  if r[1] ~= ARGV[4] or r[2] ~= ARGV[5] then return {'stale_keys'} end
  local status = r[4]
  if status == 'cancelled' then
    -- Cancelled before: the same status is written again (nothing changes, but the write is
    -- replicated, so the WAIT after this call covers the first cancel too: REDIS_WAIT_REPLICAS).
    redis.call('HSET', key, 'status', 'cancelled')
    return {'cancelled', r[1], r[2], r[3], r[4], r[5], r[6]}
  end
  if status == 'expired' then return {'reservation_expired'} end
  if underRepair(KEYS[4]) then return {'unavailable'} end
  if status == 'pending' and tonumber(r[5]) <= nowMs then
    -- the hold ran out before the expiry loop got to it: it expires now, not cancels
    finish(id, key, KEYS[4], KEYS[5], r, 'expired')
    return {'reservation_expired'}
  end
  finish(id, key, KEYS[4], KEYS[5], r, 'cancelled')
  return {'cancelled', r[1], r[2], r[3], 'cancelled', r[5], r[6]}
end

-- expire: every listed reservation whose hold is due now
local expired = 0
local kept = 0
for i = 1, (#KEYS - 2) / 3 do
  local id = ARGV[3 * i]
  local key, r = read(i)
  if not r[1] then
    redis.call('ZREM', KEYS[1], id)
  elseif r[1] == ARGV[3 * i + 1] and r[2] == ARGV[3 * i + 2] then
    if r[4] ~= 'pending' then
      redis.call('ZREM', KEYS[1], id)
    elseif tonumber(r[5]) <= nowMs and not underRepair(KEYS[3 * i + 1]) then
      finish(id, key, KEYS[3 * i + 1], KEYS[3 * i + 2], r, 'expired')
      expired = expired + 1
    else
      kept = kept + 1
      redis.call('ZADD', KEYS[1], 'XX', nowMs + 5000, id)
    end
  else
    kept = kept + 1
    redis.call('ZADD', KEYS[1], 'XX', nowMs + 5000, id)
  end
end
return {'expired', expired, kept}
