#!/usr/bin/env bash
# run.sh - the main job: set up and build, start fluxiond (data in
# ./fluxion-data, CPU) on a free loopback port, define the example model
# over gRPC with the `fluxion` CLI, serve a prediction, show the daemon's
# status, and stop it with SIGTERM (a graceful drain).
#
#   scripts/run.sh [--keep]     --keep: leave the daemon running at the end
#
# Environment: FLUXION_DATA_DIR (default ./fluxion-data).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh build

KEEP=0
[ "${1:-}" = "--keep" ] && KEEP=1
DATA="${FLUXION_DATA_DIR:-fluxion-data}"
LOG="$DATA.log"
mkdir -p "$(dirname "$DATA")"

OUT=$(mktemp)
./build/fluxiond --listen 127.0.0.1:0 --data-dir "$DATA" >"$OUT" 2>"$LOG" &
PID=$!
cleanup() {
  if [ "$KEEP" = 0 ] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID"; wait "$PID" || true
  fi
  rm -f "$OUT"
}
trap cleanup EXIT

for _ in $(seq 1 100); do
  grep -q '^listening on ' "$OUT" && break
  kill -0 "$PID" 2>/dev/null || { echo "run: fluxiond exited; see $LOG" >&2; cat "$LOG" >&2; exit 1; }
  sleep 0.1
done
ADDR=$(sed -n 's/^listening on //p' "$OUT")
[ -n "$ADDR" ] || { echo "run: fluxiond did not start within 10 s; see $LOG" >&2; exit 1; }
echo "== fluxiond (pid $PID) listening on $ADDR, data in $DATA, log in $LOG"
export FLUXION_SERVER="$ADDR"

if ./build/fluxion model get mlp >/dev/null 2>&1; then
  echo "== model 'mlp' is already stored (from an earlier run): serving it again"
else
  echo "== fluxion model create examples/models/mlp.json"
  ./build/fluxion model create examples/models/mlp.json
fi
echo "== fluxion model get mlp"
./build/fluxion model get mlp
echo "== fluxion predict mlp --input examples/models/mlp-input.json"
./build/fluxion predict mlp --input examples/models/mlp-input.json
echo "== fluxion status"
./build/fluxion status
if [ "$KEEP" = 1 ]; then
  echo "== fluxiond keeps running (pid $PID): FLUXION_SERVER=$ADDR ./build/fluxion model list"
  trap - EXIT; rm -f "$OUT"
else
  echo "== stopping fluxiond (SIGTERM)"
fi
