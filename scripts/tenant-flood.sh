#!/usr/bin/env bash
# Memory and throughput of the gateway under a flood of client-chosen tenant
# values (every keyed map bounded). The gateway runs pinned to core 1, the mock
# and the load on core 0 (taskset), release build, loopback only.
#
#   bash scripts/tenant-flood.sh [DISTINCT_REQUESTS] [SINGLE_REQUESTS]
#
# Prints req/s with one tenant and with a new tenant on every request, their
# ratio, and the gateway's peak RSS in each run.
source "$(dirname "$0")/gateway-load-common.sh"
DISTINCT=${1:-1000000}
SINGLE=${2:-200000}
{
  provider_toml
  cat <<'TOML'
[tenants]
header = "x-tenant"
[tenants.default]
requests_per_minute = 100000000
tokens_per_minute = 4000000000
[tenants.default_budget]
usd = 1000.0
period = "day"
TOML
} >"$tmp/gw.toml"
read -r single_rps single_rss < <(run_gateway "$tmp/gw.toml" --requests "$SINGLE" --tenants single)
read -r distinct_rps distinct_rss < <(run_gateway "$tmp/gw.toml" --requests "$DISTINCT" --tenants distinct)
python3 - "$single_rps" "$distinct_rps" "$single_rss" "$distinct_rss" "$DISTINCT" <<'PY'
import sys
s, d, srss, drss, n = map(int, sys.argv[1:])
print(f"one tenant:          {s} req/s, peak RSS {srss/1024:.0f} MiB")
print(f"{n} tenants: {d} req/s, peak RSS {drss/1024:.0f} MiB")
print(f"throughput ratio (distinct / single): {d/s:.2f}  (target >= 0.80)")
print(f"peak RSS with distinct tenants: {drss/1024:.0f} MiB  (target < 256 MiB)")
PY
