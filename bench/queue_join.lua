-- wrk script: POST a waiting-room join (CONSUMER_AUTH=trusted), a consumer never seen before per request.
-- usage: wrk ... -s bench/queue_join.lua <url> -- <basketId> <runPrefix>
--          consumer "<runPrefix>-<thread>-<counter>"
--        wrk ... -s bench/queue_join.lua <url> -- <basketId> seq <first> <last> <threads>
--          consumers "c%07d" numbered <first>..<last>, the threads interleaved (<threads> must be
--          wrk's -t); past <last> a thread joins its last consumer again (a member already: no
--          write), so the members hash ends at the range (bench/queue.py stops wrk then). wrk calls
--          request() once to check the script without sending it: <first> on thread 1 is never sent.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  path = "/v1/baskets/" .. (args[1] or "bench") .. "/queue"
  prefix = args[2] or "j"
  sequential = prefix == "seq"
  if sequential then
    first, last, nthreads = tonumber(args[3]), tonumber(args[4]), tonumber(args[5])
  end
  counter = 0
  headers = { ["Content-Type"] = "application/json" }
end

function request()
  counter = counter + 1
  local consumer
  if sequential then
    local number = first + (counter - 1) * nthreads + (tid - 1)
    while number > last do number = number - nthreads end
    consumer = string.format("c%07d", number)
  else
    consumer = prefix .. "-" .. tid .. "-" .. counter
  end
  return wrk.format("POST", path, headers, '{"consumerId":"' .. consumer .. '"}')
end
