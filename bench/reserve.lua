-- wrk script: POST a reservation with a consumer id never used before on every request.
-- usage: wrk ... -s bench/reserve.lua <url> -- <basketId>[,<basketId>...] <runPrefix> [keyed]
-- With "keyed", every request carries an Idempotency-Key never used before (a bot's retries).
-- With several baskets (comma-separated), requests go round robin over them (the cluster run
-- spreads them over every partition, so over every primary).
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  baskets = {}
  for basket in string.gmatch(args[1] or "bench", "[^,]+") do
    baskets[#baskets + 1] = "/v1/baskets/" .. basket .. "/reservations"
  end
  prefix = args[2] or "r"
  keyed = args[3] == "keyed"
  counter = 0
  headers = { ["Content-Type"] = "application/json" }
end

function request()
  counter = counter + 1
  local path = baskets[(counter % #baskets) + 1]
  if keyed then headers["Idempotency-Key"] = prefix .. "-" .. tid .. "-" .. counter end
  return wrk.format("POST", path, headers, '{"consumerId":"' .. prefix .. "-" .. tid .. "-" .. counter .. '"}')
end
