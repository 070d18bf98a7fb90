#!/usr/bin/env bash
# The LiteLLM proxy in front of a running sluice sim, measured as the yardstick beside sluice's
# stream path. Run by `cargo bench -p sluice --bench stream_latency` with the sim it started:
#
#   bash crates/sluice/benches/litellm_yardstick.sh SIM_URL RATE...
#
# Creates (once) a venv under target/litellm-venv with LiteLLM's proxy pinned below, starts the
# proxy on 127.0.0.1 with one model routed to the sim's Anthropic API, and runs
# litellm_yardstick.py, which prints a markdown table on stdout. Everything else goes to stderr.
set -euo pipefail

# 1.106.12: the newest LiteLLM found whose `[proxy]` extra installs from PyPI here (those of
# 1.110.2 and 1.108.14 pin `litellm-proxy` / `litellm-proxy-extras` releases it does not serve).
LITELLM_VERSION="${LITELLM_VERSION:-1.106.12}"
# Two workers, as sluice gets two runtime threads: both use the whole (2-core) machine.
LITELLM_WORKERS="${LITELLM_WORKERS:-2}"

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
venv="$root/target/litellm-venv"
sim="${1:?usage: litellm_yardstick.sh SIM_URL RATE...}"
shift

if [[ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))' 2>/dev/null || true)" != "$LITELLM_VERSION" ]]; then
  echo "installing litellm[proxy]==$LITELLM_VERSION into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "litellm[proxy]==$LITELLM_VERSION" >&2
fi

work="$(mktemp -d)"
port="$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cat >"$work/config.yaml" <<EOF
model_list:
  - model_name: bench-claude
    litellm_params:
      model: anthropic/claude-haiku-5-5
      api_base: $sim
      api_key: sk-bench
litellm_settings:
  telemetry: false
  drop_params: true
general_settings:
  disable_spend_logs: true
EOF

# No network but loopback: use the cost map shipped in the package, send no telemetry.
export LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_TELEMETRY=False LITELLM_LOG=ERROR
# The proxy refuses to start without a master key; calls authenticate with it, as in production.
LITELLM_MASTER_KEY="sk-bench-$("$venv/bin/python" -c 'import secrets; print(secrets.token_hex(24))')"
export LITELLM_MASTER_KEY
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
"$venv/bin/litellm" --config "$work/config.yaml" --host 127.0.0.1 --port "$port" \
  --num_workers "$LITELLM_WORKERS" >"$work/proxy.log" 2>&1 &
proxy_pid=$!
cleanup() {
  kill "$proxy_pid" 2>/dev/null || true
  wait "$proxy_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

proxy="http://127.0.0.1:$port"
# Up to 180 s for the proxy to come up (importing it takes a minute on this machine).
for _ in $(seq 1 360); do
  if "$venv/bin/python" -c "import urllib.request, sys; urllib.request.urlopen('$proxy/health/liveliness', timeout=1)" 2>/dev/null; then
    break
  fi
  if ! kill -0 "$proxy_pid" 2>/dev/null; then
    echo "the LiteLLM proxy exited; its log:" >&2
    cat "$work/proxy.log" >&2
    exit 1
  fi
  sleep 0.5
done
echo "LiteLLM $LITELLM_VERSION proxy on $proxy ($LITELLM_WORKERS workers) in front of $sim" >&2

"$venv/bin/python" "$here/litellm_yardstick.py" "$sim" "$proxy" "$@"
echo "" 
echo "LiteLLM $LITELLM_VERSION (\`litellm[proxy]\` from PyPI), $LITELLM_WORKERS workers, no database, one model routed to the sim's Anthropic API."
