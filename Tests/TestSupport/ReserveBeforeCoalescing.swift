/// `lua/reserve.lua` as it was before reservations were coalesced (b61d18e): one request a call,
/// KEYS basket, reservation, consumerUnits, holds, stream, idempotency, rateLimit, lostBaskets,
/// partitionMarker, room; ARGV basketId, consumerId, quantity, reservationId, attemptsPerSecond,
/// fingerprint, idempotencySeconds, refusalSeconds, admissionExpires, admissionEpoch; one answer.
/// `ReserveEquivalence` decides a third side with it (its one-by-one side runs today's
/// `reserve_one.lua`): coalescing must change no behaviour but the ones its docs name (corrupt
/// counters and stores now fail closed).
enum ReserveBeforeCoalescing {
    static let source = #"""
        -- reserve: take `quantity` units of a basket for a consumer, atomically.
        -- Every key it touches comes in KEYS (all share the partition's hash tag, one Cluster slot).
        -- KEYS[1] basket: the basket hash
        -- KEYS[2] reservation: the new reservation's hash
        -- KEYS[3] consumerUnits: units each consumer holds on the basket (hash consumer -> units)
        -- KEYS[4] holds: the partition's pending holds (zset, score = expiry in ms)
        -- KEYS[5] stream: the partition's event stream
        -- KEYS[6] idempotency: the Idempotency-Key record (the basket key when there is none)
        -- KEYS[7] rateLimit: the consumer's rate-limit window (the basket key when there is no limit)
        -- KEYS[8] lostBaskets: the partition's set of baskets Redis lost, until the reconciler rebuilds them
        -- KEYS[9] partitionMarker: set by the reconciler once it compared the partition with Postgres
        -- KEYS[10] room: the basket's waiting-room hash (read only when the basket has a room)
        -- ARGV[1] basketId
        -- ARGV[2] consumerId
        -- ARGV[3] quantity
        -- ARGV[4] reservationId
        -- ARGV[5] attemptsPerSecond: 0 for no limit
        -- ARGV[6] fingerprint: "" without an Idempotency-Key
        -- ARGV[7] idempotencySeconds: how long the record of a grant is kept
        -- ARGV[8] refusalSeconds: how long the record of a refusal is kept
        -- ARGV[9] admissionExpires: ms, when the request's verified Admission-Token expires ("" for none)
        -- ARGV[10] admissionEpoch: the waiting room the admission was given by ("" for none)
        -- Returns {"granted", id, expiresAtMs, remaining}, {"rate_limited", retryMs},
        -- {"sale_not_open", opensAtMs, retryMs}, {"sold_out", "closes", msUntilClose} (a sale with a
        -- closing time), or one of {"sold_out"}, {"limit_exceeded"}, {"basket_not_found"},
        -- {"unavailable"}, {"idempotency_key_reused"}, {"sale_paused"}, {"sale_closed"},
        -- {"admission_required"} (a basket with a waiting room, and no unexpired admission of its room:
        -- nothing counted or stored). A replay returns the first answer, as stored (and is not counted
        -- by the rate limit); a replayed refusal carries a second element "replay" (it says nothing of
        -- the basket now, so the gateway's sold-out memory does not learn from it). Every other attempt is counted first; the consumer's units are counted
        -- up front too and taken back on a refusal, so a refusal leaves nothing half done.
        -- Reservation ids carry 128 random bits: the script does not look for an existing one.
        -- The basket is out of service while `maint` holds a repair's token, or while it is missing
        -- and named in the lost set (Redis lost it; the reconciler rebuilds it): {"unavailable"}, not
        -- stored, so a retry after the rebuild is answered from the rebuilt basket.
        -- Stock is never more than capacity - pending - confirmed, whatever the `stock` counter says.
        local quantity = tonumber(ARGV[3])
        local idempotent = ARGV[6] ~= ''

        if idempotent then
          local stored = redis.call('HMGET', KEYS[6], 'fp', 'a', 'id', 'exp', 'left')
          if stored[1] then
            if stored[1] ~= ARGV[6] then return {'idempotency_key_reused'} end
            if stored[3] then
              -- A replayed grant rewrites one field of its record with the value it holds: nothing changes,
              -- but the write is replicated, so the WAIT after this call (REDIS_WAIT_REPLICAS) also covers the
              -- grant itself, whichever connection made it (WAIT counts from the connection's last write).
              redis.call('HSET', KEYS[6], 'a', stored[2])
              return {stored[2], stored[3], stored[4], stored[5]}
            end
            if stored[2] then return {stored[2], 'replay'} end
            -- written by a gateway older than array answers: "granted|<id>|<exp>|<left>" or a refusal code
            local legacy = redis.call('HGET', KEYS[6], 'answer') or 'unavailable'
            local id, exp, left = string.match(legacy, '^granted|([^|]+)|(%d+)|(%-?%d+)$')
            if id then
              redis.call('HSET', KEYS[6], 'answer', legacy)
              return {'granted', id, exp, left}
            end
            return {legacy, 'replay'}
          end
        end

        local basket = redis.call('HMGET', KEYS[1], 'stock', 'pending', 'capacity', 'hold', 'max', 'maint', 'seq', 'confirmed',
          'opens', 'closes', 'paused', 'room_rate')
        -- The sale's window, by Redis's clock (every gateway agrees on it): closed is final and stored
        -- under the key like any refusal; not open yet and paused change nothing (not even the rate
        -- limit's count) and are not stored, so a retry once it opens is answered afresh.
        local now
        if basket[1] and not basket[6] then
          -- digits only, as Swift reads them (Lua's tonumber would take hex, exponents, inf and nan)
          local opens = string.match(basket[9] or '', '^%d+$') and tonumber(basket[9])
          local closes = string.match(basket[10] or '', '^%d+$') and tonumber(basket[10])
          -- a window or pause that does not read is not served (fail closed; the audit reports the basket)
          if (not opens and (basket[9] or '') ~= '') or (not closes and (basket[10] or '') ~= '') then return {'unavailable'} end
          local paused = basket[11] or ''
          if paused ~= '' and paused ~= '0' and paused ~= '1' then return {'unavailable'} end
          if opens or closes then now = nowMs() end
          if closes and now >= closes then
            if idempotent then
              redis.call('HSET', KEYS[6], 'fp', ARGV[6], 'a', 'sale_closed')
              redis.call('EXPIRE', KEYS[6], tonumber(ARGV[8]))
            end
            return {'sale_closed'}
          end
          if opens and now < opens then return {'sale_not_open', string.format('%d', opens), string.format('%d', opens - now)} end
          if basket[11] == '1' then return {'sale_paused'} end
          -- A waiting room: only an admission of this room (its epoch), unexpired by Redis's clock. The
          -- gateway verified the token's signature, basket and consumer before sending its expiry.
          if (basket[12] or '') ~= '' then
            local expires = string.match(ARGV[9], '^%d+$') and #ARGV[9] <= 15 and tonumber(ARGV[9])
            if not expires or (now or nowMs()) >= expires or ARGV[10] == '' or redis.call('HGET', KEYS[10], 'epoch') ~= ARGV[10] then
              return {'admission_required'}
            end
          end
        end

        local limit = tonumber(ARGV[5])
        if limit > 0 then
          -- One call for a consumer's first attempt in a window: SET NX GET opens the window and says
          -- whether one was open (and how many attempts it has counted).
          local counted = redis.call('SET', KEYS[7], '1', 'PX', '1000', 'NX', 'GET')
          if counted then
            if tonumber(counted) >= limit then
              local ttl = redis.call('PTTL', KEYS[7])
              if ttl < 0 then ttl = 1000 end
              return {'rate_limited', ttl}
            end
            redis.call('INCR', KEYS[7])
          end
        end

        local answer
        local stock, held
        -- the basket's numbers, each converted once
        local pending, capacity, hold, maxUnits, seqNumber, confirmed
        local booksDisagree = false
        -- A refusal is not stored when it may be wrong: a basket missing from a partition the
        -- reconciler has not checked since Redis lost its data (no marker) may only be lost.
        local storeRefusal = true
        if basket[6] then
          -- taken out of service for a repair (or being rebuilt): no reservation is recorded, the client retries
          return {'unavailable'}
        elseif not basket[1] then
          if redis.call('SISMEMBER', KEYS[8], ARGV[1]) == 1 then return {'unavailable'} end
          answer = 'basket_not_found'
          if idempotent and redis.call('EXISTS', KEYS[9]) == 0 then storeRefusal = false end
        else
          -- Every field is read and checked before the first write (Redis does not roll a script back):
          -- a hash missing one is not served.
          stock, pending, capacity = tonumber(basket[1]), tonumber(basket[2]), tonumber(basket[3])
          hold, maxUnits, seqNumber, confirmed = tonumber(basket[4]), tonumber(basket[5]), tonumber(basket[7]), tonumber(basket[8] or '0')
          if not (stock and pending and capacity and hold and maxUnits and seqNumber and confirmed) then return {'unavailable'} end
          -- The books: what is not held is stock. When the counters disagree (a corrupted or
          -- half-restored counter), sell only what both agree is there, and mark the basket so the
          -- reconciler's audit repairs it and counts it.
          local books = capacity - pending - confirmed
          -- (An oversold basket, closed by its repair with stock 0, is expected to disagree.)
          if books ~= stock and not (books < 0 and stock == 0) then booksDisagree = true end
          if books < stock then stock = books end
          -- counted up front (one call on the path that grants), taken back on a refusal
          held = redis.call('HINCRBY', KEYS[3], ARGV[2], ARGV[3])
          if held > maxUnits then
            answer = 'limit_exceeded'
          elseif stock < quantity then
            answer = 'sold_out'
          end
          if answer then
            -- (a consumer who held nothing leaves no entry behind)
            if held == quantity then
              redis.call('HDEL', KEYS[3], ARGV[2])
            else
              redis.call('HINCRBY', KEYS[3], ARGV[2], -quantity)
            end
          end
        end

        -- the reservation's writes start here
        if booksDisagree then redis.call('HINCRBY', KEYS[1], 'mismatch', 1) end
        local reply
        if answer == 'sold_out' and now and tonumber(basket[10] or '') then
          -- the gateway's sold-out memory must not outlive the sale: how long until it closes
          reply = {answer, 'closes', string.format('%d', tonumber(basket[10]) - now)}
        elseif answer then
          reply = {answer}
        else
          local expiresAt = (now or nowMs()) + hold * 1000
          local remaining = stock - quantity
          -- numbers become strings once, as integers ('%d'; Lua's own conversion is a costly '%.14g')
          local expires = string.format('%d', expiresAt)
          local left = string.format('%d', remaining)
          local seq = string.format('%d', seqNumber + 1)
          redis.call('HSET', KEYS[1], 'stock', left, 'pending', string.format('%d', pending + quantity), 'seq', seq)
          redis.call('HSET', KEYS[2], 'basket', ARGV[1], 'consumer', ARGV[2], 'qty', ARGV[3], 'status', 'pending', 'exp', expires)
          redis.call('ZADD', KEYS[4], expires, ARGV[4])
          -- the event's status is implied by its type ("reserved" -> pending)
          redis.call('XADD', KEYS[5], '*', 'type', 'reserved', 'basket', ARGV[1], 'seq', seq,
            'stock', left, 'capacity', basket[3], 'res', ARGV[4], 'consumer', ARGV[2], 'qty', ARGV[3], 'exp', expires)
          reply = {'granted', ARGV[4], expiresAt, remaining}
        end

        local granted = reply[1] == 'granted'
        if idempotent and (granted or storeRefusal) then
          -- A grant is replayed for a day; a refusal that changed nothing only for minutes (a client
          -- putting a fresh key on every attempt must not make Redis keep a day of refusals).
          if granted then
            redis.call('HSET', KEYS[6], 'fp', ARGV[6], 'a', reply[1], 'id', reply[2], 'exp', reply[3], 'left', reply[4])
            redis.call('EXPIRE', KEYS[6], tonumber(ARGV[7]))
          else
            redis.call('HSET', KEYS[6], 'fp', ARGV[6], 'a', reply[1])
            redis.call('EXPIRE', KEYS[6], tonumber(ARGV[8]))
          end
        end
        return reply
        """#
}
