-- repair_lease: who may repair a basket. A repair takes the basket out of service by writing
-- its own random token into the basket's `maint` field, with a lease (`lease`, Redis time in
-- ms). While the lease runs, no other repair can take the basket; once it has run out (the
-- owner died or stalled), another repair may take it over. The repair scripts check the token
-- before writing anything (fencing) and renew the lease, so a repair that lost the basket
-- writes nothing, and only the owner puts the basket back in service.
-- A `maint` without a lease (written before leases existed) counts as run out.
-- KEYS[1] basket: the basket hash
-- ARGV[1] mode: "acquire" (also renews the owner's own lease) or "release"
-- ARGV[2] token: the repair's random owner token
-- ARGV[3] leaseMilliseconds
-- Returns {"acquired"}, {"busy", leaseLeftMs}, {"released"} or {"lost"} (release by a repair
-- that no longer owns the basket: nothing changed).
local now = nowMs()
local current = redis.call('HMGET', KEYS[1], 'maint', 'lease')
if ARGV[1] == 'acquire' then
  local leaseEnd = tonumber(current[2] or '0') or 0
  if current[1] and current[1] ~= ARGV[2] and leaseEnd > now then
    return {'busy', leaseEnd - now}
  end
  redis.call('HSET', KEYS[1], 'maint', ARGV[2], 'lease', now + tonumber(ARGV[3]))
  return {'acquired'}
end
if current[1] ~= ARGV[2] then return {'lost'} end
redis.call('HDEL', KEYS[1], 'maint', 'lease')
return {'released'}
