-- 70% limit orders, 10% market orders, 10% cancels of a recently created order, 10%
-- reads (book, price, one order). Expected refusals: 409 order_not_cancellable (the
-- order filled or was cancelled already) and 409 no_liquidity (a market order met an
-- empty side); anything else non-2xx is a failure.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

local RECENT = 1000
local recent = {} -- ring of the last RECENT order ids seen in 201 answers
local recent_count = 0

local function remember(order_id)
  recent[(recent_count % RECENT) + 1] = order_id
  recent_count = recent_count + 1
end

local function recent_id()
  if recent_count == 0 then
    return nil
  end
  return recent[math.random(math.min(recent_count, RECENT))]
end

request = function()
  local draw = math.random(100)
  if draw <= 70 then
    return random_limit()
  elseif draw <= 80 then
    return random_market()
  elseif draw <= 90 then
    local order_id = recent_id()
    if order_id then
      return wrk.format("DELETE", "/orders/" .. order_id)
    end
    return random_limit()
  end
  local read = math.random(3)
  if read == 3 then
    local order_id = recent_id()
    if order_id then
      return wrk.format("GET", "/orders/" .. order_id)
    end
  end
  if read == 2 then
    return wrk.format("GET", "/stocks/" .. pick(params.symbols) .. "/price")
  end
  return wrk.format("GET", "/stocks/" .. pick(params.symbols) .. "/book")
end

response = function(status, headers, body)
  count(status, body)
  if status == 201 then
    local order_id = string.match(body, '"order_id":"([^"]+)"')
    if order_id then
      remember(order_id)
    end
  end
end
