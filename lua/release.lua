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
-- cancel returns {"cancelled", <the reservation's RESERVATION fields>} or one of
-- "reservation_not_found", "reservation_expired",
-- "unavailable", "stale_keys" (the reservation is not the one the caller read);
-- expire returns {"expired", count, kept}: kept is how many listed holds it could not expire now
-- (their basket is under repair, or the caller's read of them is stale); each is looked at
-- again 5 s later (its score moves on; its expiry is the reservation's own `exp`), so holds
-- that must wait never hold up the rest of the partition.
local retention = tonumber(ARGV[2])
local now = nowMs()

-- Gives a reservation's units back and records the new status; false (nothing given back) when
-- the store is corrupt. `r` is the record as read. Redis does not roll back a script that fails
-- half way, and a cancel can be retried: a counter that broke a write after the stock was given
-- back would give it back on every retry (and every expiry round), units sold twice. So every
-- counter is read and checked first, and the writes that can still fail (a consumer-count hash,
-- holds or stream of the wrong type) come first, each undone if a later one fails; a corrupt
-- store writes nothing but the basket's mark (when readable), so the audit repairs it.
local function finish(id, key, basketKey, unitsKey, r, newStatus)
  local quantity = tonumber(r.qty)
  local oldStatus = r.status
  local b = redis.call('HMGET', basketKey, 'stock', oldStatus, 'seq', 'capacity', 'mismatch')
  local stock, held, seqNumber, mark = storedCount(b[1]), storedCount(b[2] or '0'), storedCount(b[3]), storedCount(b[5] or '0')
  local function corrupt()
    if mark then redis.call('HSET', basketKey, 'mismatch', string.format('%d', mark + 1)) end
    return false
  end
  if not (stock and held and seqNumber) then return corrupt() end
  -- the consumer's count: an integer (a negative one too: it is taken down and deleted) in a hash
  local units = redis.pcall('HGET', unitsKey, r.consumer)
  if pcallFailed(units) or (units and not (#units <= 15 and string.match(units, '^-?%d+$'))) then return corrupt() end
  local removed = redis.pcall('ZREM', KEYS[1], id)
  if pcallFailed(removed) then return corrupt() end
  local seq = string.format('%d', seqNumber + 1)
  r.status = newStatus
  local event = redis.pcall('XADD', KEYS[2], '*', unpack(withRecord({'type', newStatus, 'seq', seq, 'stock',
    string.format('%d', stock + quantity), 'capacity', b[4], 'res', id, 'from', oldStatus, 'at', now}, r, RESERVATION)))
  if pcallFailed(event) then
    r.status = oldStatus
    if removed == 1 then redis.call('ZADD', KEYS[1], r.exp, id) end
    return corrupt()
  end
  -- (nothing below can fail: every key's type is proved, and the counters are written as the
  -- numbers checked above, not incremented: HINCRBY refuses what the checks let through, such as
  -- a leading zero, and would fail here with the hold and the event already written)
  redis.call('HSET', basketKey, 'stock', string.format('%d', stock + quantity), oldStatus, string.format('%d', held - quantity),
    'seq', seq)
  local left = tonumber(units or '0') - quantity
  if left <= 0 then
    redis.call('HDEL', unitsKey, r.consumer)
  else
    redis.call('HSET', unitsKey, r.consumer, string.format('%d', left))
  end
  redis.call('HSET', key, 'status', newStatus, 'ended', now)
  redis.call('EXPIRE', key, retention)
  return true
end

-- A basket under repair, or missing (Redis lost it and the reconciler has not rebuilt it yet),
-- is left alone: the caller gets "unavailable" and may retry.
local function underRepair(basketKey)
  local b = redis.call('HMGET', basketKey, 'stock', 'maint')
  return (not b[1]) or b[2] ~= false
end

if ARGV[1] == 'cancel' then
  local id = ARGV[3]
  local key = KEYS[3]
  local r = readRecord(key, RESERVATION)
  if not r.basket then return {'reservation_not_found'} end
  if r.basket ~= ARGV[4] or r.consumer ~= ARGV[5] then return {'stale_keys'} end
  if not wholeReservation(r) then return {'unavailable'} end
  if r.status == 'cancelled' then
    -- Cancelled before: the same status is written again (nothing changes, but the write is
    -- replicated, so the WAIT after this call covers the first cancel too: REDIS_WAIT_REPLICAS).
    redis.call('HSET', key, 'status', 'cancelled')
    return recordReply('cancelled', r, RESERVATION)
  end
  if r.status == 'expired' then return {'reservation_expired'} end
  if underRepair(KEYS[4]) then return {'unavailable'} end
  if r.status == 'pending' and tonumber(r.exp) <= now then
    -- the hold ran out before the expiry loop got to it: it expires now, not cancels
    if not finish(id, key, KEYS[4], KEYS[5], r, 'expired') then return {'unavailable'} end
    return {'reservation_expired'}
  end
  if not finish(id, key, KEYS[4], KEYS[5], r, 'cancelled') then return {'unavailable'} end
  return recordReply('cancelled', r, RESERVATION)
end

-- expire: every listed reservation whose hold is due now
local expired = 0
local kept = 0
for i = 1, (#KEYS - 2) / 3 do
  local id = ARGV[3 * i]
  local key = KEYS[3 * i]
  local r = readRecord(key, RESERVATION)
  if not r.basket then
    redis.call('ZREM', KEYS[1], id)
  elseif r.basket == ARGV[3 * i + 1] and r.consumer == ARGV[3 * i + 2] and wholeReservation(r) then
    if r.status ~= 'pending' then
      redis.call('ZREM', KEYS[1], id)
    elseif tonumber(r.exp) <= now and not underRepair(KEYS[3 * i + 1])
      and finish(id, key, KEYS[3 * i + 1], KEYS[3 * i + 2], r, 'expired') then
      expired = expired + 1
    else
      -- (not due, under repair, or its store corrupt: looked at again later)
      kept = kept + 1
      redis.call('ZADD', KEYS[1], 'XX', now + 5000, id)
    end
  else
    kept = kept + 1
    redis.call('ZADD', KEYS[1], 'XX', now + 5000, id)
  end
end
return {'expired', expired, kept}
