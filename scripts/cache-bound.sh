#!/usr/bin/env bash
# Whether the cache's memory bound is real: the same load of unique,
# cacheable requests (~600-byte answers) through the gateway without a cache
# and with `[cache] max_mb = MB`, comparing the gateway's peak RSS. The
# gateway runs pinned to core 1, the mock and the load on core 0.
#
#   bash scripts/cache-bound.sh [REQUESTS] [MB]
source "$(dirname "$0")/gateway-load-common.sh"
REQUESTS=${1:-300000}
MB=${2:-64}
provider_toml >"$tmp/plain.toml"
{ provider_toml; printf '[cache]\nstrategy = "conservative"\nmax_mb = %s\n' "$MB"; } >"$tmp/cache.toml"
read -r _ base_rss _ < <(run_gateway "$tmp/plain.toml" --requests "$REQUESTS")
STATS_OUT="$tmp/stats.json"
read -r _ cache_rss _ < <(run_gateway "$tmp/cache.toml" --requests "$REQUESTS")
python3 - "$base_rss" "$cache_rss" "$MB" "$REQUESTS" "$tmp/stats.json" <<'PY'
import json, sys
base, cache, mb, n = (int(x) for x in sys.argv[1:5])
c = json.load(open(sys.argv[5]))["cache"]
limit = base / 1024 + mb * 1.3
print(f"{n} unique answers; no cache: peak RSS {base/1024:.0f} MiB; cache max_mb={mb}: peak RSS {cache/1024:.0f} MiB")
print(f"cache: {c['entries']} entries, {c['bytes']/2**20:.1f} MiB weighed, {c['evictions']} evictions")
print(f"RSS over the no-cache baseline: {(cache-base)/1024:.0f} MiB (target: under {mb} MiB + 30 %, i.e. RSS < {limit:.0f} MiB)")
PY
