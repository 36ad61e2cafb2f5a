#!/usr/bin/env bash
# Instructions per request of each stack configuration in benches/stack.rs,
# counted by valgrind's callgrind: deterministic, so a change can be compared
# before and after on a noisy machine where criterion's times move by 10-40 %
# from run to run. Each configuration runs twice, with LOW and HIGH requests
# counted after the bench's warm-up; the difference divided by HIGH - LOW is
# what one request costs, start-up (tokenizer tables, runtime) cancelled out.
#
#   bash scripts/stack-instructions.sh
#   STACKS=noop,stack_cache_miss KINDS=json bash scripts/stack-instructions.sh
#   BUILD=debug WARMUP=10 LOW=20 HIGH=40 bash scripts/stack-instructions.sh   # CI: that it runs
#   BIN=/tmp/stack-before bash scripts/stack-instructions.sh   # a bench binary kept from another commit
#
# WARMUP (default 1000) is the uncounted requests before each count: the
# cache's and the pool's steady state.
#
# Prints one line per configuration and kind: instructions per request, and
# the same less the no-op inner service's (the layer's own cost).
set -euo pipefail
cd "$(dirname "$0")/.."
STACKS=${STACKS:-noop,retry,breaker,limiter,accounting,cache_miss,count,failover,all_cache_miss,all_cache_hit,stack_cache_miss}
KINDS=${KINDS:-json,sse}
LOW=${LOW:-1000}
HIGH=${HIGH:-3000}
BUILD=${BUILD:-release}
if ! command -v valgrind >/dev/null 2>&1; then
  echo "valgrind is not installed (apt-get install -y valgrind): nothing counted" >&2
  exit 1
fi
if [ -n "${BIN:-}" ]; then
  bin=$BIN out="BIN=$BIN"
elif [ "$BUILD" = release ]; then
  out=$(cargo bench --bench stack --no-run 2>&1)
else
  out=$(cargo test --bench stack --no-run 2>&1)
fi
[ -n "${BIN:-}" ] || bin=$(printf '%s\n' "$out" | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -1)
[ -x "$bin" ] || { printf '%s\n' "$out" >&2; echo "no bench binary" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
count() { # stack kind requests -> total instructions
  WARMUP=${WARMUP:-1000} ALLOCS_ONLY=1 STACKS=$1 KINDS=$2 REQUESTS=$3 \
    valgrind --tool=callgrind --callgrind-out-file="$tmp/cg" "$bin" --bench >/dev/null 2>"$tmp/log"
  sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$tmp/log" | tail -1
}
IFS=, read -ra stacks <<<"$STACKS"
IFS=, read -ra kinds <<<"$KINDS"
printf '%-8s %-18s %14s %14s\n' kind stack "instr/request" "over no-op"
for kind in "${kinds[@]}"; do
  base=""
  for stack in noop "${stacks[@]}"; do
    if [ "$stack" = noop ] && [ -n "$base" ]; then continue; fi
    lo=$(count "$stack" "$kind" "$LOW")
    hi=$(count "$stack" "$kind" "$HIGH")
    per=$(( (hi - lo) / (HIGH - LOW) ))
    if [ "$stack" = noop ]; then
      base=$per
      printf '%-8s %-18s %14d %14s\n' "$kind" "$stack" "$per" "-"
    else
      printf '%-8s %-18s %14d %14d\n' "$kind" "$stack" "$per" $(( per - base ))
    fi
  done
done
