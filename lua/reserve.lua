-- reserve: take `quantity` units of a basket for a consumer, atomically.
-- KEYS[1] basket hash        KEYS[2] reservation hash   KEYS[3] consumer's units on the basket
-- KEYS[4] holds (zset)       KEYS[5] partition stream    KEYS[6] idempotency record ("" slot key if none)
-- KEYS[7] consumer's rate-limit window
-- ARGV[1] basketId  ARGV[2] consumerId  ARGV[3] quantity  ARGV[4] reservationId
-- ARGV[5] attempts allowed per second (0: no limit)  ARGV[6] idempotency fingerprint ("" if none)
-- ARGV[7] idempotency retention (s)  ARGV[8] retention of finished reservations (s, unused here)
-- Returns one answer string: "granted|<id>|<expiresAtMs>|<remaining>", "sold_out",
-- "limit_exceeded", "basket_not_found", "unavailable", "rate_limited|<retryMs>",
-- "idempotency_key_reused", "id_collision". A replay returns the first answer, stored verbatim.
-- Every check runs before the first write, so a failure leaves nothing half done.
local quantity = tonumber(ARGV[3])
local idempotent = ARGV[6] ~= ''

if idempotent then
  local stored = redis.call('HMGET', KEYS[6], 'fp', 'answer')
  if stored[1] then
    if stored[1] ~= ARGV[6] then return 'idempotency_key_reused' end
    return stored[2]
  end
end

local limit = tonumber(ARGV[5])
if limit > 0 then
  local attempts = tonumber(redis.call('GET', KEYS[7]) or '0')
  if attempts >= limit then
    local ttl = redis.call('PTTL', KEYS[7])
    if ttl < 0 then ttl = 1000 end
    return 'rate_limited|' .. ttl
  end
end

local basket = redis.call('HMGET', KEYS[1], 'stock', 'pending', 'capacity', 'hold', 'max', 'maint')
local answer
local stock, hold
if basket[6] == '1' then
  -- taken out of service for a repair (or being rebuilt): nothing is recorded, the client retries
  return 'unavailable'
elseif not basket[1] then
  answer = 'basket_not_found'
else
  stock = tonumber(basket[1])
  hold = tonumber(basket[4])
  local held = tonumber(redis.call('GET', KEYS[3]) or '0')
  if held + quantity > tonumber(basket[5]) then
    answer = 'limit_exceeded'
  elseif stock < quantity then
    answer = 'sold_out'
  elseif redis.call('EXISTS', KEYS[2]) == 1 then
    -- never happens with the gateway's ids; an answer, not an error, so pipelines keep going
    return 'id_collision'
  end
end

-- writes start here
if limit > 0 then
  if redis.call('INCR', KEYS[7]) == 1 then redis.call('PEXPIRE', KEYS[7], 1000) end
end

if not answer then
  local now = redis.call('TIME')
  local nowMs = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  local expiresAt = nowMs + hold * 1000
  local remaining = stock - quantity
  redis.call('HINCRBY', KEYS[1], 'stock', -quantity)
  local pending = redis.call('HINCRBY', KEYS[1], 'pending', quantity)
  local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
  redis.call('HSET', KEYS[2], 'basket', ARGV[1], 'consumer', ARGV[2], 'qty', quantity,
    'status', 'pending', 'exp', expiresAt, 'created', nowMs, 'pay', '')
  redis.call('INCRBY', KEYS[3], quantity)
  redis.call('ZADD', KEYS[4], expiresAt, ARGV[4])
  redis.call('XADD', KEYS[5], '*', 'type', 'reserved', 'basket', ARGV[1], 'seq', seq,
    'stock', remaining, 'capacity', basket[3], 'res', ARGV[4], 'consumer', ARGV[2], 'qty', quantity,
    'status', 'pending', 'exp', expiresAt, 'at', nowMs)
  answer = 'granted|' .. ARGV[4] .. '|' .. expiresAt .. '|' .. remaining
end

if idempotent then
  redis.call('HSET', KEYS[6], 'fp', ARGV[6], 'answer', answer)
  redis.call('EXPIRE', KEYS[6], tonumber(ARGV[7]))
end
return answer
