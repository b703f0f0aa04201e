-- Exactly BENCH_RESTING_COUNT limit orders far from the mid (none trades), then only
-- GET /healthz. Prints "BENCH resting_done" once every one was answered 201, so that
-- bench/wrk.py can stop wrk at once (wrk itself always runs its full duration).
-- Run with one thread (-t1): the count is per thread.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local target = tonumber(os.getenv("BENCH_RESTING_COUNT") or "1000")
local sent = 0
local created = 0
local first = true

request = function()
  -- wrk calls request() once before the run to check the script, and throws the answer
  -- away: the first call must not count as a sent order. A harmless GET instead.
  if first then
    first = false
    return wrk.format("GET", "/healthz")
  end
  if sent < target then
    sent = sent + 1
    return resting_limit(sent)
  end
  return wrk.format("GET", "/healthz")
end

response = function(status, headers, body)
  count(status, body)
  if status == 201 then
    created = created + 1
    if created == target then
      io.write("BENCH resting_done\n")
      io.flush()
    end
  end
end
