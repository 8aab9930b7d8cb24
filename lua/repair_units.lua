-- repair_units: stage one bounded chunk of a basket's consumer units for its repair (a basket
-- with a million consumers is written in many short scripts, never one long one). The staged
-- hash replaces the live one in repair_basket. Runs only for the repair that owns the basket;
-- the lease is renewed.
-- KEYS[1] basket: the basket hash (its `maint` token is checked)
-- KEYS[2] staging: the repair's staging hash (same slot as the basket)
-- ARGV[1] token: the repair's owner token
-- ARGV[2] leaseMilliseconds
-- ARGV[3] first: "1" on the first chunk (the staging hash is emptied first)
-- ARGV[4...] consumerId units: once per consumer
-- Returns {"ok", count} or {"lease_lost"} (another repair owns the basket: nothing written).
if redis.call('HGET', KEYS[1], 'maint') ~= ARGV[1] then return {'lease_lost'} end
local now = nowMs()
redis.call('HSET', KEYS[1], 'lease', now + tonumber(ARGV[2]))
if ARGV[3] == '1' then redis.call('DEL', KEYS[2]) end
local count = 0
for i = 4, #ARGV - 1, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  count = count + 1
end
-- Left behind by a repair that died, it goes by itself.
redis.call('EXPIRE', KEYS[2], 3600)
return {'ok', count}
