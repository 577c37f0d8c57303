-- Shared by read.lua and create.lua (loaded with dofile into every wrk Lua state).
--
-- setup() runs in wrk's main Lua state once per thread: it numbers the threads
-- (thread:set("id", n), so create paths never collide across threads) and keeps them
-- so done() can collect each thread's counters.
--
-- response() runs in each thread's own Lua state and counts every status outside
-- 200-299. Only numbers and strings cross between Lua states here: `non2xx`, one
-- `n_<status>` per status seen, and `seen`, a comma list of those statuses.
--
-- done() prints one machine-readable line that bench/api.sh parses:
--   BENCH label=<label> requests=<n> non2xx=<n> statuses=<409:12,429:3|none>

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

non2xx = 0
seen = ""

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    local k = "n_" .. status
    if _G[k] == nil then
      _G[k] = 0
      seen = (seen == "") and tostring(status) or (seen .. "," .. status)
    end
    _G[k] = _G[k] + 1
  end
end

function done(summary, latency, requests)
  local label, total, by, codes = "?", 0, {}, {}
  for _, t in ipairs(threads) do
    label = t:get("label") or label
    total = total + (t:get("non2xx") or 0)
    local s = t:get("seen") or ""
    for code in string.gmatch(s, "[^,]+") do
      if by[code] == nil then
        by[code] = 0
        table.insert(codes, code)
      end
      by[code] = by[code] + (t:get("n_" .. code) or 0)
    end
  end
  table.sort(codes)
  local parts = {}
  for _, code in ipairs(codes) do
    table.insert(parts, code .. ":" .. by[code])
  end
  local statuses = (#parts > 0) and table.concat(parts, ",") or "none"
  io.write(string.format("BENCH label=%s requests=%d non2xx=%d statuses=%s\n",
    label, summary.requests, total, statuses))
end

-- The credential comes from the environment, not from wrk's argv.
function bench_key()
  local key = os.getenv("AIRLOCK_BENCH_KEY")
  if key == nil or key == "" then
    error("AIRLOCK_BENCH_KEY is not set")
  end
  return key
end
