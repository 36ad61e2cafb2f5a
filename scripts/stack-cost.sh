#!/usr/bin/env bash
# What the layers cost in the gateway: the same closed-loop load through a bare
# proxy (retry and breaker off, no limits, no cache) and through every layer
# (tenant limits and budgets, accounting, preflight, provider limits, retry,
# breaker), without and with the cache (all misses), JSON and streamed. The
# gateway runs pinned to core 1, the mock and the load on core 0 (taskset),
# release build, loopback only.
#
#   bash scripts/stack-cost.sh [REQUESTS]
#
# Prints req/s and the gateway's CPU time per request for each, and each one's
# throughput relative to the bare proxy (by CPU per request: the steadier of
# the two on a shared machine).
source "$(dirname "$0")/gateway-load-common.sh"
REQUESTS=${1:-100000}
bare_toml() {
  provider_toml
  cat <<'TOML'
[providers.retry]
enabled = false
[providers.circuit_breaker]
enabled = false
TOML
}
bare_toml >"$tmp/bare.toml"
limited_toml >"$tmp/layers.toml"
{ limited_toml; printf '[cache]\nmax_mb = 64\n'; } >"$tmp/cache.toml"
results=()
run() { # label config load-args...
  local label=$1 cfg=$2; shift 2
  read -r rps _ cpu < <(run_gateway "$cfg" --requests "$REQUESTS" "$@")
  results+=("$label|$rps|$cpu")
}
run "bare proxy, JSON" "$tmp/bare.toml" "${ONE_TENANT[@]}"
run "every layer but the cache, JSON" "$tmp/layers.toml" "${ONE_TENANT[@]}"
run "every layer, cache missing, JSON" "$tmp/cache.toml" "${ONE_TENANT[@]}"
run "bare proxy, streamed" "$tmp/bare.toml" "${ONE_TENANT[@]}" --stream
run "every layer, cache missing, streamed" "$tmp/cache.toml" "${ONE_TENANT[@]}" --stream
python3 - "${results[@]}" <<'PY'
import sys
rows = [r.split("|") for r in sys.argv[1:]]
base = {"JSON": None, "streamed": None}
print(f"{'gateway config':40} {'req/s':>8} {'CPU us/req':>11} {'vs bare (CPU)':>14}")
for label, rps, cpu in rows:
    kind = label.rsplit(", ", 1)[1]
    cpu = float(cpu)
    if label.startswith("bare"):
        base[kind] = cpu
    ratio = base[kind] / cpu if base[kind] else float("nan")
    print(f"{label:40} {int(rps):>8} {cpu:>11.1f} {ratio:>14.2f}")
PY
