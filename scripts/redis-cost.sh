#!/usr/bin/env bash
# What sharing state in Redis costs the gateway: the same closed-loop load
# through every limiter and the budgets (provider RPM/TPM, tenant RPM/TPM and
# a daily budget, accounting) with the state in memory, then in a Redis on
# loopback (`[state] redis_url`). The gateway runs pinned to core 1; the mock,
# the load and redis-server on core 0 (taskset); release build.
#
#   bash scripts/redis-cost.sh [REQUESTS]
#
# Prints req/s and the gateway's CPU time per request for each, and the
# Redis run's throughput relative to memory. Needs redis-server.
source "$(dirname "$0")/gateway-load-common.sh"
REQUESTS=${1:-20000}
command -v redis-server >/dev/null || { echo "redis-server is not installed" >&2; exit 1; }
REDIS_PORT=$(port)
taskset -c 0 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 &
for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
limited_toml >"$tmp/memory.toml"
{ limited_toml; printf '[state]\nredis_url = "redis://127.0.0.1:%s"\nredis_prefix = "cost:"\nredis_timeout_ms = 1000\n' "$REDIS_PORT"; } >"$tmp/redis.toml"
read -r mem_rps _ mem_cpu < <(run_gateway "$tmp/memory.toml" --requests "$REQUESTS" "${ONE_TENANT[@]}")
read -r red_rps _ red_cpu < <(run_gateway "$tmp/redis.toml" --requests "$REQUESTS" "${ONE_TENANT[@]}")
redis-cli -p "$REDIS_PORT" info commandstats | grep -E '^cmdstat_evalsha' | tr -d '\r' >&2 || true
python3 - "$mem_rps" "$mem_cpu" "$red_rps" "$red_cpu" <<'PY'
import sys
mr, mc, rr, rc = map(float, sys.argv[1:])
print(f"{'state':28} {'req/s':>8} {'CPU us/req':>11}")
print(f"{'in memory':28} {int(mr):>8} {mc:>11.1f}")
print(f"{'in Redis (loopback)':28} {int(rr):>8} {rc:>11.1f}")
print(f"Redis vs memory: {rr / mr:.2f}x the throughput, {rc / mc:.2f}x the gateway CPU per request")
PY
