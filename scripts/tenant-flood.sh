#!/usr/bin/env bash
# Memory and throughput of the gateway under a flood of client-chosen tenant
# values (every keyed map bounded). The gateway runs pinned to core 1, the mock
# and the load on core 0 (taskset), release build, loopback only.
#
#   bash scripts/tenant-flood.sh [DISTINCT_REQUESTS] [SINGLE_REQUESTS]
#
# Prints req/s and the gateway's CPU time per request with one tenant and with
# a new tenant on every request, their ratios, and the gateway's peak RSS.
source "$(dirname "$0")/gateway-load-common.sh"
DISTINCT=${1:-1000000}
SINGLE=${2:-200000}
{ provider_toml; tenants_toml 1000.0; } >"$tmp/gw.toml"
# The single-tenant run goes before and after the long distinct run and the two
# are averaged, so a slow phase of the machine does not land on one side only.
read -r s1_rps s1_rss s1_cpu < <(run_gateway "$tmp/gw.toml" --requests "$SINGLE" "${ONE_TENANT[@]}")
read -r distinct_rps distinct_rss distinct_cpu < <(run_gateway "$tmp/gw.toml" --requests "$DISTINCT" "${TENANT_EACH[@]}")
read -r s2_rps s2_rss s2_cpu < <(run_gateway "$tmp/gw.toml" --requests "$SINGLE" "${ONE_TENANT[@]}")
python3 - "$DISTINCT" "$s1_rps" "$s2_rps" "$distinct_rps" "$s1_rss" "$s2_rss" "$distinct_rss" "$s1_cpu" "$s2_cpu" "$distinct_cpu" <<'PY'
import sys
n = int(sys.argv[1])
s1, s2, d, s1rss, s2rss, drss = map(int, sys.argv[2:8])
s1cpu, s2cpu, dcpu = map(float, sys.argv[8:11])
s, scpu, srss = (s1 + s2) / 2, (s1cpu + s2cpu) / 2, max(s1rss, s2rss)
print(f"one tenant:       {s:.0f} req/s ({s1} before, {s2} after), {scpu:.1f} us CPU per request, peak RSS {srss/1024:.0f} MiB")
print(f"{n} tenants: {d} req/s, {dcpu:.1f} us CPU per request, peak RSS {drss/1024:.0f} MiB")
print(f"throughput ratio (distinct / single): req/s {d/s:.2f}, by CPU per request {scpu/dcpu:.2f}  (target >= 0.80)")
print(f"peak RSS with distinct tenants: {drss/1024:.0f} MiB  (target < 256 MiB)")
PY
