#!/usr/bin/env bash
# Runs the official OpenAI Python SDK against the gateway on its embedded
# default config (offline: in-process mock provider).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/sdk-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -c "import openai" 2>/dev/null || "$venv/bin/pip" install --quiet --disable-pip-version-check openai

cargo build --quiet -p llm-tower-gateway
log=$(mktemp)
target/debug/llm-tower-gateway --listen 127.0.0.1:0 >"$log" 2>&1 &
gw=$!
trap 'kill "$gw" 2>/dev/null || true; rm -f "$log"' EXIT

url=""
for _ in $(seq 1 100); do
  url=$(grep -o 'http://127\.0\.0\.1:[0-9]*/v1' "$log" | head -n1 || true)
  [ -n "$url" ] && break
  kill -0 "$gw" 2>/dev/null || { cat "$log"; echo "gateway exited early"; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { cat "$log"; echo "gateway did not start"; exit 1; }

"$venv/bin/python" tests/sdk/openai_sdk.py "$url"

# The README's observability commands, against the same gateway after the SDK's requests.
base=${url%/v1}
curl -s "$base/metrics" | grep -q '^llm_tower_requests_total{' || { echo "/metrics has no request counts"; exit 1; }
ready=$(curl -s -o /dev/null -w '%{http_code}\n' "$base/health/ready")
[ "$ready" = 200 ] || { echo "/health/ready answered $ready"; exit 1; }
echo "metrics and readiness: ok"
