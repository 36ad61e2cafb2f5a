# Shared by the gateway load scripts (source it): builds the release
# binaries, starts the mock on core 0, and runs the gateway pinned to core 1
# with a config, measuring its peak RSS (GATEWAY=path runs another build of
# it, e.g. an older commit's, against the same mock and load). Loopback only.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CONC=${CONC:-32}
# BUILD=debug (CI: that a script runs, not its figures) builds and runs debug binaries.
BUILD=${BUILD:-release}
if [ "$BUILD" = release ]; then
  cargo build --release -q -p llm-tower-gateway -p llm-tower-mock -p llm-tower-bench --bins
else
  cargo build -q -p llm-tower-gateway -p llm-tower-mock -p llm-tower-bench --bins
fi
BIN=target/$BUILD
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_up() { # port path (WAIT_TRIES tenths of a second, default 100)
  for _ in $(seq 1 "${WAIT_TRIES:-100}"); do
    if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$1$2', timeout=1)" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "not up: $1" >&2; return 1
}

MOCK_PORT=$(port)
# MOCK_ARGS: extra mock options (e.g. "--ttft-ms 50" for a provider's latency).
# shellcheck disable=SC2086
taskset -c 0 "$BIN/llm-tower-mock" --port "$MOCK_PORT" ${MOCK_ARGS:-} >/dev/null 2>&1 &
wait_up "$MOCK_PORT" /v1/models
GW_PORT=$(port)

# The provider section every script's config starts with.
provider_toml() {
  cat <<TOML
[server]
listen = "127.0.0.1:$GW_PORT"
[[providers]]
name = "mock"
kind = "openai"
base_url = "http://127.0.0.1:$MOCK_PORT/v1"
api_key = "unused"
models = ["gpt-4o-mini"]
TOML
}

# limited_toml: the provider section, with provider RPM/TPM limits high
# enough never to refuse, and the tenants' limits and a budget (every limiter
# and the accounting on, none refusing).
limited_toml() {
  provider_toml
  cat <<'TOML'
[providers.rate_limit]
requests_per_minute = 100000000
tokens_per_minute = 4000000000
TOML
  tenants_toml 1000000.0
}

# bare_toml: the provider section with retry and the breaker off (no limits,
# no cache): the bare proxy the scripts compare against.
bare_toml() {
  provider_toml
  printf '[providers.retry]\nenabled = false\n[providers.circuit_breaker]\nenabled = false\n'
}

# cache_toml: every layer (limited_toml) and a 64 MiB cache.
cache_toml() {
  limited_toml
  printf '[cache]\nmax_mb = 64\n'
}

# tenants_toml BUDGET_USD: per-tenant limits high enough never to refuse, and
# a daily budget per tenant (the scripts that send as tenants append it).
tenants_toml() {
  cat <<TOML
[tenants]
header = "x-tenant"
[tenants.default]
requests_per_minute = 100000000
tokens_per_minute = 4000000000
[tenants.default_budget]
usd = $1
period = "day"
TOML
}

# CPU time (user + system) of a process so far, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# The single-tenant header and a tenant per request, for the load's arguments.
ONE_TENANT=(--header 'x-tenant: tenant')
TENANT_EACH=(--header 'x-tenant: tenant-{i}')

# load ARGS...: llm-tower-bench's closed loop against the gateway from core 0
# (unique prompts, one bench thread, no warm-up of its own).
load() {
  taskset -c 0 "$BIN/llm-tower-bench" load --url "http://127.0.0.1:$GW_PORT/v1" \
    --concurrency "$CONC" --warmup 0 --no-progress "$@"
}

# run_gateway CONFIG_FILE LOAD_ARGS... -> prints "rps peak_rss_kib cpu_us_per_request"
# (the load's line on stderr). LOAD_ARGS go to llm-tower-bench load
# (--requests N, --stream, "${ONE_TENANT[@]}" or "${TENANT_EACH[@]}"). CPU per request
# is the gateway's own user + system time over the measured load divided by its
# requests: on a pinned core it is the inverse of the throughput the gateway can
# reach, and it does not move with what else the machine is doing the way req/s does.
run_gateway() {
  local cfg=$1; shift
  start_gateway "$cfg"
  local hwm t0 t1 n ok rps
  t0=$(cpu_ticks "$GW_PID")
  load "$@" --json "$tmp/load.json" >/dev/null 2>&1
  t1=$(cpu_ticks "$GW_PID")
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/$GW_PID/status")
  if [[ -n "${STATS_OUT:-}" ]]; then
    python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$GW_PORT/stats').read().decode())" >"$STATS_OUT"
  fi
  stop_gateway
  read -r n ok rps < <(python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))["runs"][0]["summary"]
print(s["requests"], s["successes"], round(s["requests"] / s["elapsed_s"]))' "$tmp/load.json")
  local cpu_us
  cpu_us=$(awk -v a="$t0" -v b="$t1" -v hz="$(getconf CLK_TCK)" -v n="$n" 'BEGIN { printf "%.1f", (b - a) * 1e6 / hz / n }')
  echo "$* -> requests $n ok $ok rps $rps peak_rss_kib $hwm cpu_us_per_request $cpu_us" >&2
  echo "$rps $hwm $cpu_us"
}

# start_gateway CONFIG_FILE: the gateway on core 1 (its pid in GW_PID), up and
# warmed (connections, allocator) by an unmeasured closed-loop load.
start_gateway() {
  RUST_LOG=warn taskset -c 1 "${GATEWAY:-$BIN/llm-tower-gateway}" --config "$1" 2>"$tmp/gw.log" &
  GW_PID=$!
  wait_up "$GW_PORT" /health
  # A seed of its own: the measured load's prompts are not cached by the warm-up.
  load --requests "${WARMUP_REQUESTS:-5000}" "${ONE_TENANT[@]}" --seed 7919 >/dev/null
}

stop_gateway() {
  kill "$GW_PID"; wait "$GW_PID" 2>/dev/null || true
}
