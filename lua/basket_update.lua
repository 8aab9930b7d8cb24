-- basket_update: change some of a basket's sale settings (PATCH): its window, pause, hold time or
-- per-consumer limit. Applies to requests after it; holds already taken keep their expiry.
-- KEYS[1] basket: the basket hash
-- KEYS[2] stream: the partition's event stream
-- KEYS[3] lostBaskets: the partition's set of baskets Redis lost, until the reconciler rebuilds them
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
redis.call('HSET', KEYS[1], unpack(withRecord({}, settings, SETTINGS)))
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('XADD', KEYS[2], '*', unpack(withRecord({'type', 'basket_updated', 'basket', ARGV[1], 'seq', seq,
  'stock', current.stock, 'capacity', current.capacity, 'at', now}, settings, SETTINGS)))
return basketView(KEYS[1], now)
