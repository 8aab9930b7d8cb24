-- wrk script: POST a reservation with a consumer token (the consumer is its sub), a token never
-- used before on every request (a new consumer each time: every verification is a first one).
-- usage: wrk ... -s bench/reserve_token.lua <url> -- <basketId> <tokens file> <first line> [<lines>]
-- Lines are taken from <first line> on (only <lines> of them when given: each wrk thread loads
-- just its round's share of a large file), the two threads interleaved; past the last one they
-- are used again (and show as non-2xx on a one-per-consumer basket); without a tokens file the
-- request names its consumer in the body instead (CONSUMER_AUTH=trusted).
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  path = "/v1/baskets/" .. (args[1] or "bench") .. "/reservations"
  tokens = {}
  first = tonumber(args[3] or "0")
  local last = args[4] and first + tonumber(args[4]) or math.huge
  if args[2] and args[2] ~= "" then
    local index = 0
    for line in io.lines(args[2]) do
      if index >= first and index < last then tokens[#tokens + 1] = line end
      index = index + 1
      if index >= last then break end
    end
  end
  counter = 0
  headers = { ["Content-Type"] = "application/json" }
end

function request()
  counter = counter + 1
  if #tokens > 0 then
    headers["Authorization"] = "Bearer " .. tokens[((counter * 2 + tid) % #tokens) + 1]
    return wrk.format("POST", path, headers, '{"quantity":1}')
  end
  return wrk.format("POST", path, headers, '{"consumerId":"t-' .. first .. "-" .. tid .. "-" .. counter .. '"}')
end
