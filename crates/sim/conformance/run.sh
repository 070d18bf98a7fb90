#!/usr/bin/env bash
# Conformance suite: drives `BIN sim` with the official, unmodified Python SDKs.
#
#   crates/sim/conformance/run.sh target/debug/sluice
#
# Virtual environments live under target/sdk-venv-* (override with SDK_VENV_DIR) and are reused
# when the pinned versions are already installed. Exits non-zero on any failure; always stops the
# sim it started.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 PATH/TO/sluice" >&2
    exit 2
fi
BIN=$(realpath "$1")
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
VENVS=${SDK_VENV_DIR:-$ROOT/target}
PYTHON=${PYTHON:-python3}

# venv NAME PACKAGE==VERSION...: create or reuse target/sdk-venv-NAME with exactly these pins.
venv() {
    local dir="$VENVS/sdk-venv-$1"
    shift
    local want
    want=$(printf '%s\n' "$@" | sort)
    if [ -x "$dir/bin/python" ] && [ -f "$dir/.pins" ] && [ "$(cat "$dir/.pins")" = "$want" ] \
        && "$dir/bin/python" -m pip check >/dev/null 2>&1; then
        echo "$dir"
        return
    fi
    rm -rf "$dir"
    "$PYTHON" -m venv "$dir" >&2
    "$dir/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "$@" >&2
    echo "$want" >"$dir/.pins"
    echo "$dir"
}

echo "conformance: preparing SDK virtualenvs under $VENVS" >&2
V2=$(venv a2 anthropic==2.13.0 openai==3.57.0 pytest==8.4.2)
V0=$(venv a0 anthropic==0.125.0 pytest==8.4.2)

WORK=$(mktemp -d)
SIM_PID=""
cleanup() {
    if [ -n "$SIM_PID" ] && kill -0 "$SIM_PID" 2>/dev/null; then
        kill -TERM "$SIM_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$SIM_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SIM_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

"$BIN" sim --port 0 --config "$HERE/sim.toml" --seed 7 >"$WORK/out" 2>"$WORK/err" &
SIM_PID=$!
BASE=""
for _ in $(seq 1 300); do
    if [ -s "$WORK/out" ]; then
        BASE=$(head -n 1 "$WORK/out" | sed -n 's#^sluice sim listening on \(http://[^ ]*\)$#\1#p')
        [ -n "$BASE" ] && break
    fi
    if ! kill -0 "$SIM_PID" 2>/dev/null; then
        echo "conformance: the sim exited early:" >&2
        cat "$WORK/err" >&2
        exit 1
    fi
    sleep 0.1
done
if [ -z "$BASE" ]; then
    echo "conformance: no 'sluice sim listening on ...' line within 30 s" >&2
    exit 1
fi
echo "conformance: sim at $BASE" >&2

export SIM_BASE_URL="$BASE"
export ANTHROPIC_BASE_URL="$BASE"
export OPENAI_BASE_URL="$BASE/v1"
export ANTHROPIC_API_KEY="sk-ant-conformance"
export OPENAI_API_KEY="sk-conformance"
export PYTHONDONTWRITEBYTECODE=1

status=0
cd "$HERE"
echo "conformance: anthropic 2.13.0 + openai 3.57.0" >&2
"$V2/bin/python" -m pytest -q -p no:cacheprovider test_anthropic.py test_openai.py test_charges.py || status=1
echo "conformance: anthropic 0.125.0" >&2
"$V0/bin/python" -m pytest -q -p no:cacheprovider test_anthropic.py || status=1
exit $status
