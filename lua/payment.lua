-- payment: apply one verified payment webhook, at most once per event id.
-- The event id is claimed with SET NX in this same script, so a claim never exists without
-- its effect, and a second delivery (concurrent or not) finds the claim and changes nothing.
-- The reservation's basket never changes, so the caller reads it first and passes its key; the
-- script checks it still matches and touches no other key.
-- KEYS[1] claim: the event id's claim
-- KEYS[2] reservation: the reservation's hash
-- KEYS[3] holds: the partition's pending holds (zset)
-- KEYS[4] stream: the partition's event stream
-- KEYS[5] basket: the reservation's basket hash (any key of the partition when there is none)
-- ARGV[1] eventId
-- ARGV[2] type: "payment.succeeded" or "payment.failed"
-- ARGV[3] reservationId
-- ARGV[4] paymentId
-- ARGV[5] amountCents
-- ARGV[6] currency
-- ARGV[7] claimSeconds: how long the claim is kept
-- ARGV[8] basketId: the reservation's basket as the caller read it, "" when it found none
-- Returns {"duplicate"}, {"unavailable"}, {"stale_keys"} (the reservation is not what the
-- caller read: read again) or {"processed", outcome}.
-- Everything is checked before the first write: Redis does not roll a script back, so a script
-- that failed after claiming the event would answer every retry "duplicate" with no payment on
-- record. A known reservation whose basket is under repair, or missing (Redis lost it and the
-- reconciler has not rebuilt it yet), is {"unavailable"}: the provider retries.
local claimed = redis.call('GET', KEYS[1])
if claimed then
  -- A duplicate writes its claim again as it is (nothing changes, but the write is replicated,
  -- so the WAIT after this call covers the first delivery's effect too: REDIS_WAIT_REPLICAS).
  redis.call('SET', KEYS[1], claimed, 'KEEPTTL')
  return {'duplicate'}
end

local now = nowMs()
local r = readRecord(KEYS[2], RESERVATION)
if (r.basket or '') ~= ARGV[8] then return {'stale_keys'} end

local outcome
if ARGV[2] == 'payment.failed' then
  outcome = 'failed'
elseif not r.basket then
  outcome = 'unknown_reservation'
elseif redis.call('HGET', KEYS[5], 'maint') or redis.call('HEXISTS', KEYS[5], 'stock') == 0 then
  return {'unavailable'}
elseif not wholeReservation(r) then
  -- a corrupt reservation is never half-applied: the provider retries, the audit reports it
  return {'unavailable'}
elseif r.status == 'pending' and tonumber(r.exp) > now then
  outcome = 'confirmed'
else
  -- expired, cancelled, a hold that ran out, or a second payment for a confirmed reservation
  outcome = 'refund_required'
end

-- writes start here
redis.call('SET', KEYS[1], outcome, 'NX', 'EX', tonumber(ARGV[7]))
if outcome == 'confirmed' then
  local quantity = tonumber(r.qty)
  redis.call('HINCRBY', KEYS[5], 'pending', -quantity)
  redis.call('HINCRBY', KEYS[5], 'confirmed', quantity)
  local seq = redis.call('HINCRBY', KEYS[5], 'seq', 1)
  local basket = redis.call('HMGET', KEYS[5], 'stock', 'capacity')
  redis.call('HSET', KEYS[2], 'status', 'confirmed', 'pay', ARGV[4])
  redis.call('ZREM', KEYS[3], ARGV[3])
  r.status = 'confirmed'
  r.pay = ARGV[4]
  redis.call('XADD', KEYS[4], '*', unpack(withRecord({'type', 'payment', 'event', ARGV[1], 'kind', ARGV[2],
    'res', ARGV[3], 'payment', ARGV[4], 'amount', ARGV[5], 'currency', ARGV[6], 'outcome', outcome, 'at', now,
    'seq', seq, 'stock', basket[1], 'capacity', basket[2]}, r, RESERVATION)))
else
  -- nothing changed but the payment's own record (and the reservation's basket, when known)
  redis.call('XADD', KEYS[4], '*', unpack(withRecord({'type', 'payment', 'event', ARGV[1], 'kind', ARGV[2],
    'res', ARGV[3], 'payment', ARGV[4], 'amount', ARGV[5], 'currency', ARGV[6], 'outcome', outcome, 'at', now},
    r, {'basket'})))
end
return {'processed', outcome}
