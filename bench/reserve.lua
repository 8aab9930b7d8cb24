-- wrk script: POST a reservation with a consumer id never used before on every request.
-- usage: wrk ... -s bench/reserve.lua <url> -- <basketId> <runPrefix>
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  basket = args[1] or "bench"
  prefix = args[2] or "r"
  counter = 0
  path = "/v1/baskets/" .. basket .. "/reservations"
  headers = { ["Content-Type"] = "application/json" }
end

function request()
  counter = counter + 1
  return wrk.format("POST", path, headers, '{"consumerId":"' .. prefix .. "-" .. tid .. "-" .. counter .. '"}')
end
