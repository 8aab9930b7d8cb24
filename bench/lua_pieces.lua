-- What pieces of Lua cost inside Redis, timed by Redis's own clock within one script (no
-- network, no parsing, no AOF: only the VM, its allocator and collector, and Redis's command
-- dispatch from Lua). For the per-call overheads of lua/reserve.lua that a call of one pays.
-- usage: redis-cli -p <port> EVAL "$(cat bench/lua_pieces.lua)" 0   (µs per iteration)
-- It writes nothing but reads one missing key (`EXISTS`).
local function micros()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1e6 + tonumber(time[2])
end
local N = 100000
local results = {}
local function report(name, started, count)
  results[#results + 1] = string.format('%-48s %.3f', name, (micros() - started) / count)
end

local started = micros()
for _ = 1, N do
  local a1, a2, a3, a4, a5, a6, a7, a8, a9, a10 = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
  local a11, a12, a13, a14, a15, a16, a17, a18, a19, a20 = 11, 12, 13, 14, 15, 16, 17, 18, 19, 20
  local a21, a22, a23, a24, a25, a26, a27, a28, a29, a30 = 21, 22, 23, 24, 25, 26, 27, 28, 29, 30
  local function decide()
    return a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11 + a12 + a13 + a14 + a15 + a16 + a17 + a18 + a19
      + a20 + a21 + a22 + a23 + a24 + a25 + a26 + a27 + a28 + a29 + a30
  end
  local _, _ = pcall(decide)
end
report('closure over 30 locals, called under pcall', started, N)

started = micros()
for _ = 1, N do
  local a1, a2, a3, a4, a5, a6, a7, a8, a9, a10 = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
  local a11, a12, a13, a14, a15, a16, a17, a18, a19, a20 = 11, 12, 13, 14, 15, 16, 17, 18, 19, 20
  local a21, a22, a23, a24, a25, a26, a27, a28, a29, a30 = 21, 22, 23, 24, 25, 26, 27, 28, 29, 30
  local _ = a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11 + a12 + a13 + a14 + a15 + a16 + a17 + a18 + a19
    + a20 + a21 + a22 + a23 + a24 + a25 + a26 + a27 + a28 + a29 + a30
end
report('the same sum inline', started, N)

started = micros()
for _ = 1, N do
  local _ = #'123456789' <= 15 and string.match('123456789', '^%d+$') and tonumber('123456789')
end
report('a digits-only counter read (match, tonumber)', started, N)

started = micros()
for _ = 1, N do
  local _ = tonumber('123456789')
end
report('tonumber alone', started, N)

started = micros()
for _ = 1, N do
  local _ = {{'granted', 'id', 123, 456}}
end
report('a nested answer table', started, N)

started = micros()
for _ = 1, N do
  local _ = string.format('%d', 1234567890123)
end
report("string.format('%d')", started, N)

local calls = N / 5
started = micros()
for _ = 1, calls do redis.call('EXISTS', 'lua-pieces:missing') end
report('redis.call EXISTS', started, calls)

started = micros()
for _ = 1, calls do redis.pcall('EXISTS', 'lua-pieces:missing') end
report('redis.pcall EXISTS', started, calls)
return results
