#!/usr/bin/env bash
# Runs the official OpenAI Python SDK against the gateway serving an
# Anthropic-dialect and a Gemini-dialect provider, and the official Anthropic
# Python SDK against it for a model of an OpenAI-dialect provider, all the
# project's mock (llm-tower-mock, which speaks every dialect) on loopback:
# plain, streamed and tool-calling answers in each client's own shape.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/sdk-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -c "import openai, anthropic" 2>/dev/null \
  || "$venv/bin/pip" install --quiet --disable-pip-version-check openai anthropic

cargo build --quiet -p llm-tower-gateway -p llm-tower-mock --bins
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

mock_port=$(port)
target/debug/llm-tower-mock --port "$mock_port" >"$tmp/mock.log" 2>&1 &
cat >"$tmp/gateway.toml" <<TOML
[[providers]]
name = "claude"
kind = "anthropic"
base_url = "http://127.0.0.1:$mock_port/v1"
api_key = "ant-unused"
models = ["claude-3-5-haiku-latest"]

[[providers]]
name = "openai"
kind = "openai"
base_url = "http://127.0.0.1:$mock_port/v1"
api_key = "sk-unused"
models = ["gpt-4o-mini"]

[[providers]]
name = "gemini"
kind = "gemini"
base_url = "http://127.0.0.1:$mock_port/v1beta"
api_key = "g-unused"
models = ["gemini-2.0-flash"]
TOML
target/debug/llm-tower-gateway --config "$tmp/gateway.toml" --listen 127.0.0.1:0 >"$tmp/gw.log" 2>&1 &
gw=$!

url=""
for _ in $(seq 1 100); do
  url=$(grep -o 'http://127\.0\.0\.1:[0-9]*/v1' "$tmp/gw.log" | head -n1 || true)
  [ -n "$url" ] && break
  kill -0 "$gw" 2>/dev/null || { cat "$tmp/gw.log"; echo "gateway exited early"; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { cat "$tmp/gw.log"; echo "gateway did not start"; exit 1; }

"$venv/bin/python" tests/sdk/dialects_sdk.py "$url"
"$venv/bin/python" tests/sdk/anthropic_sdk.py "${url%/v1}"
