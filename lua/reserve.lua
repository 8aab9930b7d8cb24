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
local attempts = 0
if limit > 0 then
  attempts = tonumber(redis.call('GET', KEYS[7]) or '0')
  if attempts >= limit then
    local ttl = redis.call('PTTL', KEYS[7])
    if ttl < 0 then ttl = 1000 end
    return 'rate_limited|' .. ttl
  end
end

local basket = redis.call('HMGET', KEYS[1], 'stock', 'pending', 'capacity', 'hold', 'max', 'maint', 'seq')
local answer
local stock, held
if basket[6] == '1' then
  -- taken out of service for a repair (or being rebuilt): nothing is recorded, the client retries
  return 'unavailable'
elseif not basket[1] then
  answer = 'basket_not_found'
else
  stock = tonumber(basket[1])
  held = tonumber(redis.call('GET', KEYS[3]) or '0')
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
  if attempts == 0 then
    redis.call('SET', KEYS[7], 1, 'PX', 1000)
  else
    redis.call('INCR', KEYS[7])
  end
end

if not answer then
  local now = redis.call('TIME')
  local nowMs = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  local expiresAt = nowMs + tonumber(basket[4]) * 1000
  local remaining = stock - quantity
  local seq = tonumber(basket[7]) + 1
  -- one HSET with the values computed from the HMGET above, instead of three HINCRBYs
  redis.call('HSET', KEYS[1], 'stock', remaining, 'pending', tonumber(basket[2]) + quantity, 'seq', seq)
  redis.call('HSET', KEYS[2], 'basket', ARGV[1], 'consumer', ARGV[2], 'qty', quantity,
    'status', 'pending', 'exp', expiresAt)
  redis.call('SET', KEYS[3], held + quantity)
  redis.call('ZADD', KEYS[4], expiresAt, ARGV[4])
  -- the event's status is implied by its type ("reserved" -> pending)
  redis.call('XADD', KEYS[5], '*', 'type', 'reserved', 'basket', ARGV[1], 'seq', seq,
    'stock', remaining, 'capacity', basket[3], 'res', ARGV[4], 'consumer', ARGV[2], 'qty', quantity,
    'exp', expiresAt)
  answer = 'granted|' .. ARGV[4] .. '|' .. expiresAt .. '|' .. remaining
end

if idempotent then
  redis.call('HSET', KEYS[6], 'fp', ARGV[6], 'answer', answer)
  redis.call('EXPIRE', KEYS[6], tonumber(ARGV[7]))
end
return answer
