-- wrk script: POST /v1/tokens (a read token for bench/read/*, 5 minutes) with the key in
-- $AIRLOCK_BENCH_KEY. Arguments after `--`: LABEL. Every mint writes an audit record.

local here = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"
dofile(here .. "common.lua")

local headers
local body = '{"scope":"secrets:read:bench/read/*","ttl_seconds":300}'

function init(args)
  label = args[1] or "mint"
  headers = {
    ["Authorization"] = "Bearer " .. bench_key(),
    ["Content-Type"] = "application/json",
  }
end

function request()
  return wrk.format("POST", "/v1/tokens", headers, body)
end
