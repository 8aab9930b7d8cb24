-- wrk script: POST a reservation with a consumer token (the consumer is its sub), a token never
-- used before on every request (a new consumer each time: every verification is a first one).
-- usage: wrk ... -s bench/reserve_token.lua <url> -- <basketId> <tokens file> <first line>
-- Lines are taken from <first line> on, the two threads interleaved; without a tokens file the
-- request names its consumer in the body instead (CONSUMER_AUTH=trusted).
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  path = "/v1/baskets/" .. (args[1] or "bench") .. "/reservations"
  tokens = {}
  if args[2] and args[2] ~= "" then
    for line in io.lines(args[2]) do tokens[#tokens + 1] = line end
  end
  first = tonumber(args[3] or "0")
  counter = 0
  headers = { ["Content-Type"] = "application/json" }
end

function request()
  counter = counter + 1
  if #tokens > 0 then
    headers["Authorization"] = "Bearer " .. tokens[((first + counter * 2 + tid) % #tokens) + 1]
    return wrk.format("POST", path, headers, '{"quantity":1}')
  end
  return wrk.format("POST", path, headers, '{"consumerId":"t-' .. first .. "-" .. tid .. "-" .. counter .. '"}')
end
