-- refuse_sold_out: a keyed reservation on a basket the gateway knows is sold out, answered
-- without the reservation's work: the key's stored answer is replayed (a grant made before the
-- sale ran out still wins; another body is idempotency_key_reused); with none, sold_out is
-- stored under the key for the refusal window, as reserve.lua stores a refusal, so a retry with
-- the same key gets the same answer. One read, and for a new key one small write.
-- KEYS[1] idempotency: the Idempotency-Key record
-- ARGV[1] fingerprint
-- ARGV[2] refusalSeconds: how long the refusal is kept
-- Returns what reserve.lua returns for the same key: {"granted", id, expiresAtMs, remaining},
-- {refusal, "replay"}, {"idempotency_key_reused"}, {"sold_out"} (stored now), or {"ask"} for a
-- record only reserve.lua can read (an older gateway's form).
local stored = redis.call('HMGET', KEYS[1], 'fp', 'a', 'id', 'exp', 'left')
if stored[1] then
  if stored[1] ~= ARGV[1] then return {'idempotency_key_reused'} end
  if stored[3] then
    -- A replayed grant rewrites one field of its record with the value it holds: nothing changes,
    -- but the write is replicated, so the WAIT after this call (REDIS_WAIT_REPLICAS) also covers the
    -- grant itself, whichever connection made it (WAIT counts from the connection's last write).
    redis.call('HSET', KEYS[1], 'a', stored[2])
    return {stored[2], stored[3], stored[4], stored[5]}
  end
  if stored[2] then return {stored[2], 'replay'} end
  return {'ask'}
end
redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'a', 'sold_out')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return {'sold_out'}
