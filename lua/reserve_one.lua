-- reserve_one: lua/reserve.lua for a call of one request, written straight: the same keys,
-- arguments, decisions, writes and answer as reserve.lua called with one request (the
-- equivalence tests hold the two equal on random mixes), without what deciding several costs a
-- call of one: the closure over the call's state, the pcall around each request and the carried
-- numbers (some 2-4 µs of Redis CPU, measured in docs/performance.md). A Redis error of the
-- request's own keys (a key of the wrong type) is the call's error reply here, where reserve.lua
-- answers {"failed", message}: the gateway reads both as the same server error.
-- Its KEYS and ARGV are those of reserve.lua for one request, as reserve.lua describes them:
-- KEYS[1] basket
-- KEYS[2] consumerUnits
-- KEYS[3] holds
-- KEYS[4] stream
-- KEYS[5] lostBaskets
-- KEYS[6] partitionMarker
-- KEYS[7] room
-- KEYS[8] reservation
-- KEYS[9] idempotency
-- KEYS[10] rateLimit
-- ARGV[1] basketId
-- ARGV[2] attemptsPerSecond
-- ARGV[3] idempotencySeconds
-- ARGV[4] refusalSeconds
-- ARGV[5] consumerId
-- ARGV[6] quantity
-- ARGV[7] reservationId
-- ARGV[8] fingerprint
-- ARGV[9] admissionExpires
-- ARGV[10] admissionEpoch
-- Returns {answer}: reserve.lua's one answer, in a list of one.
local reservationKey, idempotencyKey, rateKey = KEYS[8], KEYS[9], KEYS[10]
local consumer, quantityText, reservationId, fingerprint = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local quantity = tonumber(quantityText)
local idempotent = fingerprint ~= ''

local basket = redis.call('HMGET', KEYS[1], 'stock', 'pending', 'capacity', 'hold', 'max', 'maint', 'seq', 'confirmed',
  'opens', 'closes', 'paused', 'room_rate', 'mismatch')
local exists, inRepair = basket[1] ~= false, basket[6] ~= false

if idempotent then
  local stored = redis.call('HMGET', idempotencyKey, 'fp', 'a', 'id', 'exp', 'left')
  if stored[1] then
    if stored[1] ~= fingerprint then return {{'idempotency_key_reused'}} end
    if stored[3] then
      -- rewritten with the value it holds, so the WAIT after this call covers the grant (reserve.lua)
      redis.call('HSET', idempotencyKey, 'a', stored[2])
      return {{stored[2], stored[3], stored[4], stored[5]}}
    end
    if stored[2] then return {{stored[2], 'replay'}} end
    -- written by a gateway older than array answers: "granted|<id>|<exp>|<left>" or a refusal code
    local legacy = redis.call('HGET', idempotencyKey, 'answer') or 'unavailable'
    local id, exp, left = string.match(legacy, '^granted|([^|]+)|(%d+)|(%-?%d+)$')
    if id then
      redis.call('HSET', idempotencyKey, 'answer', legacy)
      return {{'granted', id, exp, left}}
    end
    return {{legacy, 'replay'}}
  end
end

-- The sale's window and the waiting room, by Redis's clock, as reserve.lua decides them.
local now, closes
if exists and not inRepair then
  -- digits only, as Swift reads them
  -- (at most 15 digits: a time Swift reads, and exact in a Lua number)
  local opens = #(basket[9] or '') <= 15 and string.match(basket[9] or '', '^%d+$') and tonumber(basket[9])
  closes = #(basket[10] or '') <= 15 and string.match(basket[10] or '', '^%d+$') and tonumber(basket[10])
  local paused = basket[11] or ''
  if (not opens and (basket[9] or '') ~= '') or (not closes and (basket[10] or '') ~= '') then return {{'unavailable'}} end
  if paused ~= '' and paused ~= '0' and paused ~= '1' then return {{'unavailable'}} end
  if closes then
    now = nowMs()
    if now >= closes then
      if idempotent then
        redis.call('HSET', idempotencyKey, 'fp', fingerprint, 'a', 'sale_closed')
        redis.call('EXPIRE', idempotencyKey, tonumber(ARGV[4]))
      end
      return {{'sale_closed'}}
    end
  end
  if opens then
    now = now or nowMs()
    if now < opens then return {{'sale_not_open', string.format('%d', opens), string.format('%d', opens - now)}} end
  end
  if paused == '1' then return {{'sale_paused'}} end
  if (basket[12] or '') ~= '' then
    local admissionExpires, admissionEpoch = ARGV[9], ARGV[10]
    local expires = string.match(admissionExpires, '^%d+$') and #admissionExpires <= 15 and tonumber(admissionExpires)
    if not expires or admissionEpoch == '' then return {{'admission_required'}} end
    now = now or nowMs()
    if now >= expires or redis.call('HGET', KEYS[7], 'epoch') ~= admissionEpoch then return {{'admission_required'}} end
  end
end

local limit = tonumber(ARGV[2])
if limit > 0 then
  -- SET NX GET opens the window and says whether one was open (reserve.lua)
  local counted = redis.call('SET', rateKey, '1', 'PX', '1000', 'NX', 'GET')
  if counted then
    if tonumber(counted) >= limit then
      local ttl = redis.call('PTTL', rateKey)
      if ttl < 0 then ttl = 1000 end
      return {{'rate_limited', ttl}}
    end
    redis.call('INCR', rateKey)
  end
end

local answer, held, booksStock, stock, pending, capacity, hold, maxUnits, seqNumber, mismatched
local disagree = false
-- a refusal is not stored when it may be wrong (reserve.lua)
local storeRefusal = true
if inRepair then
  return {{'unavailable'}}
elseif not exists then
  if redis.call('SISMEMBER', KEYS[5], ARGV[1]) == 1 then return {{'unavailable'}} end
  answer = 'basket_not_found'
  if idempotent and redis.call('EXISTS', KEYS[6]) == 0 then storeRefusal = false end
else
  -- every counter digits only and read before the first write (the prelude's rule for a stored counter)
  local counters = {basket[1], basket[2], basket[3], basket[4], basket[5], basket[7], basket[8] or '0', basket[13] or '0'}
  for i = 1, 8 do
    local text = counters[i]
    if not text or #text > 15 or not string.match(text, '^%d+$') then
      -- the basket marked for the audit when its mark reads (reserve.lua)
      local mark = counters[8]
      if i < 8 and #mark <= 15 and string.match(mark, '^%d+$') then
        redis.call('HSET', KEYS[1], 'mismatch', string.format('%d', tonumber(mark) + 1))
      end
      return {{'unavailable'}}
    end
    counters[i] = tonumber(text)
  end
  stock, pending, capacity, hold, maxUnits, seqNumber = counters[1], counters[2], counters[3], counters[4], counters[5], counters[6]
  mismatched = counters[8]
  local books = capacity - pending - counters[7]
  disagree = books ~= stock and not (books < 0 and stock == 0)
  booksStock = stock
  if books < booksStock then booksStock = books end
  held = redis.pcall('HINCRBY', KEYS[2], consumer, quantityText)
  -- an error (not an integer, an overflow, a hash of the wrong type) or less than this request's
  -- units (the count was negative): corrupt, so not served (fail closed), and the basket marked
  -- for the audit (reserve.lua; a server-state error fails the mark's write, and so the call)
  if pcallFailed(held) then
    redis.call('HSET', KEYS[1], 'mismatch', string.format('%d', mismatched + 1))
    return {{'unavailable'}}
  end
  if held < quantity then
    redis.call('HINCRBY', KEYS[2], consumer, -quantity)
    redis.call('HSET', KEYS[1], 'mismatch', string.format('%d', mismatched + 1))
    return {{'unavailable'}}
  end
  if held > maxUnits then
    answer = 'limit_exceeded'
  elseif booksStock < quantity then
    answer = 'sold_out'
  end
  if answer then
    if held == quantity then
      redis.call('HDEL', KEYS[2], consumer)
    else
      redis.call('HINCRBY', KEYS[2], consumer, -quantity)
    end
  end
  -- a mark of books that disagree is written whatever the request's answer, once its units were
  -- counted (reserve.lua counts it here and writes it at the end of the call, even when the
  -- grant fails)
  if disagree then redis.call('HSET', KEYS[1], 'mismatch', string.format('%d', mismatched + 1)) end
end

local reply
if answer == 'sold_out' and now and closes then
  reply = {answer, 'closes', string.format('%d', closes - now)}
elseif answer then
  reply = {answer}
else
  local newStock = booksStock - quantity
  local expiresAt = (now or nowMs()) + hold * 1000
  local expires = string.format('%d', expiresAt)
  local left = string.format('%d', newStock)
  local seq = string.format('%d', seqNumber + 1)
  -- the reservation's hash, the hold and the event are written first, each checked: of the wrong
  -- type (corruption), the grant is undone and answers `unavailable` (reserve.lua)
  local function undo()
    if held == quantity then
      redis.call('HDEL', KEYS[2], consumer)
    else
      redis.call('HINCRBY', KEYS[2], consumer, -quantity)
    end
    return {{'unavailable'}}
  end
  if pcallFailed(redis.pcall('HSET', reservationKey, 'basket', ARGV[1], 'consumer', consumer, 'qty', quantityText, 'status',
    'pending', 'exp', expires)) then
    return undo()
  end
  if pcallFailed(redis.pcall('ZADD', KEYS[3], expires, reservationId)) then
    redis.call('DEL', reservationKey)
    return undo()
  end
  if pcallFailed(redis.pcall('XADD', KEYS[4], '*', 'type', 'reserved', 'basket', ARGV[1], 'seq', seq, 'stock', left, 'capacity',
    basket[3], 'res', reservationId, 'consumer', consumer, 'qty', quantityText, 'exp', expires)) then
    redis.call('ZREM', KEYS[3], reservationId)
    redis.call('DEL', reservationKey)
    return undo()
  end
  redis.call('HSET', KEYS[1], 'stock', left, 'pending', string.format('%d', pending + quantity), 'seq', seq)
  reply = {'granted', reservationId, expiresAt, newStock}
end

if idempotent then
  if reply[1] == 'granted' then
    redis.call('HSET', idempotencyKey, 'fp', fingerprint, 'a', 'granted', 'id', reply[2], 'exp', reply[3], 'left', reply[4])
    redis.call('EXPIRE', idempotencyKey, tonumber(ARGV[3]))
  elseif storeRefusal then
    redis.call('HSET', idempotencyKey, 'fp', fingerprint, 'a', reply[1])
    redis.call('EXPIRE', idempotencyKey, tonumber(ARGV[4]))
  end
end
return {reply}
