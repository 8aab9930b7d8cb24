-- wrk script: GET a waiting-room poll, cycling through tickets (one a line, as the joins answered them).
-- usage: wrk ... -s bench/queue_poll.lua <url> -- <basketId> <tickets file>
-- The threads interleave over the file, so consecutive requests carry different tickets.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  local prefix = "/v1/baskets/" .. args[1] .. "/queue/"
  requests = {}
  for line in io.lines(args[2]) do
    if line ~= "" then requests[#requests + 1] = wrk.format("GET", prefix .. line) end
  end
  counter = tid
end

function request()
  counter = counter + 2
  return requests[(counter % #requests) + 1]
end
