#!/usr/bin/env bash
# The gateway's own instructions per request, counted by valgrind's callgrind,
# for the configurations stack-cost.sh times: bare proxy, every layer but the
# cache, every layer with the cache missing, JSON and streamed (4 content
# chunks). On a shared VM whose speed moves by a fifth between runs a minute
# apart, a CPU-time ratio cannot tell 0.85 from 0.95; an instruction count
# repeats to a fraction of a percent.
#
#   bash scripts/gateway-instructions.sh
#   CONFIGS=bare,cache KINDS=json LOW=500 HIGH=1500 bash scripts/gateway-instructions.sh
#   BUILD=debug WARMUP_REQUESTS=20 LOW=10 HIGH=30 bash scripts/gateway-instructions.sh   # CI: that it runs
#   KEEP=/tmp/cg bash scripts/gateway-instructions.sh   # keeps each run's callgrind file (KIND-CONFIG-REQUESTS.out) for callgrind_annotate
#
# Each configuration runs twice under callgrind (the mock and the load on
# core 0 at full speed, the gateway on core 1), each time warmed by
# WARMUP_REQUESTS (default 500) and then sent LOW (1,000) or HIGH (3,000)
# requests; the difference of the two totals over HIGH - LOW is one request's
# cost, start-up and warm-up cancelled out. User space only: the kernel's
# socket work (about a third of the gateway's CPU time in stack-cost.sh, and
# about the same in every configuration) is not counted, so these ratios
# show the layers' share of the gateway's own code, a bound on what they cost.
source "$(dirname "$0")/gateway-load-common.sh"
if ! command -v valgrind >/dev/null 2>&1; then
  echo "valgrind is not installed (apt-get install -y valgrind): nothing counted" >&2
  exit 1
fi
CONFIGS=${CONFIGS:-bare,layers,cache}
KINDS=${KINDS:-json,sse}
LOW=${LOW:-1000}
HIGH=${HIGH:-3000}
export WARMUP_REQUESTS=${WARMUP_REQUESTS:-500}
# Start-up under valgrind takes seconds, not milliseconds.
export WAIT_TRIES=${WAIT_TRIES:-1200}
bare_toml >"$tmp/bare.toml"
limited_toml >"$tmp/layers.toml"
cache_toml >"$tmp/cache.toml"
# The gateway under callgrind: valgrind runs it in its own process, so the
# pid start_gateway keeps is the gateway's, and SIGTERM ends it gracefully
# (its output file is written at exit).
cat >"$tmp/gw" <<SH
#!/usr/bin/env bash
exec valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.out" --log-file="$tmp/cg.log" "$PWD/$BIN/llm-tower-gateway" "\$@"
SH
chmod +x "$tmp/gw"
count() { # config-file requests load-args... -> total instructions of the gateway
  local cfg=$1 n=$2; shift 2
  rm -f "$tmp/cg.out" "$tmp/cg.log"
  GATEWAY="$tmp/gw" start_gateway "$cfg"
  load --requests "$n" "$@" --json "$tmp/load.json" >/dev/null 2>&1
  stop_gateway
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$tmp/cg.out" "$KEEP/$kind-$(basename "$cfg" .toml)-$n.out"; fi
  python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))["runs"][0]["summary"]
assert s["requests"] == s["successes"] == int(sys.argv[2]), s' "$tmp/load.json" "$n" >&2
  sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$tmp/cg.log" | tail -1
}
IFS=, read -ra configs <<<"$CONFIGS"
IFS=, read -ra kinds <<<"$KINDS"
printf '%-6s %-8s %14s %10s\n' kind config "instr/request" "vs bare"
for kind in "${kinds[@]}"; do
  args=("${ONE_TENANT[@]}")
  [ "$kind" = sse ] && args+=(--stream --max-tokens 4)
  base=""
  for config in "${configs[@]}"; do
    lo=$(count "$tmp/$config.toml" "$LOW" "${args[@]}")
    hi=$(count "$tmp/$config.toml" "$HIGH" "${args[@]}")
    per=$(( (hi - lo) / (HIGH - LOW) ))
    [ -z "$base" ] && base=$per
    ratio=$(awk -v b="$base" -v p="$per" 'BEGIN { printf "%.2f", b / p }')
    printf '%-6s %-8s %14d %10s\n' "$kind" "$config" "$per" "$ratio"
  done
done
