-- basket_update: change some of a basket's sale settings (PATCH): its window, pause, hold time or
-- per-consumer limit. Applies to requests after it; holds already taken keep their expiry.
-- KEYS[1] basket: the basket hash
-- KEYS[2] stream: the partition's event stream
-- KEYS[3] lostBaskets: the partition's set of baskets Redis lost, until the reconciler rebuilds them
-- KEYS[4] room: the basket's waiting-room hash (ROOM fields), if it was ever used
-- KEYS[5] queue: the waiting room's members
-- ARGV[1] basketId
-- ARGV[2] change: one character per SETTINGS field, "1" where the request sets it
-- ARGV[3] SETTINGS: the new values, one argument each in the prelude's SETTINGS order ("" for none)
-- Returns {"ok", <the basket's BASKET fields>, nowMs}, or one of {"basket_not_found"},
-- {"invalid_window"} (it would close before it opens: nothing written), {"unavailable"} (under
-- repair, or lost and not rebuilt yet).
local current = readRecord(KEYS[1], BASKET)
if not current.stock then
  if redis.call('SISMEMBER', KEYS[3], ARGV[1]) == 1 then return {'unavailable'} end
  return {'basket_not_found'}
end
if redis.call('HEXISTS', KEYS[1], 'maint') == 1 then return {'unavailable'} end
local settings = {}
for i = 1, #SETTINGS do
  local name = SETTINGS[i]
  if string.sub(ARGV[2], i, i) == '1' then settings[name] = ARGV[2 + i] else settings[name] = current[name] or '' end
end
local opens, closes = tonumber(settings.opens), tonumber(settings.closes)
if opens and closes and closes <= opens then return {'invalid_window'} end
local now = nowMs()
-- A room in use: removed with its queue (UNLINK frees a large queue off Redis's main thread), or,
-- when what its schedule depends on changes (pause, opening, rate, admission time), restarted
-- from here with everything admitted so far kept admitted and everything expired kept expired.
local room = readRoom(KEYS[4])
if room and settings.room_rate == '' then
  redis.call('UNLINK', KEYS[4], KEYS[5])
elseif room and room.joined and room.base and room.at and room.gone and room.rate and room.rate >= 1 and
  ((current.paused == '1') ~= (settings.paused == '1') or (current.opens or '') ~= settings.opens or
   (current.room_rate or '') ~= settings.room_rate or (current.room_secs or '') ~= settings.room_secs) then
  -- Admitted places nobody holds are not banked: the restart keeps only those handed out.
  local admitted = math.min(roomAdmitted(room, now), room.joined or 0)
  -- Running again from the opening (or now); before any place was admitted, the first one is
  -- admitted at that instant (as when the room opened), not one interval later.
  local since = ''
  if settings.paused ~= '1' then
    local from = math.max(now, tonumber(settings.opens) or 0)
    if admitted == 0 then from = from - math.ceil(60000 / tonumber(settings.room_rate)) end
    since = string.format('%d', from)
  end
  restartRoom(KEYS[4], room, now, tonumber(current.room_secs) or 300, admitted, since, settings.room_rate)
  -- An opening moved into the future re-opens the pre-queue: everyone joined so far is drawn
  -- again, at the new opening, with a new seed (admissions already given stay valid until they
  -- expire, and the reserve script refuses before the opening anyway).
  local newOpens = tonumber(settings.opens)
  if room.pre and newOpens and newOpens > now then
    redis.call('HDEL', KEYS[4], 'pre', 'seed', 'drawn')
    redis.call('HSET', KEYS[4], 'base', 0, 'at', string.format('%d', now), 'gone', 0,
      'since', settings.paused == '1' and '' or string.format('%d', newOpens - math.ceil(60000 / tonumber(settings.room_rate))))
  end
end
-- A room outlives its sale by a week: its expiry follows a closing time moved or removed.
if room and settings.room_rate ~= '' and (current.closes or '') ~= settings.closes then
  if closes then
    redis.call('PEXPIREAT', KEYS[4], closes + 604800000)
    redis.call('PEXPIREAT', KEYS[5], closes + 604800000)
  else
    redis.call('PERSIST', KEYS[4])
    redis.call('PERSIST', KEYS[5])
  end
end
redis.call('HSET', KEYS[1], unpack(withRecord({}, settings, SETTINGS)))
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('XADD', KEYS[2], '*', unpack(withRecord({'type', 'basket_updated', 'basket', ARGV[1], 'seq', seq,
  'stock', current.stock, 'capacity', current.capacity, 'at', now}, settings, SETTINGS)))
return basketView(KEYS[1], now)
