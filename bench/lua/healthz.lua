-- GET /healthz: the ceiling of the HTTP stack of the same server, no exchange work.
dofile(os.getenv("BENCH_LUA_DIR") .. "/common.lua")

request = function()
  return wrk.format("GET", "/healthz")
end

response = function(status, headers, body)
  count(status, body)
end
