-- wrk script: POST /v1/secrets with a path unique across threads and requests,
-- bench/create/t<thread id>/c<counter>, with the key in $AIRLOCK_BENCH_KEY.
-- Arguments after `--`: LABEL. wrk calls request() again for each request it
-- sends (also after a reconnect), so a path is never sent twice.
-- Every create also writes an audit record on the server.

local here = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"
dofile(here .. "common.lua")

local counter, headers = 0, nil
local value = "bench-value-0123456789abcdefghijklmnopqrstuvwxyz"

function init(args)
  label = args[1] or "create"
  headers = {
    ["Authorization"] = "Bearer " .. bench_key(),
    ["Content-Type"] = "application/json",
  }
end

function request()
  counter = counter + 1
  local body = string.format('{"path":"bench/create/t%d/c%d","value":"%s"}', id, counter, value)
  return wrk.format("POST", "/v1/secrets", headers, body)
end
