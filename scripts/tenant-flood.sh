#!/usr/bin/env bash
# Memory and throughput of the gateway under a flood of client-chosen tenant
# values (issue: every keyed map bounded). The gateway runs pinned to core 1,
# the mock and the load on core 0 (taskset), release build, loopback only.
#
#   bash scripts/tenant-flood.sh [DISTINCT_REQUESTS] [SINGLE_REQUESTS]
#
# Prints: req/s with one tenant, req/s with every request a new tenant, their
# ratio, and the gateway's peak RSS in each run.
set -euo pipefail
cd "$(dirname "$0")/.."
DISTINCT=${1:-1000000}
SINGLE=${2:-200000}
CONC=${CONC:-32}
cargo build --release -q -p llm-tower-gateway -p llm-tower-mock --bins --example load
BIN=target/release
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MOCK_PORT=$(port)
taskset -c 0 "$BIN/llm-tower-mock" --port "$MOCK_PORT" >/dev/null 2>&1 &
GW_PORT=$(port)
cat > "$tmp/gw.toml" <<TOML
[server]
listen = "127.0.0.1:$GW_PORT"
[[providers]]
name = "mock"
kind = "openai"
base_url = "http://127.0.0.1:$MOCK_PORT/v1"
api_key = "unused"
models = ["gpt-4o-mini"]
[tenants]
header = "x-tenant"
[tenants.default]
requests_per_minute = 100000000
tokens_per_minute = 4000000000
[tenants.default_budget]
usd = 5.0
period = "day"
TOML

wait_up() {
  for _ in $(seq 1 100); do
    if python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$1$2', timeout=1)" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "not up: $1" >&2; return 1
}
wait_up "$MOCK_PORT" /v1/models

run() { # mode requests -> "rps peak_rss_kib"
  RUST_LOG=warn taskset -c 1 "$BIN/llm-tower-gateway" --config "$tmp/gw.toml" 2>"$tmp/gw.log" &
  local pid=$!
  wait_up "$GW_PORT" /health
  # Warm-up (connections, allocator), excluded from the figure.
  taskset -c 0 "$BIN/examples/load" --url "http://127.0.0.1:$GW_PORT" --requests 5000 --concurrency "$CONC" --tenants single >/dev/null
  local out
  out=$(taskset -c 0 "$BIN/examples/load" --url "http://127.0.0.1:$GW_PORT" --requests "$2" --concurrency "$CONC" --tenants "$1")
  local hwm
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$1: $out peak_rss_kib $hwm" >&2
  echo "$(sed -E 's/.* rps ([0-9]+).*/\1/' <<<"$out") $hwm"
}

read -r single_rps single_rss < <(run single "$SINGLE")
read -r distinct_rps distinct_rss < <(run distinct "$DISTINCT")
python3 - "$single_rps" "$distinct_rps" "$single_rss" "$distinct_rss" "$DISTINCT" <<'PY'
import sys
s, d, srss, drss, n = map(int, sys.argv[1:])
print(f"one tenant:          {s} req/s, peak RSS {srss/1024:.0f} MiB")
print(f"{n} tenants: {d} req/s, peak RSS {drss/1024:.0f} MiB")
print(f"throughput ratio (distinct / single): {d/s:.2f}  (target >= 0.80)")
print(f"peak RSS with distinct tenants: {drss/1024:.0f} MiB  (target < 256 MiB)")
PY
