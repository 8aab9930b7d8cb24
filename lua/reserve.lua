-- reserve: decide reservations of one basket, in the order given, atomically; one answer each.
-- A lone request is a call of one; the gateway coalesces the requests for one basket that an
-- event loop collects for its next Redis batch into one call (each decided exactly as a call
-- of its own in that order would decide it: the basket's numbers are carried from one to the
-- next, and the basket hash and the holds are written once, at the end).
-- Every key it touches comes in KEYS (all share the partition's hash tag, one Cluster slot).
-- KEYS[1] basket: the basket hash
-- KEYS[2] consumerUnits: units each consumer holds on the basket (hash consumer -> units)
-- KEYS[3] holds: the partition's pending holds (zset, score = expiry in ms)
-- KEYS[4] stream: the partition's event stream
-- KEYS[5] lostBaskets: the partition's set of baskets Redis lost, until the reconciler rebuilds them
-- KEYS[6] partitionMarker: set by the reconciler once it compared the partition with Postgres
-- KEYS[7] room: the basket's waiting-room hash (read only when the basket has a room)
-- KEYS[8...] reservation idempotency rateLimit: per request, the new reservation's hash, the
--   Idempotency-Key record (the basket key when there is none), the consumer's rate-limit window
--   (the basket key when there is no limit)
-- ARGV[1] basketId
-- ARGV[2] attemptsPerSecond: 0 for no limit
-- ARGV[3] idempotencySeconds: how long the record of a grant is kept
-- ARGV[4] refusalSeconds: how long the record of a refusal is kept
-- ARGV[5...] consumerId quantity reservationId fingerprint admissionExpires admissionEpoch: per
--   request; fingerprint "" without an Idempotency-Key; admissionExpires (ms) and admissionEpoch
--   (the room that gave it) of the request's verified Admission-Token, "" for none
-- Returns one answer per request, in order: {"granted", id, expiresAtMs, remaining},
-- {"rate_limited", retryMs}, {"sale_not_open", opensAtMs, retryMs}, {"sold_out", "closes",
-- msUntilClose} (a sale with a closing time), or one of {"sold_out"}, {"limit_exceeded"},
-- {"basket_not_found"}, {"unavailable"}, {"idempotency_key_reused"}, {"sale_paused"},
-- {"sale_closed"}, {"admission_required"} (a basket with a waiting room, and no unexpired
-- admission of its room: nothing counted or stored), or {"failed", message}: a Redis error of
-- that request's own (a key of the wrong type), which leaves the others decided. (An error of
-- the server's state is the whole call's error reply.)
-- A replay returns the first answer, as stored (and is not counted by the rate limit); a
-- replayed refusal carries a second element "replay" (it says nothing of the basket now, so the
-- gateway's sold-out memory does not learn from it). Every other attempt is counted first; the
-- consumer's units are counted up front too and taken back on a refusal, so a refusal leaves
-- nothing half done.
-- Reservation ids carry 128 random bits: the script does not look for an existing one.
-- The basket is out of service while `maint` holds a repair's token, or while it is missing
-- and named in the lost set (Redis lost it; the reconciler rebuilds it): {"unavailable"}, not
-- stored, so a retry after the rebuild is answered from the rebuilt basket.
-- Stock is never more than capacity - pending - confirmed, whatever the `stock` counter says.
local limit = tonumber(ARGV[2])
local idempotencySeconds, refusalSeconds = tonumber(ARGV[3]), tonumber(ARGV[4])
local requests = (#ARGV - 4) / 6

local basket = redis.call('HMGET', KEYS[1], 'stock', 'pending', 'capacity', 'hold', 'max', 'maint', 'seq', 'confirmed',
  'opens', 'closes', 'paused', 'room_rate', 'mismatch')
local exists, inRepair = basket[1] ~= false, basket[6] ~= false

-- Redis's clock, read once for the call (its requests are decided at one instant)
local now
local function clock()
  if not now then now = nowMs() end
  return now
end

-- The sale's window, by Redis's clock (every gateway agrees on it): the same for every request
-- of the call. closed is final and stored under the key like any refusal; not open yet and
-- paused change nothing (not even the rate limit's count) and are not stored, so a retry once
-- it opens is answered afresh. A window or pause that does not read is not served (fail
-- closed; the audit reports the basket).
local window, closes, hasRoom
if exists and not inRepair then
  -- digits only, as Swift reads them (Lua's tonumber would take hex, exponents, inf and nan)
  -- (at most 15 digits: a time Swift reads, and exact in a Lua number)
  local opens = #(basket[9] or '') <= 15 and string.match(basket[9] or '', '^%d+$') and tonumber(basket[9])
  closes = #(basket[10] or '') <= 15 and string.match(basket[10] or '', '^%d+$') and tonumber(basket[10])
  local paused = basket[11] or ''
  if (not opens and (basket[9] or '') ~= '') or (not closes and (basket[10] or '') ~= '') then
    window = {'unavailable'}
  elseif paused ~= '' and paused ~= '0' and paused ~= '1' then
    window = {'unavailable'}
  elseif closes and clock() >= closes then
    window = {'sale_closed'}
  elseif opens and clock() < opens then
    window = {'sale_not_open', string.format('%d', opens), string.format('%d', opens - now)}
  elseif paused == '1' then
    window = {'sale_paused'}
  end
  hasRoom = (basket[12] or '') ~= ''
end

-- The basket's numbers, each converted once and carried from request to request: every field
-- is read and checked before the first write (Redis does not roll a script back), digits only
-- (what the scripts write; a counter Lua would read as a fraction, hex or an exponent is
-- corrupt: storedCount): a hash missing one, or holding anything else, is not served.
local stock, pending, capacity, hold, maxUnits, seqNumber, confirmed, mismatched, whole
if exists and not inRepair then
  stock, pending, capacity = storedCount(basket[1]), storedCount(basket[2]), storedCount(basket[3])
  hold, maxUnits, seqNumber, confirmed = storedCount(basket[4]), storedCount(basket[5]), storedCount(basket[7]), storedCount(basket[8] or '0')
  mismatched = storedCount(basket[13] or '0')
  whole = stock and pending and capacity and hold and maxUnits and seqNumber and confirmed and mismatched
end

-- The partition's holds and stream take every grant's writes, and the holds the call's last
-- write: of the wrong type (corruption), a grant would be half written (Redis does not roll
-- back). So a grant writes its own reservation hash, its hold and its event first, each checked
-- (a reservation key of the wrong type refuses only its own request): the call's first grant
-- adds its hold at once (which proves the key a sorted set, so the one ZADD of the others at
-- the end cannot fail), and a failed write is undone and answers `unavailable` (for every later
-- grant of the call too). No command is spent on it when nothing is wrong.
local holdsWritable, streamWritable = nil, true

-- read at most once each, when a request needs them
local lost, marked, roomEpoch
-- what the call writes once, at the end
local granted, mismatches, holds = 0, 0, {}

-- a refused request takes back the units it counted (a consumer who held nothing leaves no entry behind)
local function giveBack(consumer, held, quantity)
  if held == quantity then
    redis.call('HDEL', KEYS[2], consumer)
  else
    redis.call('HINCRBY', KEYS[2], consumer, -quantity)
  end
end

local function decide(r)
  local key = 8 + 3 * (r - 1)
  local reservationKey, idempotencyKey, rateKey = KEYS[key], KEYS[key + 1], KEYS[key + 2]
  local at = 5 + 6 * (r - 1)
  local consumer, quantityText, reservationId = ARGV[at], ARGV[at + 1], ARGV[at + 2]
  local fingerprint, admissionExpires, admissionEpoch = ARGV[at + 3], ARGV[at + 4], ARGV[at + 5]
  local quantity = tonumber(quantityText)
  local idempotent = fingerprint ~= ''

  if idempotent then
    local stored = redis.call('HMGET', idempotencyKey, 'fp', 'a', 'id', 'exp', 'left')
    if stored[1] then
      if stored[1] ~= fingerprint then return {'idempotency_key_reused'} end
      if stored[3] then
        -- A replayed grant rewrites one field of its record with the value it holds: nothing
        -- changes, but the write is replicated, so the WAIT after this call (REDIS_WAIT_REPLICAS)
        -- also covers the grant itself, whichever connection made it (WAIT counts from the
        -- connection's last write).
        redis.call('HSET', idempotencyKey, 'a', stored[2])
        return {stored[2], stored[3], stored[4], stored[5]}
      end
      if stored[2] then return {stored[2], 'replay'} end
      -- written by a gateway older than array answers: "granted|<id>|<exp>|<left>" or a refusal code
      local legacy = redis.call('HGET', idempotencyKey, 'answer') or 'unavailable'
      local id, exp, left = string.match(legacy, '^granted|([^|]+)|(%d+)|(%-?%d+)$')
      if id then
        redis.call('HSET', idempotencyKey, 'answer', legacy)
        return {'granted', id, exp, left}
      end
      return {legacy, 'replay'}
    end
  end

  if window then
    if window[1] == 'sale_closed' and idempotent then
      redis.call('HSET', idempotencyKey, 'fp', fingerprint, 'a', 'sale_closed')
      redis.call('EXPIRE', idempotencyKey, refusalSeconds)
    end
    return window
  end
  -- A waiting room: only an admission of this room (its epoch), unexpired by Redis's clock. The
  -- gateway verified the token's signature, basket and consumer before sending its expiry.
  if hasRoom then
    local expires = string.match(admissionExpires, '^%d+$') and #admissionExpires <= 15 and tonumber(admissionExpires)
    if not expires or clock() >= expires or admissionEpoch == '' then return {'admission_required'} end
    if roomEpoch == nil then roomEpoch = redis.call('HGET', KEYS[7], 'epoch') end
    if roomEpoch ~= admissionEpoch then return {'admission_required'} end
  end

  if limit > 0 then
    -- One call for a consumer's first attempt in a window: SET NX GET opens the window and says
    -- whether one was open (and how many attempts it has counted).
    local counted = redis.call('SET', rateKey, '1', 'PX', '1000', 'NX', 'GET')
    if counted then
      if tonumber(counted) >= limit then
        local ttl = redis.call('PTTL', rateKey)
        if ttl < 0 then ttl = 1000 end
        return {'rate_limited', ttl}
      end
      redis.call('INCR', rateKey)
    end
  end

  local answer, held
  local booksStock
  -- A refusal is not stored when it may be wrong: a basket missing from a partition the
  -- reconciler has not checked since Redis lost its data (no marker) may only be lost.
  local storeRefusal = true
  if inRepair then
    -- taken out of service for a repair (or being rebuilt): no reservation is recorded, the client retries
    return {'unavailable'}
  elseif not exists then
    if lost == nil then lost = redis.call('SISMEMBER', KEYS[5], ARGV[1]) == 1 end
    if lost then return {'unavailable'} end
    answer = 'basket_not_found'
    if idempotent then
      if marked == nil then marked = redis.call('EXISTS', KEYS[6]) == 1 end
      if not marked then storeRefusal = false end
    end
  else
    if not whole then
      -- a counter that does not read (not served) marks the basket, so the audit finds it however
      -- the reconciler reads it; an unreadable mark is left as it is (the audit counts it)
      if mismatched then mismatches = mismatches + 1 end
      return {'unavailable'}
    end
    -- The books: what is not held is stock. When the counters disagree (a corrupted or
    -- half-restored counter), sell only what both agree is there, and mark the basket so the
    -- reconciler's audit repairs it and counts it.
    local books = capacity - pending - confirmed
    -- (An oversold basket, closed by its repair with stock 0, is expected to disagree.)
    local disagree = books ~= stock and not (books < 0 and stock == 0)
    booksStock = stock
    if books < booksStock then booksStock = books end
    -- counted up front (one call on the path that grants), taken back on a refusal
    held = redis.pcall('HINCRBY', KEYS[2], consumer, quantityText)
    -- an error: the count is not an integer, would overflow or its hash is of the wrong type;
    -- less than this request's units: the count was negative. Either is corrupt: not served (fail
    -- closed), and the basket marked so the audit finds it and its repair rewrites the counts.
    -- (A server-state error, READONLY or OOM, is caught here too, but the mark's write at the end
    -- of the call meets it again and fails the call with it, as the gateway expects.)
    if pcallFailed(held) then
      mismatches = mismatches + 1
      return {'unavailable'}
    end
    if held < quantity then
      redis.call('HINCRBY', KEYS[2], consumer, -quantity)
      mismatches = mismatches + 1
      return {'unavailable'}
    end
    if held > maxUnits then
      answer = 'limit_exceeded'
    elseif booksStock < quantity then
      answer = 'sold_out'
    end
    if answer then giveBack(consumer, held, quantity) end
    if disagree then mismatches = mismatches + 1 end
  end

  local reply
  if answer == 'sold_out' and now and closes then
    -- the gateway's sold-out memory must not outlive the sale: how long until it closes
    reply = {answer, 'closes', string.format('%d', closes - now)}
  elseif answer then
    reply = {answer}
  else
    local newStock = booksStock - quantity
    local expiresAt = clock() + hold * 1000
    -- numbers become strings once, as integers ('%d'; Lua's own conversion is a costly '%.14g')
    local expires = string.format('%d', expiresAt)
    local left = string.format('%d', newStock)
    local seq = string.format('%d', seqNumber + 1)
    -- the reservation's own hash first: of the wrong type (corruption), nothing of the grant is
    -- written (not its hold, not its event) and it answers `unavailable`
    if pcallFailed(redis.pcall('HSET', reservationKey, 'basket', ARGV[1], 'consumer', consumer, 'qty', quantityText, 'status',
      'pending', 'exp', expires)) then
      giveBack(consumer, held, quantity)
      return {'unavailable'}
    end
    local heldNow = false
    if holdsWritable == nil then
      holdsWritable = not pcallFailed(redis.pcall('ZADD', KEYS[3], expires, reservationId))
      heldNow = holdsWritable
    end
    -- the event's status is implied by its type ("reserved" -> pending)
    if holdsWritable and streamWritable then
      streamWritable = not pcallFailed(redis.pcall('XADD', KEYS[4], '*', 'type', 'reserved', 'basket', ARGV[1], 'seq', seq,
        'stock', left, 'capacity', basket[3], 'res', reservationId, 'consumer', consumer, 'qty', quantityText, 'exp', expires))
    end
    if not (holdsWritable and streamWritable) then
      if heldNow then redis.call('ZREM', KEYS[3], reservationId) end
      redis.call('DEL', reservationKey)
      giveBack(consumer, held, quantity)
      return {'unavailable'}
    end
    -- the basket's new numbers, once the grant's own writes are made (written once, at the end
    -- of the call)
    stock, pending, seqNumber = newStock, pending + quantity, seqNumber + 1
    granted = granted + 1
    if not heldNow then
      holds[#holds + 1] = expires
      holds[#holds + 1] = reservationId
    end
    reply = {'granted', reservationId, expiresAt, stock}
  end

  local isGrant = reply[1] == 'granted'
  if idempotent and (isGrant or storeRefusal) then
    -- A grant is replayed for a day; a refusal that changed nothing only for minutes (a client
    -- putting a fresh key on every attempt must not make Redis keep a day of refusals).
    if isGrant then
      redis.call('HSET', idempotencyKey, 'fp', fingerprint, 'a', reply[1], 'id', reply[2], 'exp', reply[3], 'left', reply[4])
      redis.call('EXPIRE', idempotencyKey, idempotencySeconds)
    else
      redis.call('HSET', idempotencyKey, 'fp', fingerprint, 'a', reply[1])
      redis.call('EXPIRE', idempotencyKey, refusalSeconds)
    end
  end
  return reply
end

-- Errors of the server's state (a replica, out of memory, writes stopped on a disk error) refuse
-- a script's first write (read-only and disk errors every write), so when a request meets one
-- nothing of the call was written: the call fails as a whole with it, as calls of their own did
-- (the client retries or sheds by it; an earlier request's refusal is then answered by a retry).
local function serverState(message)
  local code = string.match(message, '^(%u+)')
  return code == 'READONLY' or code == 'OOM' or code == 'MISCONF' or code == 'NOREPLICAS' or code == 'MASTERDOWN'
    or code == 'CLUSTERDOWN' or code == 'TRYAGAIN' or code == 'LOADING' or code == 'BUSY'
end
local replies = {}
for r = 1, requests do
  -- A Redis error of one request (a key of its own of the wrong type) answers that request only:
  -- what it wrote before the error stays, as it would for a call of its own (the shared keys a
  -- grant writes were checked first, so a grant is never left half written by them).
  local ok, reply = pcall(decide, r)
  if ok then
    replies[r] = reply
  else
    local message = type(reply) == 'table' and (reply.err or 'error') or tostring(reply)
    if serverState(message) then return redis.error_reply(message) end
    replies[r] = {'failed', message}
  end
end

-- the call's writes of the basket: its counters once, the holds of its grants but the first in
-- one ZADD (the basket read as a hash, the holds a sorted set once the first was added: neither
-- can fail)
if granted > 0 and mismatches > 0 then
  redis.call('HSET', KEYS[1], 'stock', string.format('%d', stock), 'pending', string.format('%d', pending), 'seq',
    string.format('%d', seqNumber), 'mismatch', string.format('%d', mismatched + mismatches))
elseif granted > 0 then
  redis.call('HSET', KEYS[1], 'stock', string.format('%d', stock), 'pending', string.format('%d', pending), 'seq',
    string.format('%d', seqNumber))
elseif mismatches > 0 then
  redis.call('HSET', KEYS[1], 'mismatch', string.format('%d', mismatched + mismatches))
end
if #holds > 0 then redis.call('ZADD', KEYS[3], unpack(holds)) end
return replies
