-- prelude: not a script of its own; ReservationScripts puts in front of every script of lua/
-- the definitions below that it uses (a script's SHA is that of the joined source; Redis runs a
-- script's whole body on every call, so a script pays only for what it uses). What the stored records are made of is
-- declared here once, in the order Swift's field enums list them (ScriptContractTests keeps
-- the two equal). The scripts read, write, reply and append events through these lists, so
-- none names a reservation's fields one by one or counts on their positions (reserve.lua, the
-- hot path, writes its own fields in place; the schema tests check it writes all of them).

-- A reservation's hash fields (ReservationField), in order.
local RESERVATION = {'basket', 'consumer', 'qty', 'status', 'exp', 'pay'}
-- The basket hash fields the API and the audit read (BasketField), in order: the counters,
-- then the sale settings.
local BASKET = {'stock', 'pending', 'confirmed', 'capacity', 'hold', 'max', 'opens', 'closes', 'paused', 'room_rate',
  'room_secs'}
-- A basket's sale settings (BasketSettingField): the events that set them carry all of them.
local SETTINGS = {'hold', 'max', 'opens', 'closes', 'paused', 'room_rate', 'room_secs'}

-- Redis's clock in milliseconds: every script decides by this one clock.
local function nowMs()
  local now = redis.call('TIME')
  return tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
end

-- A stored counter as a number: 1 to 15 digits (what the scripts write), else nil. A counter Lua
-- would read as a fraction, hex, an exponent, a sign or past 2^53 is corrupt: not served.
-- (reserve_one.lua applies the same rule inline, release.lua a signed one to consumer counts.)
local function storedCount(text)
  return text and #text <= 15 and string.match(text, '^%d+$') and tonumber(text)
end

-- Whether a redis.pcall answered an error (a key of the wrong type, a non-integer HINCRBY).
local function pcallFailed(result)
  return type(result) == 'table' and result.err ~= nil
end

-- A record's fields by name (`fields`: one of the lists above); a missing field is nil.
local function readRecord(key, fields)
  local values = redis.call('HMGET', key, unpack(fields))
  local record = {}
  for i = 1, #fields do
    if values[i] then record[fields[i]] = values[i] end
  end
  return record
end

-- `head` followed by a record's values in its list's order: a reply Swift decodes by the same
-- list. A missing field is false (a nil reply).
local function recordReply(head, record, fields)
  local reply = {head}
  for i = 1, #fields do reply[i + 1] = record[fields[i]] or false end
  return reply
end

-- Whether a reservation read from Redis is whole, its numbers as Swift reads them (digits only):
-- one that is not is never half-applied (the caller answers "unavailable"; the audit reports it).
local function wholeReservation(r)
  local statuses = {pending = true, confirmed = true, cancelled = true, expired = true}
  return r.basket ~= nil and r.consumer ~= nil and statuses[r.status or ''] == true
    and string.match(r.qty or '', '^[1-9]%d*$') ~= nil and #r.qty <= 10
    and string.match(r.exp or '', '^%d+$') ~= nil and #r.exp <= 16
end

-- A basket's view: {"ok", <its BASKET fields>, now}; Redis's clock comes with it, so the
-- gateway tells the sale's state by the clock the reserve script decides by.
local function basketView(key, now)
  local reply = recordReply('ok', readRecord(key, BASKET), BASKET)
  reply[#reply + 1] = now
  return reply
end

-- Appends a record's fields as name, value pairs to `into` (a hash's or an event's arguments)
-- and returns it; missing fields are left out.
local function withRecord(into, record, fields)
  for i = 1, #fields do
    local value = record[fields[i]]
    if value then
      into[#into + 1] = fields[i]
      into[#into + 1] = value
    end
  end
  return into
end

-- A waiting room's hash fields (RoomField), in order: `epoch` names the room (tickets and
-- admissions carry it), `joined` is the last place number handed out, `pre` the pre-queue's size
-- (set at the draw, "" before), `seed` the draw's key, `drawn` when it was made; the admission
-- schedule is `base` places admitted at `at`, then `rate` a minute from `since` ("" while stopped),
-- and every place up to `gone` has had its admission expire.
local ROOM = {'epoch', 'joined', 'pre', 'seed', 'drawn', 'base', 'since', 'rate', 'at', 'gone'}

-- Places admitted by `now` (ms) on a room's schedule (`room`: its ROOM fields as numbers, `since`
-- false while stopped). In whole minutes and the rest apart, so every product stays far below
-- 2^53 (Lua numbers are doubles); RoomSchedule in Swift computes the same.
local function roomAdmitted(room, now)
  if not room.since or now <= room.since then return room.base end
  local elapsed = now - room.since
  return room.base + math.floor(elapsed / 60000) * room.rate + math.floor((elapsed % 60000) * room.rate / 60000)
end

-- A room's ROOM fields read as numbers (nil: no room hash; false: a field that does not read).
local function readRoom(key)
  local values = redis.call('HMGET', key, unpack(ROOM))
  if not values[1] then return nil end
  local room = {epoch = values[1], seed = values[4] or false}
  for i = 2, #ROOM do
    local text = values[i]
    if ROOM[i] ~= 'seed' then room[ROOM[i]] = text and string.match(text, '^%d+$') and #text <= 15 and tonumber(text) or false end
  end
  return room
end

-- Restarts a room's schedule at `now` (a PATCH that changes what it depends on, or a join into a
-- room where nobody waits): places up to `base` stay admitted, counting their admission from when
-- the last of them was admitted; every place whose admission has expired by now (by `seconds`,
-- the admission time it was given under) stays expired (`gone`); admission then runs at `rate` a
-- minute from `since` ("" while stopped). `base` is at most what is admitted now.
local function restartRoom(key, room, now, seconds, base, since, rate)
  local at = room.at
  if base > room.base then at = room.since + math.ceil((base - room.base) * 60000 / room.rate) end
  local limit = now - seconds * 1000
  local gone = room.gone
  if room.base >= 1 and room.at <= limit then gone = math.max(gone, room.base) end
  if room.since and limit > room.since then gone = math.max(gone, roomAdmitted(room, limit)) end
  gone = math.min(gone, base)
  redis.call('HSET', key, 'base', string.format('%d', base), 'at', string.format('%d', at), 'since', since, 'rate', rate,
    'gone', string.format('%d', gone))
end
