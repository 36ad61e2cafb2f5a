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
#   MISSES=1 bash scripts/gateway-instructions.sh   # also the data-cache misses per request, simulated
#
# MISSES=1 runs callgrind's cache simulation with this machine's private
# caches (a 32 KiB L1d and a 1 MiB L2 a core, modelled as the last level):
# besides the instructions, the L1d and L2 data misses a request causes, as
# deterministic as the instruction count. They show what an instruction count
# cannot: the cost of a larger working set (each L2 miss is an L3 or memory
# access, tens to hundreds of nanoseconds), which is where most of the cache's
# time goes on this machine (docs/ARCHITECTURE.md, "What one request costs").
#
# Each configuration runs twice under callgrind (the mock and the load on
# core 0 at full speed, the gateway on core 1), each time warmed by
# WARMUP_REQUESTS (default 500) and then sent LOW (1,000) or HIGH (3,000)
# requests; the difference of the two totals over HIGH - LOW is one request's
# cost, start-up and warm-up cancelled out. User space only: the kernel's
# socket work (about a third of the gateway's CPU time in stack-cost.sh, and
# about the same in every configuration) is not counted, so these ratios
# show the layers' share of the gateway's own code, a bound on what they cost.
#
# Not counted either: the calibration of quanta's clock (the Prometheus
# recorder's, once at start-up). It loops until the clock reads steadily, so
# under valgrind it takes 10 to 20 million instructions, a different number
# each run: left in, it moved a run's per-request count by up to 4,800
# instructions (4 % of the bare proxy's) between the two counts subtracted.
# It is found by its name, quanta::Clock::new; a profile without it stops the
# run with an error rather than count the noise back in unannounced.
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
exec valgrind --tool=callgrind ${MISSES:+--cache-sim=yes --D1=32768,8,64 --LL=1048576,8,64} --callgrind-out-file="$tmp/cg.out" --log-file="$tmp/cg.log" "$PWD/$BIN/llm-tower-gateway" "\$@"
SH
chmod +x "$tmp/gw"
count() { # config-file requests load-args... -> total instructions of the gateway (with MISSES: and its L1d and L2 data misses)
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
  # Collected: Ir, and with the simulation Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw,
  # less what quanta's clock calibration cost (below).
  python3 - "$tmp/cg.log" <(callgrind_annotate --inclusive=yes --threshold=100 "$tmp/cg.out") <<'PY'
import re, sys
total = [int(n) for n in open(sys.argv[1]).read().rsplit("Collected :", 1)[1].split("\n")[0].split()]
calib = None
for line in open(sys.argv[2]):
    if "quanta::Clock::new " in line:
        cols = re.findall(r"([\d,]+) \(|(?<!\S)\.(?!\S)", re.split(r"\s\S*:quanta::", line)[0])
        calib = [int(c.replace(",", "")) if c else 0 for c in cols][: len(total)]
        break
if calib is None:
    # Counted anyway, the calibration would be the noise described above,
    # without a word: a renamed function (a later quanta) stops the run.
    sys.exit("quanta::Clock::new is not in the profile: its clock calibration cannot be left out (renamed in a later quanta?)")
t = [a - b for a, b in zip(total, calib + [0] * len(total))]
print(*([t[0], t[4] + t[5], t[7] + t[8]] if len(t) >= 9 else [t[0]]))
PY
}
IFS=, read -ra configs <<<"$CONFIGS"
IFS=, read -ra kinds <<<"$KINDS"
if [ -n "${MISSES:-}" ]; then
  printf '%-6s %-8s %14s %10s %12s %12s\n' kind config "instr/request" "vs bare" "L1d misses" "L2 misses"
else
  printf '%-6s %-8s %14s %10s\n' kind config "instr/request" "vs bare"
fi
for kind in "${kinds[@]}"; do
  args=("${ONE_TENANT[@]}")
  [ "$kind" = sse ] && args+=(--stream --max-tokens 4)
  base=""
  for config in "${configs[@]}"; do
    read -ra lo < <(count "$tmp/$config.toml" "$LOW" "${args[@]}")
    read -ra hi < <(count "$tmp/$config.toml" "$HIGH" "${args[@]}")
    per=$(( (hi[0] - lo[0]) / (HIGH - LOW) ))
    [ -z "$base" ] && base=$per
    ratio=$(awk -v b="$base" -v p="$per" 'BEGIN { printf "%.2f", b / p }')
    if [ -n "${MISSES:-}" ]; then
      l1=$(awk -v a="${lo[1]}" -v b="${hi[1]}" -v n=$((HIGH - LOW)) 'BEGIN { printf "%.0f", (b - a) / n }')
      l2=$(awk -v a="${lo[2]}" -v b="${hi[2]}" -v n=$((HIGH - LOW)) 'BEGIN { printf "%.0f", (b - a) / n }')
      printf '%-6s %-8s %14d %10s %12s %12s\n' "$kind" "$config" "$per" "$ratio" "$l1" "$l2"
    else
      printf '%-6s %-8s %14d %10s\n' "$kind" "$config" "$per" "$ratio"
    fi
  done
done
