#!/usr/bin/env bash
# Secrets-API benchmark for Airlock: SQLite with the audit trail on.
#
#   bash bench/api.sh [DURATION_SECONDS=10] [CONNECTIONS=32]
#
# Starts a release server on a free port with a fresh temp data dir, seeds 1000
# secrets, then runs wrk (-t2 -c$CONNECTIONS -d${DURATION}s --latency) for:
#   read (admin key)     GET  /v1/secrets/bench%2Fread%2Fk<random>   bench/read.lua
#   read (deployer key)  same, with a deployer key                   bench/read.lua
#   read (scoped token)  same, with a token minted for bench/read/*   bench/read.lua
#   mint token           POST /v1/tokens (admin key)                   bench/mint.lua
#   create (admin key)   POST /v1/secrets, unique path per request   bench/create.lua
# and prints one table (req/s, p50, p99, non-2xx, socket errors, target verdict).
#
# Exit status: 0 when every workload got only 2xx responses, no socket errors, the
# server stayed up and the audit chain verifies; 1 otherwise. A missed throughput or
# latency target is printed as MISS but does not fail the run (these are measurements).
#
# Environment: BENCH_KEEP=1 keeps the temp dir (data dir, server log, raw wrk output);
# BENCH_WARMUP=<seconds> (default 2) is an unreported admin-read warm-up, 0 to skip;
# AIRLOCK_BIN=<path> benchmarks that binary instead of building target/release/airlock
# (then the git rev printed is the repo's, not necessarily the binary's).
set -euo pipefail

DURATION=${1:-10}
CONNECTIONS=${2:-32}
WARMUP=${BENCH_WARMUP:-2}
SEED_COUNT=1000
THREADS=2
READ_TARGET=5000   # req/s
CREATE_TARGET=1000 # req/s
P99_TARGET_MS=10

die() { echo "api.sh: $*" >&2; exit 1; }

[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "DURATION_SECONDS must be a positive integer (got '$DURATION')"
[[ $CONNECTIONS =~ ^[1-9][0-9]*$ ]] || die "CONNECTIONS must be a positive integer (got '$CONNECTIONS')"
[[ $WARMUP =~ ^[0-9]+$ ]] || die "BENCH_WARMUP must be a whole number of seconds (got '$WARMUP')"
((CONNECTIONS >= THREADS)) || die "CONNECTIONS must be at least $THREADS (wrk -t$THREADS)"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/bench"
cd "$ROOT"

# --- tools -----------------------------------------------------------------------
for tool in curl python3; do
  command -v "$tool" >/dev/null || die "$tool is required"
done
if ! command -v wrk >/dev/null; then
  echo "installing wrk ..." >&2
  SUDO=""
  if ((EUID != 0)); then
    command -v sudo >/dev/null || die "wrk is missing and installing it needs root (apt-get install wrk)"
    SUDO=sudo
  fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq wrk >&2
  command -v wrk >/dev/null || die "wrk did not install"
fi

# --- release binary, rebuilt when older than the sources -------------------------
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
airlock_binary

# --- temp dir, server, cleanup ---------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/airlock-bench.XXXXXX")
DATA="$WORK/data"
LOG="$WORK/server.log"
SERVER_PID=""

cleanup() {
  local rc=$?
  trap - EXIT
  if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if ((rc != 0)) && [[ -s $LOG ]]; then
    echo "--- server stdout/stderr, last 40 lines ($LOG) ---" >&2
    tail -n 40 "$LOG" >&2
    echo "--- end of server log ---" >&2
  fi
  if [[ ${BENCH_KEEP:-0} == 1 ]]; then
    echo "kept $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

server_alive() { [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; }
require_server() {
  server_alive && return 0
  local rc=0
  wait "$SERVER_PID" 2>/dev/null || rc=$?
  SERVER_PID=""
  die "the server exited (status $rc) $1"
}

# Settings must come from the flags below, not from the caller's environment.
unset AIRLOCK_DATA_DIR AIRLOCK_DATABASE_URL AIRLOCK_LISTEN AIRLOCK_LOG

INIT_LOG="$WORK/init.log"
ADMIN_KEY=$("$BIN" server init --data-dir "$DATA" --json 2>"$INIT_LOG" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["admin_key"])') || {
  cat "$INIT_LOG" >&2
  die "airlock server init failed"
}

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
BASE="http://127.0.0.1:$PORT"
"$BIN" --log-level warn server --data-dir "$DATA" --listen "127.0.0.1:$PORT" \
  --rate-limit 100000000/s >>"$LOG" 2>&1 &
SERVER_PID=$!

for _ in $(seq 1 200); do
  require_server "before /healthz answered"
  if curl -fsS -o /dev/null --max-time 1 "$BASE/healthz" 2>/dev/null; then break; fi
  sleep 0.05
done
curl -fsS -o /dev/null --max-time 2 "$BASE/healthz" || die "server did not answer /healthz on $BASE within 10 s"

# --- seed ------------------------------------------------------------------------
DEPLOYER_KEY=$(AIRLOCK_BENCH_KEY="$ADMIN_KEY" python3 "$BENCH/seed.py" "$PORT" "$SEED_COUNT") ||
  die "seeding failed"
TOKEN=$(curl -sS --max-time 5 -H "Authorization: Bearer $ADMIN_KEY" -X POST "$BASE/v1/tokens" \
  -d '{"scope":"secrets:read:bench/read/*","ttl_seconds":3600}' |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["value"])') || die "minting the bench token failed"
for key_name in ADMIN_KEY DEPLOYER_KEY TOKEN; do
  status=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 \
    -H "Authorization: Bearer ${!key_name}" "$BASE/v1/secrets/bench%2Fread%2Fk0")
  [[ $status == 200 ]] || die "sanity read of bench/read/k0 with $key_name returned $status, not 200"
done

# --- wrk runs ---------------------------------------------------------------------
# run_wrk NAME SCRIPT KEY DURATION [LUA ARGS...]  ->  $WORK/wrk-NAME.txt
run_wrk() {
  local name=$1 script=$2 key=$3 secs=$4
  shift 4
  local out="$WORK/wrk-$name.txt" rc=0
  AIRLOCK_BENCH_KEY="$key" wrk -t"$THREADS" -c"$CONNECTIONS" -d"${secs}s" --latency \
    -s "$script" "$BASE" -- "$name" "$@" >"$out" 2>&1 || rc=$?
  require_server "during the $name run (wrk output: $out)"
  if ((rc != 0)) || ! grep -q '^BENCH ' "$out"; then
    cat "$out" >&2
    die "wrk failed for $name (exit $rc)"
  fi
}

# Latency as wrk prints it (e.g. 812.00us, 3.21ms, 1.02s, 1.50m) -> milliseconds.
to_ms() {
  awk -v v="$1" 'BEGIN {
    if (match(v, /^[0-9.]+/)) { n = substr(v, 1, RLENGTH); u = substr(v, RLENGTH + 1) } else { print "nan"; exit }
    f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : (u == "h") ? 3600000 : -1
    if (f < 0) print "nan"; else printf "%.3f", n * f
  }'
}

# parse NAME -> sets RPS P50 P99 NON2XX STATUSES SOCKERR
parse() {
  local out="$WORK/wrk-$1.txt"
  RPS=$(awk '/^Requests\/sec:/ {print $2}' "$out")
  P50=$(to_ms "$(awk '/Latency Distribution/ {d = 1} d && $1 == "50%" {print $2; exit}' "$out")")
  P99=$(to_ms "$(awk '/Latency Distribution/ {d = 1} d && $1 == "99%" {print $2; exit}' "$out")")
  NON2XX=$(sed -n 's/^BENCH .* non2xx=\([0-9]*\) .*/\1/p' "$out")
  STATUSES=$(sed -n 's/^BENCH .* statuses=\([^ ]*\)$/\1/p' "$out")
  # "Socket errors: connect 0, read 0, write 0, timeout 0" appears only when non-zero.
  SOCKERR=$(awk '/Socket errors:/ {gsub(/,/, ""); print $4 + $6 + $8 + $10; f = 1} END {if (!f) print 0}' "$out")
  [[ -n $RPS && $P50 != nan && $P99 != nan && -n $NON2XX ]] || {
    cat "$out" >&2
    die "could not parse wrk output for $1"
  }
}

echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency against $BASE (warm-up ${WARMUP}s)" >&2
if ((WARMUP > 0)); then
  run_wrk warmup "$BENCH/read.lua" "$ADMIN_KEY" "$WARMUP" "$SEED_COUNT"
fi

# Both reads run back to back before the creates, so the admin/deployer comparison
# sees the same database size.
WORKLOADS=(read-admin read-deployer read-token create-admin mint-admin)
declare -A LABEL=(
  [read-admin]="read (admin key)"
  [read-deployer]="read (deployer key)"
  [read-token]="read (scoped token)"
  [create-admin]="create (admin key)"
  [mint-admin]="mint token"
)
echo "  read (admin key) ..." >&2
run_wrk read-admin "$BENCH/read.lua" "$ADMIN_KEY" "$DURATION" "$SEED_COUNT"
echo "  read (deployer key) ..." >&2
run_wrk read-deployer "$BENCH/read.lua" "$DEPLOYER_KEY" "$DURATION" "$SEED_COUNT"
echo "  read (scoped token) ..." >&2
run_wrk read-token "$BENCH/read.lua" "$TOKEN" "$DURATION" "$SEED_COUNT"
echo "  create (admin key) ..." >&2
run_wrk create-admin "$BENCH/create.lua" "$ADMIN_KEY" "$DURATION"
echo "  mint token ..." >&2
run_wrk mint-admin "$BENCH/mint.lua" "$ADMIN_KEY" "$DURATION"

# The audit trail must still verify after the load (every read and create appended to it).
AUDIT=$(curl -sS --max-time 300 -H "Authorization: Bearer $ADMIN_KEY" "$BASE/v1/audit/verify" || true)
AUDIT_LINE=$(printf '%s' "$AUDIT" | python3 -c '
import json, sys
try:
    v = json.load(sys.stdin)
except ValueError:
    print("BAD unreadable /v1/audit/verify response"); sys.exit()
if v.get("ok") is True:
    print("ok, %s records checked, head seq %s" % (v.get("checked"), v.get("head_seq")))
else:
    print("BAD " + json.dumps(v)[:400])
')
require_server "after the runs"

# --- report -----------------------------------------------------------------------
verdict() { # RPS P99 TARGET -> PASS / MISS (...)
  awk -v r="$1" -v p="$2" -v t="$3" -v pt="$P99_TARGET_MS" 'BEGIN {
    m = ""
    if (r + 0 < t + 0) m = "req/s"
    if (p + 0 >= pt + 0) m = (m == "") ? "p99" : m " + p99"
    print (m == "") ? "PASS" : "MISS (" m ")"
  }'
}

GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ $GIT_REV != unknown && -n $(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]]; then
  GIT_REV="$GIT_REV+dirty"
fi
CPU=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)
WRK_VERSION=$(wrk -v 2>&1 | awk 'NR == 1 {print $2; exit}' || true)
BUILT=$(date -r "$BIN" '+%Y-%m-%d %H:%M' 2>/dev/null || echo unknown)

echo
echo "Airlock secrets API — SQLite, audit trail on; wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, $SEED_COUNT seeded secrets"
echo "machine: nproc=$(nproc) cpu=\"${CPU:-unknown}\" load=\"$(cut -d' ' -f1-3 /proc/loadavg)\" git=$GIT_REV wrk=${WRK_VERSION:-unknown}"
echo "binary: $BIN_SOURCE, built $BUILT"
echo
ROW='%-20s %8s %8s %8s  %-18s %6s  %-22s %s\n'
printf "$ROW" workload 'req/s' 'p50 ms' 'p99 ms' non-2xx errors target result
FAILED=()
declare -A RPS_OF
for w in "${WORKLOADS[@]}"; do
  parse "$w"
  RPS_OF[$w]=$RPS
  if [[ $w == create-* || $w == mint-* ]]; then target=$CREATE_TARGET; else target=$READ_TARGET; fi
  non2xx_cell=$NON2XX
  [[ $NON2XX == 0 ]] || non2xx_cell="$NON2XX ($STATUSES)"
  result=$(verdict "$RPS" "$P99" "$target")
  # Error responses are fast: with any of them the figures do not measure the workload.
  [[ $NON2XX == 0 && $SOCKERR == 0 ]] || result="INVALID (errors)"
  printf "$ROW" "${LABEL[$w]}" "$(printf '%.0f' "$RPS")" "$(printf '%.2f' "$P50")" "$(printf '%.2f' "$P99")" \
    "$non2xx_cell" "$SOCKERR" ">=$target/s, p99<${P99_TARGET_MS}ms" "$result"
  [[ $NON2XX == 0 ]] || FAILED+=("${LABEL[$w]}: $NON2XX non-2xx responses ($STATUSES)")
  [[ $SOCKERR == 0 ]] || FAILED+=("${LABEL[$w]}: $SOCKERR socket errors")
done
if [[ -f $WORK/wrk-warmup.txt ]]; then
  parse warmup
  [[ $NON2XX == 0 ]] || FAILED+=("warm-up: $NON2XX non-2xx responses ($STATUSES)")
  [[ $SOCKERR == 0 ]] || FAILED+=("warm-up: $SOCKERR socket errors")
fi
echo
awk -v d="${RPS_OF[read-deployer]}" -v t="${RPS_OF[read-token]}" -v a="${RPS_OF[read-admin]}" 'BEGIN {
  printf "ratio deployer-read / admin-read throughput: %.2f\n", (a > 0) ? d / a : 0
  r = (a > 0) ? t / a : 0
  printf "ratio token-read / admin-read throughput: %.2f (target: auth costs at most 10%% -> >= 0.90: %s)\n", r, (r >= 0.9) ? "PASS" : "MISS"
}'
echo "audit chain after the runs: $AUDIT_LINE"
[[ $AUDIT_LINE == ok* ]] || FAILED+=("audit chain verification: $AUDIT_LINE")

LOG_LINES=$(wc -l <"$LOG")
if ((LOG_LINES > 0)); then
  echo "server log: $LOG_LINES line(s) at --log-level warn; last 10:"
  tail -n 10 "$LOG" | sed 's/^/  | /'
else
  echo "server log: empty at --log-level warn"
fi

if ((${#FAILED[@]} > 0)); then
  echo
  for f in "${FAILED[@]}"; do echo "FAIL: $f"; done
  exit 1
fi
