#!/usr/bin/env bash
# Runs the README's "Virtual keys" block as written (the gateway started here,
# on a free port, in a scratch directory for its state file) and checks each
# answer.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

cargo build --quiet -p llm-tower-gateway
work=$(mktemp -d)
log="$work/gateway.log"
block="$work/block.sh"
# The block between the markers, without its fences and without the line that
# starts the gateway (started below, on a free port).
awk '/<!-- keys-demo -->/{on=1; next} /<!-- \/keys-demo -->/{on=0} on' README.md \
  | grep -v '^```' | grep -v '^cargo run -p llm-tower-gateway' >"$block"
grep -q '^cargo run -p llm-tower-gateway -- --config examples/keys.toml &$' README.md \
  || { echo "the README no longer starts the gateway as this script expects"; exit 1; }

export LLM_TOWER_ADMIN_TOKEN=admin-change-me TEAM_A_KEY=llmt-team-a-change-me
(cd "$work" && exec "$root/target/debug/llm-tower-gateway" --config "$root/examples/keys.toml" --listen 127.0.0.1:0) >"$log" 2>&1 &
gw=$!
trap 'kill "$gw" 2>/dev/null || true; rm -rf "$work"' EXIT
addr=""
for _ in $(seq 1 100); do
  addr=$(grep -o 'http://127\.0\.0\.1:[0-9]*/v1' "$log" | head -n1 | sed 's#http://##; s#/v1##' || true)
  [ -n "$addr" ] && break
  kill -0 "$gw" 2>/dev/null || { cat "$log"; echo "gateway exited early"; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { cat "$log"; echo "gateway did not start"; exit 1; }

sed -i "s#localhost:8080#$addr#g" "$block"
out=$(bash -euo pipefail "$block")
echo "$out"
python3 - "$out" <<'PY'
import json, sys
# The answers follow each other without newlines: decode them one by one.
text, dec, values, i = sys.argv[1], json.JSONDecoder(), [], 0
while i < len(text):
    if text[i].isspace():
        i += 1
        continue
    v, i = dec.raw_decode(text, i)
    values.append(v)
assert len(values) == 7, values
assert values[0] == 401, f"no key: {values[0]}"
assert values[1]["object"] == "chat.completion", values[1]
assert values[2]["object"] == "chat.completion", values[2]
svc = next(k for k in values[3]["data"] if k["name"] == "svc")
assert svc["requests_per_minute"] == 60 and svc["spend"]["spent_usd"] > 0, svc
assert "key" not in svc and "llmt-" not in json.dumps(values[3]), "a listing never holds a key"
assert values[4]["requests_per_minute"] == 120, values[4]
assert values[5] == {"name": "svc", "deleted": True}, values[5]
assert values[6] == 401, f"revoked: {values[6]}"
print("keys demo: ok")
PY
grep -q 'state: SQLite file' "$log" || { cat "$log"; echo "no state line at start"; exit 1; }
if grep -q -e 'llmt-team-a-change-me' -e 'llmt-[0-9a-f]\{48\}' "$log"; then
  echo "a key is in the gateway's log"; exit 1
fi
