-- queue: join a basket's waiting room, or read the room's state (a poll's cache refresh). Opens
-- the room on its first use and makes the pre-queue's draw at the first use after the sale opens
-- (O(1): the draw is a seed; places come from a keyed permutation the gateway computes).
-- KEYS[1] basket: the basket hash
-- KEYS[2] room: the room hash (ROOM fields)
-- KEYS[3] queue: consumer -> place number
-- KEYS[4] lostBaskets: the partition's set of baskets Redis lost, until the reconciler rebuilds them
-- ARGV[1] basketId
-- ARGV[2] consumerId: "" to read the room without joining
-- ARGV[3] seed: 64 hex digits, random; kept as the draw's key if this call makes the draw
-- ARGV[4] epoch: 32 hex digits, random; the room's name if this call opens the room
-- ARGV[5] replace: the place number of the consumer's expired admission ("" for none): a join
--   that finds exactly that place gives the consumer a new one at the back
-- Returns {"ok", place or "", wrote (0/1), members, <BASKET fields>, <ROOM fields>, nowMs}, or
-- one of {"basket_not_found"}, {"no_waiting_room"}, {"sale_closed"} (a join after closesAt),
-- {"unavailable"} (under repair, lost and not rebuilt, or a room field that does not read).
local basket = readRecord(KEYS[1], BASKET)
if not basket.stock then
  if redis.call('SISMEMBER', KEYS[4], ARGV[1]) == 1 then return {'unavailable'} end
  return {'basket_not_found'}
end
if redis.call('HEXISTS', KEYS[1], 'maint') == 1 then return {'unavailable'} end
if (basket.room_rate or '') == '' then return {'no_waiting_room'} end
local rate = string.match(basket.room_rate, '^%d+$') and tonumber(basket.room_rate)
local opens = string.match(basket.opens or '', '^%d+$') and tonumber(basket.opens)
local closes = string.match(basket.closes or '', '^%d+$') and tonumber(basket.closes)
if not rate or rate < 1 or (not opens and (basket.opens or '') ~= '') or (not closes and (basket.closes or '') ~= '') then
  return {'unavailable'}
end
local now = nowMs()
local joining = ARGV[2] ~= ''
if joining and closes and now >= closes then return {'sale_closed'} end

local wrote = 0
local room = readRoom(KEYS[2])
if not room then
  -- Admission runs from the opening (or now) with one place's interval already passed, so the
  -- first place is admitted at the opening itself, not one interval later.
  local since = ''
  if basket.paused ~= '1' then since = string.format('%d', math.max(now, opens or 0) - math.ceil(60000 / rate)) end
  redis.call('HSET', KEYS[2], 'epoch', ARGV[4], 'joined', 0, 'base', 0, 'at', string.format('%d', now), 'gone', 0,
    'rate', string.format('%d', rate), 'since', since)
  room = readRoom(KEYS[2])
  wrote = 1
end
if not (room.joined and room.base and room.at and room.gone and room.rate and room.rate >= 1) then return {'unavailable'} end
-- The draw: once, at the first use of the room after the opening (by Redis's clock); whoever
-- joined before it is in the pre-queue, in the order the seed's permutation gives.
if not room.pre and (not opens or now >= opens) then
  redis.call('HSET', KEYS[2], 'pre', string.format('%d', room.joined), 'seed', ARGV[3], 'drawn', string.format('%d', now))
  wrote = 1
end

local place = ''
if joining then
  local current = redis.call('HGET', KEYS[3], ARGV[2])
  if current and current ~= ARGV[5] then
    place = current
  else
    -- At the back, after everyone who joined. In a room where admission has run past the last
    -- place handed out, the places nobody took are not banked for a burst of late joiners: the
    -- joiner takes the next place not admitted yet (admitted within one interval). And if no
    -- admission is running any more, the schedule restarts here so this joiner is admitted at
    -- once (a restart then changes nobody's admission: every one handed out has expired).
    local nextPlace = room.joined + 1
    local admitted = roomAdmitted(room, now)
    if admitted > room.joined then
      local seconds = tonumber(basket.room_secs) or 300
      local limit = now - seconds * 1000
      local lastExpired = room.joined <= room.gone or (room.joined <= room.base and room.at <= limit) or
        (room.joined > room.base and room.since and limit > room.since and roomAdmitted(room, limit) >= room.joined)
      if lastExpired and room.since then
        restartRoom(KEYS[2], room, now, seconds, room.joined, string.format('%d', now - math.ceil(60000 / room.rate)),
          string.format('%d', room.rate))
      else
        nextPlace = admitted + 1
      end
    end
    place = string.format("%d", nextPlace)
    redis.call('HSET', KEYS[3], ARGV[2], place)
    redis.call('HSET', KEYS[2], 'joined', place)
    -- A room outlives its sale by a week at most (its tickets say closed meanwhile).
    if closes then redis.call('PEXPIREAT', KEYS[2], closes + 604800000) redis.call('PEXPIREAT', KEYS[3], closes + 604800000) end
    wrote = 1
  end
end

local reply = {'ok', place, wrote, redis.call('HLEN', KEYS[3])}
for i = 1, #BASKET do reply[#reply + 1] = basket[BASKET[i]] or false end
local stored = redis.call('HMGET', KEYS[2], unpack(ROOM))
for i = 1, #ROOM do reply[#reply + 1] = stored[i] or false end
reply[#reply + 1] = now
return reply
