-- POST /orders with random limit orders around the mid (about half cross).
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

request = function()
  return random_limit()
end

response = function(status, headers, body)
  count(status, body)
  count_crossed(status, body)
end
