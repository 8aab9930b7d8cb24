-- repair_basket: the last step of a repair: write a basket's counters (computed from the union of
-- Redis and Postgres), put the consumer units staged by repair_units in place, and put the basket
-- back in service (clears `maint`, its lease and the reserve script's `mismatch` mark). The basket
-- leaves the partition's lost set here, in the script that recreates it. Runs only for the repair
-- that owns the basket (`maint` holds its token, see repair_lease.lua).
-- KEYS[1] basket: the basket hash
-- KEYS[2] stream: the partition's event stream
-- KEYS[3] basketIndex: the partition's set of basket ids
-- KEYS[4] consumerUnits: units each consumer holds on the basket (hash)
-- KEYS[5] staging: the units repair_units staged (absent: no consumer holds units)
-- KEYS[6] lostBaskets: the partition's set of basket ids Redis lost
-- ARGV[1] token: the repair's owner token
-- ARGV[2] basketId
-- ARGV[3] stock
-- ARGV[4] pending
-- ARGV[5] confirmed
-- ARGV[6] capacity
-- ARGV[7] seq
-- ARGV[8] reason: the drift that caused the repair
-- ARGV[9] SETTINGS: the basket's settings, one argument each in the prelude's SETTINGS order ("" for none)
-- Returns {"ok"} or {"lease_lost"} (another repair owns the basket: nothing written).
if redis.call('HGET', KEYS[1], 'maint') ~= ARGV[1] then return {'lease_lost'} end
local now = nowMs()
local settings = {}
for i = 1, #SETTINGS do settings[SETTINGS[i]] = ARGV[8 + i] end
-- The writes that fail on a key of the wrong type (the partition's index, lost set and stream:
-- corruption) come first: Redis does not roll back a script that fails half way, and a failure
-- after the basket's own writes would put it back on sale with no event and half its repair.
-- Failing here, the basket stays in maintenance (the repair is retried, the pager told). Their
-- types are checked before any of them is written, so such a failure writes nothing at all.
for _, expected in ipairs({{KEYS[3], 'set'}, {KEYS[6], 'set'}, {KEYS[2], 'stream'}}) do
  local kind = redis.call('TYPE', expected[1]).ok
  if kind ~= 'none' and kind ~= expected[2] then
    return redis.error_reply('WRONGTYPE repair_basket: ' .. expected[1] .. ' is a ' .. kind .. ', not a ' .. expected[2])
  end
end
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('SREM', KEYS[6], ARGV[2])
redis.call('XADD', KEYS[2], '*', unpack(withRecord({'type', 'basket_repaired', 'basket', ARGV[2], 'seq', ARGV[7],
  'stock', ARGV[3], 'capacity', ARGV[6], 'reason', ARGV[8], 'at', now}, settings, SETTINGS)))
if redis.call('EXISTS', KEYS[5]) == 1 then
  redis.call('RENAME', KEYS[5], KEYS[4])
  redis.call('PERSIST', KEYS[4])
else
  redis.call('DEL', KEYS[4])
end
redis.call('HSET', KEYS[1], unpack(withRecord({'stock', ARGV[3], 'pending', ARGV[4], 'confirmed', ARGV[5],
  'capacity', ARGV[6], 'seq', ARGV[7]}, settings, SETTINGS)))
redis.call('HDEL', KEYS[1], 'maint', 'lease', 'mismatch')
return {'ok'}
