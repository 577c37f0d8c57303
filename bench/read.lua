-- wrk script: GET /v1/secrets/bench%2Fread%2Fk<random 0..N-1> with the key in
-- $AIRLOCK_BENCH_KEY. Arguments after `--`: LABEL N  (e.g. -- read-admin 1000).
-- Every read also writes an audit record on the server.

local here = debug.getinfo(1, "S").source:match("^@(.*[/\\])") or "./"
dofile(here .. "common.lua")

local count, headers

function init(args)
  label = args[1] or "read"
  count = tonumber(args[2] or "1000")
  math.randomseed(os.time() + 7919 * (id or 0))
  headers = { ["Authorization"] = "Bearer " .. bench_key() }
end

function request()
  local path = "/v1/secrets/bench%2Fread%2Fk" .. math.random(0, count - 1)
  return wrk.format("GET", path, headers)
end
