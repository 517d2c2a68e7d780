#!/usr/bin/env bash
# run.sh - the main job: set up and build, start fluxiond (data in
# ./fluxion-data, CPU) on a free loopback port, and with the `fluxion` CLI
# over gRPC: define a model, upload a dataset, train the model remotely
# (watching the job live), serve predictions of the trained version, show
# the daemon's status, and stop it with SIGTERM (a graceful drain).
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

# A model and a dataset (kept in the data directory across runs).
if ./build/fluxion model get blobs-mlp >/dev/null 2>&1; then
  echo "== model 'blobs-mlp' is already stored (from an earlier run)"
else
  echo "== fluxion model create examples/jobs/mlp-blobs-model.json"
  ./build/fluxion model create examples/jobs/mlp-blobs-model.json
fi
if ./build/fluxion dataset get blobs >/dev/null 2>&1; then
  echo "== dataset 'blobs' is already stored (from an earlier run)"
else
  BLOBS=$(mktemp --suffix=.safetensors)
  /usr/bin/python3 examples/jobs/make_blobs.py "$BLOBS" --samples 4000
  echo "== fluxion dataset upload blobs (4000 samples of 4 Gaussian blobs)"
  ./build/fluxion dataset upload blobs "$BLOBS" --description "4 Gaussian blobs, 2 features"
  rm -f "$BLOBS"
fi

# Train it remotely, watching the job live; the result becomes a new model
# version, served at once (the job file asks for it).
echo "== fluxion train submit examples/jobs/mlp-blobs.json --watch"
./build/fluxion train submit examples/jobs/mlp-blobs.json --watch

# Predictions of the trained version: one point at each blob's centre, so
# the largest logit of row k should be class k.
echo "== fluxion predict blobs-mlp --input examples/jobs/blobs-input.json"
./build/fluxion predict blobs-mlp --input examples/jobs/blobs-input.json
echo "== fluxion status"
./build/fluxion status
if [ "$KEEP" = 1 ]; then
  echo "== fluxiond keeps running (pid $PID): FLUXION_SERVER=$ADDR ./build/fluxion model list"
  trap - EXIT; rm -f "$OUT"
else
  echo "== stopping fluxiond (SIGTERM)"
fi
