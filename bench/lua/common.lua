-- Shared by every scenario (each script loads it with dofile): the parameters, order
-- bodies, and the counters that done() prints for bench/wrk.py to parse.
--
-- wrk runs a script in its main Lua state (setup, done) and again in every thread's own
-- state (init, request, response). Threads share nothing, so each counts in its own
-- globals and done() collects them with thread:get.
-- Parameters come from the environment (BENCH_*, set by bench/wrk.py), so that the
-- Python flow and these scripts draw from one definition of the market.

local function env(name, default)
  local value = os.getenv(name)
  if value == nil or value == "" then
    return default
  end
  return value
end

local function split(text)
  local out = {}
  for item in string.gmatch(text, "[^,]+") do
    out[#out + 1] = item
  end
  return out
end

params = {
  brokers = split(env("BENCH_BROKERS", "bench-00")),
  symbols = split(env("BENCH_SYMBOLS", "AAPL")),
  mid = tonumber(env("BENCH_MID_CENTS", "10000")),
  spread = tonumber(env("BENCH_SPREAD_CENTS", "100")),
  max_quantity = tonumber(env("BENCH_MAX_QUANTITY", "100")),
  max_market_quantity = tonumber(env("BENCH_MAX_MARKET_QUANTITY", "50")),
  far_bid_low = tonumber(env("BENCH_FAR_BID_LOW", "100")),
  far_bid_high = tonumber(env("BENCH_FAR_BID_HIGH", "4999")),
  far_ask_low = tonumber(env("BENCH_FAR_ASK_LOW", "15000")),
  far_ask_high = tonumber(env("BENCH_FAR_ASK_HIGH", "19999")),
  expires_at = env("BENCH_EXPIRES_AT", "2099-01-01T00:00:00Z"),
  document = env("BENCH_DOCUMENT", "12345678901"),
  seed = tonumber(env("BENCH_SEED", "6")),
}

json_headers = { ["Content-Type"] = "application/json" }

function pick(list)
  return list[math.random(#list)]
end

function money(cents)
  return string.format("%d.%02d", math.floor(cents / 100), cents % 100)
end

function random_side()
  if math.random(2) == 1 then
    return "bid"
  end
  return "ask"
end

function limit_request(side, symbol, cents, quantity)
  local body = string.format(
    '{"type":"limit","broker_id":"%s","document_number":"%s","side":"%s","symbol":"%s",'
      .. '"price":%s,"quantity":%d,"expires_at":"%s"}',
    pick(params.brokers), params.document, side, symbol, money(cents), quantity, params.expires_at
  )
  return wrk.format("POST", "/orders", json_headers, body)
end

-- A limit order within `spread` of the mid on either side: once the book has depth near
-- the mid, about half of them cross.
function random_limit()
  local cents = params.mid + math.random(-params.spread, params.spread)
  return limit_request(random_side(), pick(params.symbols), cents, math.random(params.max_quantity))
end

function random_market()
  local body = string.format(
    '{"type":"market","broker_id":"%s","document_number":"%s","side":"%s","symbol":"%s","quantity":%d}',
    pick(params.brokers), params.document, random_side(), pick(params.symbols),
    math.random(params.max_market_quantity)
  )
  return wrk.format("POST", "/orders", json_headers, body)
end

-- A limit order far from the mid: every such bid is below every such ask, so on a book
-- that holds only these, none ever trades (the memory scenario).
function resting_limit(n)
  if n % 2 == 0 then
    return limit_request("bid", pick(params.symbols),
      math.random(params.far_bid_low, params.far_bid_high), math.random(params.max_quantity))
  end
  return limit_request("ask", pick(params.symbols),
    math.random(params.far_ask_low, params.far_ask_high), math.random(params.max_quantity))
end

-- Per-thread counters: responses by status ("201", "409 no_liquidity", ...), and the
-- 201 order responses whose trades are not empty (orders that crossed).
statuses = {}
crossed = 0

function count(status, body)
  local key = tostring(status)
  if status >= 300 and body then
    local code = string.match(body, '"error":"([%w_]+)"')
    if code then
      key = key .. " " .. code
    end
  end
  statuses[key] = (statuses[key] or 0) + 1
end

function count_crossed(status, body)
  if status == 201 and body and not string.find(body, '"trades":[]', 1, true) then
    crossed = crossed + 1
  end
end

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
  thread:set("thread_number", #threads)
end

function init(args)
  math.randomseed(params.seed + (thread_number or 0))
end

function done(summary, latency, requests)
  local out = {}
  out[#out + 1] = string.format("BENCH requests %d", summary.requests)
  out[#out + 1] = string.format("BENCH duration_us %d", summary.duration)
  out[#out + 1] = string.format("BENCH p50_us %d", latency:percentile(50))
  out[#out + 1] = string.format("BENCH p99_us %d", latency:percentile(99))
  out[#out + 1] = string.format("BENCH max_us %d", latency.max)
  for _, kind in ipairs({ "connect", "read", "write", "status", "timeout" }) do
    out[#out + 1] = string.format("BENCH error %d %s", summary.errors[kind], kind)
  end
  local total_crossed = 0
  for _, thread in ipairs(threads) do
    for key, n in pairs(thread:get("statuses") or {}) do
      out[#out + 1] = string.format("BENCH status %d %s", n, key)
    end
    total_crossed = total_crossed + (thread:get("crossed") or 0)
  end
  out[#out + 1] = string.format("BENCH crossed %d", total_crossed)
  io.write(table.concat(out, "\n") .. "\n")
  io.flush()
end
