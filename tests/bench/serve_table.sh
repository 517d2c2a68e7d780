#!/usr/bin/env bash
# serve_table.sh - the serving benchmark of the README: starts fluxiond,
# creates the reference `mlp` (784-512-256-10, the MLP of fluxion_bench.c)
# and a tiny model (4 -> 2), and drives them with `fluxion-bench serve` at
# concurrency 1, 8, 64 and 256, batching on and off. Prints a markdown table.
#
#     bash tests/bench/serve_table.sh [BUILD_DIR]        (default: build)
#
# Environment: DURATION (s per run, default 5), WARMUP (s, default 1),
# MAX_BATCH (default 64), DELAY_US (max_queue_delay_us, default 200),
# INSTANCES (execution instances, default 1; the same with batching off),
# CONCURRENCY (list, default "1 8 64 256"), FLUXIOND_ARGS (extra daemon
# flags, default "--threads 1": one engine thread per batch leaves the other
# core to gRPC; OpenMP teams spin while waiting, which costs a shared CPU).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../../build}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
MAX_BATCH=${MAX_BATCH:-64}
DELAY_US=${DELAY_US:-200}
INSTANCES=${INSTANCES:-1}
CONCURRENCY=${CONCURRENCY:-1 8 64 256}
FLUXIOND_ARGS=${FLUXIOND_ARGS---threads 1}
for b in fluxiond fluxion fluxion-bench; do
    [ -x "$build/$b" ] || { echo "serve_table.sh: no $build/$b (build first)" >&2; exit 2; }
done

work=$(mktemp -d)
daemon=
cleanup() {
    [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# shellcheck disable=SC2086
"$build/fluxiond" --listen 127.0.0.1:0 --data-dir "$work/data" --log-level warn $FLUXIOND_ARGS \
    >"$work/out" 2>"$work/log" &
daemon=$!
for _ in $(seq 100); do
    grep -q '^listening on ' "$work/out" 2>/dev/null && break
    sleep 0.1
done
addr=$(sed -n 's/^listening on //p' "$work/out")
[ -n "$addr" ] || { echo "serve_table.sh: fluxiond did not start:" >&2; cat "$work/log" >&2; exit 1; }
cli() { "$build/fluxion" --server "$addr" "$@"; }

cat >"$work/mlp.json" <<'EOF'
{"name": "mlp", "seed": 1, "spec": {
  "inputs": [{"name": "x", "dtype": "FP32", "shape": [-1, 784]}],
  "nodes": [
    {"name": "fc1", "op": "dense", "inputs": ["x"],
     "attrs": {"in_features": 784, "out_features": 512, "activation": "relu"}},
    {"name": "fc2", "op": "dense", "inputs": ["fc1"],
     "attrs": {"in_features": 512, "out_features": 256, "activation": "relu"}},
    {"name": "fc3", "op": "dense", "inputs": ["fc2"],
     "attrs": {"in_features": 256, "out_features": 10}}],
  "outputs": [{"name": "logits", "source": "fc3"}]}}
EOF
cat >"$work/tiny.json" <<'EOF'
{"name": "tiny", "seed": 1, "spec": {
  "inputs": [{"name": "x", "dtype": "FP32", "shape": [-1, 4]}],
  "nodes": [{"name": "fc", "op": "dense", "inputs": ["x"],
             "attrs": {"in_features": 4, "out_features": 2}}],
  "outputs": [{"name": "y", "source": "fc"}]}}
EOF
cli model create "$work/mlp.json" >/dev/null
cli model create "$work/tiny.json" >/dev/null

# run MODEL BATCHING CONCURRENCY -> a table row
run() {
    cli model config "$1" --batching "$2" --max-batch-size "$MAX_BATCH" \
        --max-queue-delay-us "$DELAY_US" --instances "$INSTANCES" >/dev/null
    local line
    line=$("$build/fluxion-bench" serve --server "$addr" --model "$1" --concurrency "$3" \
           --duration "$DURATION" --warmup "$WARMUP" --raw)
    python3 - "$1" "$2" "$line" <<'EOF'
import json, sys
model, batching, r = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
errors = ", ".join("%s %d" % kv for kv in r["errors"].items()) or "-"
print("| %s | %d | %s | %.0f | %d | %d | %d | %d | %s |" % (
    model, r["concurrency"], batching, r["requests_per_s"], r["p50_us"], r["p90_us"],
    r["p99_us"], r["p999_us"], errors))
EOF
}

echo "fluxion-bench serve, ${DURATION} s per run after ${WARMUP} s warmup, raw tensors;" \
     "batching on: max_batch_size $MAX_BATCH, max_queue_delay_us $DELAY_US; instances $INSTANCES;" \
     "fluxiond $FLUXIOND_ARGS;" \
     "$(nproc) CPUs shared by client and server"
echo
echo "| model | concurrency | batching | requests/s | p50 us | p90 us | p99 us | p99.9 us | errors |"
echo "|---|---:|---|---:|---:|---:|---:|---:|---|"
for c in $CONCURRENCY; do
    for b in on off; do
        run mlp "$b" "$c"
    done
done
# the tiny model: per-request overhead (concurrency 1) and the ceiling of the
# RPC path when compute is next to nothing (concurrency 64)
for c in 1 64; do
    for b in on off; do
        run tiny "$b" "$c"
    done
done
