-- basket: create a basket, or adjust its available stock. Never lets stock fall below zero.
-- KEYS[1] basket hash   KEYS[2] partition stream   KEYS[3] partition's basket index (set)
-- ARGV[1] mode: "create" or "adjust"   ARGV[2] basketId
-- create: ARGV[3] stock  ARGV[4] holdSeconds  ARGV[5] maxPerConsumer
-- adjust: ARGV[3] delta  ARGV[4] the largest capacity a basket may have
-- Returns {answer, stock, pending, confirmed, capacity, hold, max} with answer one of
-- "ok", "basket_exists", "basket_not_found", "insufficient_stock", "capacity_exceeded",
-- "unavailable". Bounding capacity keeps every counter (and the Postgres columns, 32-bit
-- integers) far from any overflow, whatever sequence of adjustments an admin sends.
local now = redis.call('TIME')
local nowMs = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)

local function view(answer)
  local b = redis.call('HMGET', KEYS[1], 'stock', 'pending', 'confirmed', 'capacity', 'hold', 'max')
  return {answer, b[1], b[2], b[3], b[4], b[5], b[6]}
end

if ARGV[1] == 'create' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return {'basket_exists'} end
  local stock = tonumber(ARGV[3])
  redis.call('HSET', KEYS[1], 'stock', stock, 'pending', 0, 'confirmed', 0, 'capacity', stock,
    'hold', tonumber(ARGV[4]), 'max', tonumber(ARGV[5]), 'seq', 1, 'created', nowMs)
  redis.call('SADD', KEYS[3], ARGV[2])
  redis.call('XADD', KEYS[2], '*', 'type', 'basket_created', 'basket', ARGV[2], 'seq', 1,
    'stock', stock, 'capacity', stock, 'hold', ARGV[4], 'max', ARGV[5], 'at', nowMs)
  return view('ok')
end

-- adjust
local b = redis.call('HMGET', KEYS[1], 'stock', 'maint', 'capacity')
if not b[1] then return {'basket_not_found'} end
if b[2] == '1' then return {'unavailable'} end
local delta = tonumber(ARGV[3])
if tonumber(b[1]) + delta < 0 then return {'insufficient_stock'} end
if tonumber(b[3]) + delta > tonumber(ARGV[4]) then return {'capacity_exceeded'} end
local stock = redis.call('HINCRBY', KEYS[1], 'stock', delta)
local capacity = redis.call('HINCRBY', KEYS[1], 'capacity', delta)
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('XADD', KEYS[2], '*', 'type', 'stock_adjusted', 'basket', ARGV[2], 'seq', seq,
  'stock', stock, 'capacity', capacity, 'delta', delta, 'at', nowMs)
return view('ok')
