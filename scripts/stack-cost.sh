#!/usr/bin/env bash
# What the layers cost in the gateway: the same closed-loop load through a bare
# proxy (retry and breaker off, no limits, no cache) and through every layer
# (tenant limits and budgets, accounting, preflight, provider limits, retry,
# breaker), without and with the cache (all misses), JSON and streamed (16
# content chunks, the load's default max_tokens, and 4 as issue 12 measured). The
# gateway runs pinned to core 1, the mock and the load on core 0 (taskset),
# release build, loopback only.
#
#   ROUNDS=3 bash scripts/stack-cost.sh [REQUESTS]
#
# Prints req/s and the gateway's CPU time per request for each (its best of
# ROUNDS interleaved rounds), and each one's throughput relative to the bare
# proxy (by CPU per request: the steadier of the two on a shared machine).
source "$(dirname "$0")/gateway-load-common.sh"
REQUESTS=${1:-100000}
bare_toml >"$tmp/bare.toml"
limited_toml >"$tmp/layers.toml"
cache_toml >"$tmp/cache.toml"
results=()
run() { # label config load-args...
  local label=$1 cfg=$2; shift 2
  read -r rps _ cpu < <(run_gateway "$cfg" --requests "$REQUESTS" "$@")
  results+=("$label|$rps|$cpu")
}
# ROUNDS rounds, each running every configuration once in turn: a machine
# whose speed drifts (a shared VM) moves all of a round together, and each
# configuration's best round is the one least disturbed.
for _ in $(seq 1 "${ROUNDS:-3}"); do
  run "bare proxy, JSON" "$tmp/bare.toml" "${ONE_TENANT[@]}"
  run "every layer but the cache, JSON" "$tmp/layers.toml" "${ONE_TENANT[@]}"
  run "every layer, cache missing, JSON" "$tmp/cache.toml" "${ONE_TENANT[@]}"
  run "bare proxy, streamed" "$tmp/bare.toml" "${ONE_TENANT[@]}" --stream
  run "every layer, cache missing, streamed" "$tmp/cache.toml" "${ONE_TENANT[@]}" --stream
  # Issue 12's streams: 4 content chunks (max_tokens 4).
  run "bare proxy, streamed 4" "$tmp/bare.toml" "${ONE_TENANT[@]}" --stream --max-tokens 4
  run "every layer, cache missing, streamed 4" "$tmp/cache.toml" "${ONE_TENANT[@]}" --stream --max-tokens 4
done
python3 - "${results[@]}" <<'PY'
import sys
best = {}  # label -> (cpu, rps) of its best round (least CPU per request)
order = []
for r in sys.argv[1:]:
    label, rps, cpu = r.split("|")
    if label not in best:
        order.append(label)
    cpu, rps = float(cpu), int(rps)
    if label not in best or cpu < best[label][0]:
        best[label] = (cpu, rps)
base = {}
print(f"{'gateway config (best of the rounds)':42} {'req/s':>8} {'CPU us/req':>11} {'vs bare (CPU)':>14}")
for label in order:
    cpu, rps = best[label]
    kind = label.rsplit(", ", 1)[1]
    if label.startswith("bare"):
        base[kind] = cpu
    ratio = base[kind] / cpu if kind in base else float("nan")
    print(f"{label:42} {rps:>8} {cpu:>11.1f} {ratio:>14.2f}")
PY
