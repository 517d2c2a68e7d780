#!/usr/bin/env bash
# serve_table.sh - the serving benchmark of the README: starts fluxiond,
# creates the reference `mlp` (784-512-256-10, the MLP of fluxion_bench.c),
# a tiny model (4 -> 2) and a compute-free `ceiling` model (the mlp's
# interface, 784 floats in and 10 out, but its forward is one slice: the
# RPC path's ceiling), and drives them with `fluxion-bench serve` at
# concurrency 1, 8, 64 and 256, batching on and off. When the benchmark
# venv (tests/bench/venv.sh) has nvidia-pytriton, it also starts NVIDIA
# Triton (the wheel's tritonserver, Python backend: tests/bench/triton_model.py
# runs the same mlp with the same weights in torch under no_grad, dynamic
# batching with the same max_batch_size and max_queue_delay, KIND_CPU count
# 1) and drives it with the same load generator. Prints the full table and
# the rows of issue 17's targets, medians of REPS rounds (each round runs
# every fluxiond row, then every Triton row: A B A B ...). Each row also
# has the CPU time per request of the daemon (/proc) and of the load
# generator (its JSON line), and the targets' ratios are printed a second
# time from those: on a machine that other work loads, the rates follow the
# share of the cores each process gets, the CPU time per request much less.
#
#     bash tests/bench/serve_table.sh [BUILD_DIR]        (default: build)
#
# Environment: DURATION (s per run, default 5), WARMUP (s, default 1),
# REPS (rounds, default 3), MAX_BATCH (default 64), DELAY_US
# (max_queue_delay_us, default 200), INSTANCES (execution instances,
# default 1; the same with batching off), CONCURRENCY (list, default
# "1 8 64 256"), TRITON (0: skip Triton), FLUXIOND_ARGS (extra daemon
# flags, default "--threads 1": one engine thread per batch leaves the
# other core to gRPC), TRITON_PORT (default 18001; the HTTP port is the one
# below it), BENCH_VENV / PYTHON, IDLE_WAIT / LOAD_MAX (lib.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
build=${1:-$BENCH_ROOT/build}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
REPS=${REPS:-3}
MAX_BATCH=${MAX_BATCH:-64}
DELAY_US=${DELAY_US:-200}
INSTANCES=${INSTANCES:-1}
CONCURRENCY=${CONCURRENCY:-1 8 64 256}
FLUXIOND_ARGS=${FLUXIOND_ARGS---threads 1}
TRITON=${TRITON:-1}
TRITON_PORT=${TRITON_PORT:-18001}
for b in fluxiond fluxion fluxion-bench; do
    [ -x "$build/$b" ] || { echo "serve_table.sh: no $build/$b (build first)" >&2; exit 2; }
done

work=$(mktemp -d)
daemon=
triton=
stop_triton() {
    if [ -n "$triton" ]; then
        kill "$triton" 2>/dev/null && wait "$triton" 2>/dev/null
        triton=
    fi
    return 0
}
cleanup() {
    stop_triton
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
# the mlp's wire format (784 floats in, 10 out) with no arithmetic
cat >"$work/ceiling.json" <<'EOF'
{"name": "ceiling", "seed": 1, "spec": {
  "inputs": [{"name": "x", "dtype": "FP32", "shape": [-1, 784]}],
  "nodes": [{"name": "head", "op": "slice", "inputs": ["x"],
             "attrs": {"axis": 1, "start": 0, "end": 10}}],
  "outputs": [{"name": "logits", "source": "head"}]}}
EOF
for m in mlp tiny ceiling; do
    cli model create "$work/$m.json" >/dev/null
done
cli model export mlp -o "$work/mlp.safetensors" >/dev/null

raw=$work/raw
: >"$raw"
# daemon_ticks SERVER: fluxiond's CPU time so far (user + system, clock
# ticks), "-" for another server or without /proc
daemon_ticks() {
    if [ "$1" = fluxiond ] && [ -r "/proc/$daemon/stat" ]; then
        awk '{ print $14 + $15 }' "/proc/$daemon/stat"
    else
        echo -
    fi
}
# run SERVER ADDR MODEL BATCHING CONCURRENCY: one fluxion-bench serve run,
# its JSON line tagged "SERVER MODEL BATCHING" in $raw
run() {
    if [ "$1" = fluxiond ]; then
        cli model config "$3" --batching "$4" --max-batch-size "$MAX_BATCH" \
            --max-queue-delay-us "$DELAY_US" --instances "$INSTANCES" >/dev/null
    fi
    bench_wait_idle serve_table.sh
    local line t0 t1
    t0=$(daemon_ticks "$1")
    if line=$("$build/fluxion-bench" serve --server "$2" --model "$3" --concurrency "$5" \
              --duration "$DURATION" --warmup "$WARMUP" --raw); then
        t1=$(daemon_ticks "$1")
        echo "$1 $3 $4 $([ "$t0" = - ] || [ "$t1" = - ] && echo - || echo $((t1 - t0))) $line" |
            tee -a "$raw" >&2
    else
        echo "serve_table.sh: $1 $3 batching $4 c=$5 failed" >&2
    fi
}

# Triton from the benchmark venv: the wheel's server, its Python backend
# with the stub for the venv's Python, a model repository with the mlp.
triton_note=""
triton_setup() {
    local py site libdir ver ts
    [ "$TRITON" != 0 ] || { triton_note="Triton skipped (TRITON=0)"; return 1; }
    py=$(bench_python)
    if [ -z "$py" ] || ! "$py" -c "import pytriton, torch" 2>/dev/null; then
        triton_note="Triton skipped: no nvidia-pytriton and torch in the benchmark venv (tests/bench/venv.sh)"
        return 1
    fi
    site=$("$py" -c 'import os, pytriton; print(os.path.dirname(os.path.dirname(pytriton.__file__)))')
    ver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    libdir=$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR") or "")')
    ts=$site/pytriton/tritonserver
    if [ ! -x "$ts/bin/tritonserver" ] || [ ! -f "$ts/python_backend_stubs/$ver/triton_python_backend_stub" ]; then
        triton_note="Triton skipped: no tritonserver or Python $ver stub in $ts"
        return 1
    fi
    mkdir -p "$work/triton/repo/mlp/1"
    cp -r "$ts/backends" "$work/triton/backends"
    cp "$ts/python_backend_stubs/$ver/triton_python_backend_stub" "$work/triton/backends/python/"
    sed -e "s|@SITE_PACKAGES@|$site|" -e "s|@WEIGHTS@|$work/mlp.safetensors|" \
        "$here/triton_model.py" >"$work/triton/repo/mlp/1/model.py"
    cat >"$work/triton/repo/mlp/config.pbtxt" <<EOF
name: "mlp"
backend: "python"
max_batch_size: $MAX_BATCH
input [ { name: "x", data_type: TYPE_FP32, dims: [ 784 ] } ]
output [ { name: "logits", data_type: TYPE_FP32, dims: [ 10 ] } ]
dynamic_batching { max_queue_delay_microseconds: $DELAY_US }
instance_group [ { kind: KIND_CPU, count: 1 } ]
EOF
    # The stub embeds a libpython3.x: the venv interpreter's must come first
    # (Debian's fails with "'_thread.RLock' object has no attribute
    # '_recursion_count'" under a pyenv venv).
    TRITON_ENV=(env "LD_LIBRARY_PATH=$libdir:$site/nvidia_pytriton.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
                OMP_NUM_THREADS=1)
    TRITON_BIN=$ts/bin/tritonserver
    triton_note="Triton: tritonserver of nvidia-pytriton $("$py" -c 'import importlib.metadata as m; print(m.version("nvidia-pytriton"))'), Python backend, torch $("$py" -c 'import torch; print(torch.__version__)') (1 thread)"
}

triton_start() {
    "${TRITON_ENV[@]}" "$TRITON_BIN" --model-repository "$work/triton/repo" \
        --backend-directory "$work/triton/backends" --grpc-port "$TRITON_PORT" \
        --http-port $((TRITON_PORT - 1)) --allow-metrics false \
        >"$work/triton/log" 2>&1 &
    triton=$!
    for _ in $(seq 120); do
        grep -q 'Started GRPCInferenceService' "$work/triton/log" 2>/dev/null && return 0
        kill -0 "$triton" 2>/dev/null || break
        sleep 0.5
    done
    echo "serve_table.sh: Triton did not start; skipping it:" >&2
    grep -E '^E|error' "$work/triton/log" | head -n 5 >&2
    stop_triton
    triton_note="Triton skipped: it did not start (its log said why on stderr)"
    return 1
}

use_triton=0
triton_setup && use_triton=1
[ "$use_triton" = 1 ] || echo "serve_table.sh: $triton_note" >&2

bench_wait_load serve_table.sh
load_before=$(bench_load)
for _ in $(seq "$REPS"); do
    for c in $CONCURRENCY; do
        for b in on off; do
            run fluxiond "$addr" mlp "$b" "$c"
        done
    done
    for c in 1 64; do
        for b in on off; do
            run fluxiond "$addr" tiny "$b" "$c"
        done
    done
    for b in on off; do
        run fluxiond "$addr" ceiling "$b" 64
    done
    if [ "$use_triton" = 1 ]; then
        if triton_start; then
            for c in $CONCURRENCY; do
                run triton "127.0.0.1:$TRITON_PORT" mlp on "$c"
            done
            stop_triton
        else
            use_triton=0
        fi
    fi
done

echo "fluxion-bench serve, ${DURATION} s per run after ${WARMUP} s warmup, raw tensors, medians of" \
     "$REPS rounds; batching on: max_batch_size $MAX_BATCH, max_queue_delay_us $DELAY_US;" \
     "instances $INSTANCES; fluxiond $FLUXIOND_ARGS; $(getconf _NPROCESSORS_ONLN) CPUs shared by" \
     "client and server"
echo "$(bench_machine | sed 's/; load average.*//'); load average before $load_before, after $(bench_load)"
echo "$triton_note"
echo
python3 - "$raw" "$(getconf CLK_TCK)" <<'EOF'
import json, statistics, sys
runs = {}
tck = float(sys.argv[2])
for line in open(sys.argv[1]):
    server, model, batching, ticks, js = line.split(" ", 4)
    r = json.loads(js)
    # the server's CPU time per call (warmup included, as the client's)
    r["server_cpu_us_per_call"] = (float("nan") if ticks == "-" or not r.get("calls")
                                   else int(ticks) / tck * 1e6 / r["calls"])
    r.setdefault("client_cpu_us_per_call", float("nan"))
    runs.setdefault((server, model, r["concurrency"], batching), []).append(r)

def med(key, field):
    rs = runs.get(key, [])
    return statistics.median(r[field] for r in rs) if rs else float("nan")

print("| server | model | concurrency | batching | requests/s | p50 us | p90 us | p99 us | "
      "p99.9 us | server CPU us/req | client CPU us/req | errors |")
print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")
order = {("fluxiond", "mlp"): 0, ("triton", "mlp"): 1, ("fluxiond", "tiny"): 2,
         ("fluxiond", "ceiling"): 3}
for key in sorted(runs, key=lambda k: (order.get(k[:2], 9), k[2], k[3] != "on")):
    server, model, c, b = key
    errs = {}
    for r in runs[key]:
        for k, v in r["errors"].items():
            errs[k] = errs.get(k, 0) + v
    e = ", ".join("%s %d" % kv for kv in errs.items()) or "-"
    print("| %s | %s | %d | %s | %.0f | %.0f | %.0f | %.0f | %.0f | %.1f | %.1f | %s |" % (
        server, model, c, b, med(key, "requests_per_s"), med(key, "p50_us"),
        med(key, "p90_us"), med(key, "p99_us"), med(key, "p999_us"),
        med(key, "server_cpu_us_per_call"), med(key, "client_cpu_us_per_call"), e))

print()
print("| what | measured | target |")
print("|---|---:|---:|")
def rps(*k):
    return med(k, "requests_per_s")
def row(what, v, fmt, target, ok):
    mark = "" if v != v else (" ok" if ok(v) else " MISSED")
    print("| %s | %s | %s%s |" % (what, "-" if v != v else fmt % v, target, mark))
for c, t in ((1, 0.95), (8, 1.3), (64, 2.0)):
    v = rps("fluxiond", "mlp", c, "on") / rps("fluxiond", "mlp", c, "off")
    row("serving mlp, batching on vs off, concurrency %d" % c, v, "%.2fx", ">= %gx" % t,
        lambda v, t=t: v >= t)
v = rps("fluxiond", "mlp", 64, "on") / rps("triton", "mlp", 64, "on")
row("serving mlp at concurrency 64 vs Triton (both batching)", v, "%.2fx", ">= 2x",
    lambda v: v >= 2)
best64 = max(rps("fluxiond", "mlp", 64, "on"), rps("fluxiond", "mlp", 64, "off"))
ceil = max(rps("fluxiond", "ceiling", 64, "on"), rps("fluxiond", "ceiling", 64, "off"))
row("serving mlp at concurrency 64 vs the compute-free model (%.0f req/s)" % ceil,
    100 * best64 / ceil, "%.0f%%", ">= 90%", lambda v: v >= 90)
on, off = med(("fluxiond", "tiny", 1, "on"), "p50_us"), med(("fluxiond", "tiny", 1, "off"), "p50_us")
row("tiny model p50 at concurrency 1, batching on (%.0f us) vs off (%.0f us)" % (on, off),
    on / off, "%.2fx", "<= 1.10x", lambda v: v <= 1.1)
# The same ratios from CPU time per request (server + client, the two
# sharing the cores): what the rates come to where the CPUs are the limit
# and nothing else runs, steadier than the rates on a loaded machine.
def cpu(*k):
    return med(k, "server_cpu_us_per_call") + med(k, "client_cpu_us_per_call")
print()
print("| from CPU time per request (server + client) | measured | target |")
print("|---|---:|---:|")
for c, t in ((1, 0.95), (8, 1.3), (64, 2.0)):
    v = cpu("fluxiond", "mlp", c, "off") / cpu("fluxiond", "mlp", c, "on")
    row("serving mlp, batching on vs off, concurrency %d (%.0f vs %.0f us)" % (
        c, cpu("fluxiond", "mlp", c, "on"), cpu("fluxiond", "mlp", c, "off")),
        v, "%.2fx", ">= %gx" % t, lambda v, t=t: v >= t)
best = min(cpu("fluxiond", "mlp", 64, "on"), cpu("fluxiond", "mlp", 64, "off"))
ceil_cpu = min(cpu("fluxiond", "ceiling", 64, "on"), cpu("fluxiond", "ceiling", 64, "off"))
row("serving mlp at concurrency 64 vs the compute-free model (%.0f vs %.0f us)" % (best, ceil_cpu),
    100 * ceil_cpu / best, "%.0f%%", ">= 90%", lambda v: v >= 90)
print()
print("The compute-free model has the mlp's interface (784 floats in, 10 out) and a forward "
      "that is one slice; the better of batching on/off is taken for it and for the mlp. "
      "Triton runs the mlp in its Python backend (torch, 1 thread, no_grad): each execution "
      "pays the backend stub's ~300 us (shared memory and a process hop), so the Triton "
      "figures measure its C++ front end and dynamic batcher with a slow backend, not its "
      "fastest one (the wheel has no ONNX Runtime or libtorch backend).")
EOF
