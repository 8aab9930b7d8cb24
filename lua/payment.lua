-- payment: apply one verified payment webhook, at most once per event id.
-- The event id is claimed with SET NX in this same script, so a claim never exists without
-- its effect, and a second delivery (concurrent or not) finds the claim and changes nothing.
-- KEYS[1] claim key of the event id   KEYS[2] reservation hash   KEYS[3] holds (zset)
-- KEYS[4] partition stream
-- ARGV[1] key prefix  ARGV[2] event id  ARGV[3] type  ARGV[4] reservationId  ARGV[5] paymentId
-- ARGV[6] amountCents  ARGV[7] currency  ARGV[8] claim retention (s)  ARGV[9] retention of
-- finished reservations (s)
-- Returns {"duplicate"}, {"unavailable"} or {"processed", outcome}.
if redis.call('EXISTS', KEYS[1]) == 1 then return {'duplicate'} end

local prefix = ARGV[1]
local now = redis.call('TIME')
local nowMs = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local r = redis.call('HMGET', KEYS[2], 'basket', 'consumer', 'qty', 'status', 'exp')
local basketKey = r[1] and (prefix .. ':b:' .. r[1])

local outcome
if ARGV[3] == 'payment.failed' then
  outcome = 'failed'
elseif not r[1] then
  outcome = 'unknown_reservation'
elseif redis.call('HGET', basketKey, 'maint') == '1' then
  return {'unavailable'}
elseif r[4] == 'pending' and tonumber(r[5]) > nowMs then
  outcome = 'confirmed'
else
  -- expired, cancelled, a hold that ran out, or a second payment for a confirmed reservation
  outcome = 'refund_required'
end

-- writes start here
redis.call('SET', KEYS[1], outcome, 'NX', 'EX', tonumber(ARGV[8]))
local fields = {'type', 'payment', 'event', ARGV[2], 'kind', ARGV[3], 'res', ARGV[4],
  'payment', ARGV[5], 'amount', ARGV[6], 'currency', ARGV[7], 'outcome', outcome, 'at', nowMs}
if outcome == 'confirmed' then
  local quantity = tonumber(r[3])
  redis.call('HINCRBY', basketKey, 'pending', -quantity)
  redis.call('HINCRBY', basketKey, 'confirmed', quantity)
  local seq = redis.call('HINCRBY', basketKey, 'seq', 1)
  local basket = redis.call('HMGET', basketKey, 'stock', 'capacity')
  redis.call('HSET', KEYS[2], 'status', 'confirmed', 'pay', ARGV[5])
  redis.call('ZREM', KEYS[3], ARGV[4])
  for _, v in ipairs({'basket', r[1], 'seq', seq, 'stock', basket[1], 'capacity', basket[2],
    'consumer', r[2], 'qty', quantity, 'status', 'confirmed', 'exp', r[5]}) do
    fields[#fields + 1] = v
  end
elseif r[1] then
  fields[#fields + 1] = 'basket'
  fields[#fields + 1] = r[1]
end
redis.call('XADD', KEYS[4], '*', unpack(fields))
return {'processed', outcome}
