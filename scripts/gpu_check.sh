#!/bin/bash
# gpu_check.sh - the one command a GPU session runs for the CUDA backend.
#
# The device machine (see /work/.library/device/README.md) has nvcc 13, the
# CUDA libraries and PyTorch, but no package registry and none of the
# engine's other dependencies (OpenBLAS, cmocka, ...). So the work is split:
#
#   here (the dev machine, CUDA toolkit, no GPU):
#       bash scripts/gpu_check.sh prepare
#     builds a Release tree with the CUDA backend (sm_80, sm_90) in build-gpu/
#     and copies test_ops, test_cuda, fluxion-bench, the bench scripts and every shared
#     library they need that is neither glibc nor CUDA into .gpu/ (ignored by
#     git; listed in .git/info/exclude by this script). ~10-20 MiB.
#
#   there (through the device tool, carrying .gpu):
#       run(command="bash scripts/gpu_check.sh run", carry=[".gpu"])
#     runs test_ops --xb cuda (the op registry: every op and layer, outputs
#     and gradients, vs the CPU within each row's tolerance, plus its
#     reference and gradient checks), test_cuda (optimizers, memory limit,
#     pool reuse, enumeration), the daemon check (below) and
#     tests/bench/gpu_compare.sh (mlp, cnn vs PyTorch at two batch sizes),
#     with the device's CUDA libraries first on the library path. Logs land
#     in $OUT (test_ops.log, test_cuda.log, daemon.log, bench.md,
#     bench.jsonl) when OUT is set. Exit status: test_ops's, else
#     test_cuda's, else the daemon check's, unless the benchmark fails.
#
#   the daemon check (also alone: gpu_check.sh daemon [BINDIR]): fluxiond
#     --devices cpu,cuda:0; the example job (examples/jobs) trained on "cpu"
#     and on "gpu" from the same base version, result weights compared
#     (within TOL, default 1e-3 relative to the largest weight); the GPU
#     result served on cuda:0 and on cpu, predictions compared (1e-4);
#     cluster status must list cuda:0 with its memory; a memory limit under
#     the weights must be refused naming cuda:0. GPU=cpu runs the same steps
#     with the CPU in the GPU's place (a check of the script on a machine
#     without a GPU).
#
#   anywhere with a GPU and all dependencies:
#       bash scripts/gpu_check.sh local
#     builds and runs both in build-gpu/.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mode=${1:-}
out=${OUT:-$root/.gpu/out}

build() {
    mkdir -p build-gpu
    cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DFX_CUDA=ON >build-gpu/cfg.log 2>&1 ||
        { tail -20 build-gpu/cfg.log; exit 1; }
    grep -q "CUDA backend enabled" build-gpu/cfg.log ||
        { echo "gpu_check: CMake did not enable the CUDA backend:"; grep -i cuda build-gpu/cfg.log; exit 1; }
    cmake --build build-gpu --target test_ops test_cuda fluxion-bench fluxiond fluxion -j"$(nproc)" || exit 1
}

# The daemon on the GPU: training and serving there match the CPU. $1: dir
# with fluxiond and fluxion. Needs python3 with numpy (make_blobs, compare).
daemon_check() {
    local bin=$1 gpu=${GPU:-cuda:0} tol=${TOL:-1e-3} work port pid rc=0
    work=$(mktemp -d)
    mkdir -p "$out"
    local log="$out/daemon.log"
    : >"$log"
    say() { echo "daemon: $*" | tee -a "$log"; }
    cli() { "$bin/fluxion" --server "127.0.0.1:$port" "$@"; }
    local devs="cpu,$gpu"
    [ "$gpu" = cpu ] && devs=cpu
    "$bin/fluxiond" --devices "$devs" --listen 127.0.0.1:0 --data-dir "$work/data" \
        >"$work/out" 2>"$work/err" &
    pid=$!
    for _ in $(seq 100); do grep -q "^listening on" "$work/out" 2>/dev/null && break; sleep 0.2; done
    port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$work/out")
    if [ -z "$port" ]; then
        say "FAIL: fluxiond --devices $devs did not start:"; cat "$work/err" | tee -a "$log"
        kill "$pid" 2>/dev/null; return 1
    fi
    fail() { say "FAIL: $*"; rc=1; }
    cli status | tee -a "$log"
    cli --json status | python3 -c '
import json, sys
devs = {d["name"]: d for d in json.load(sys.stdin)["devices"]}
want = sys.argv[1]
d = devs.get(want)
assert d, "status lists no %s: %s" % (want, list(devs))
assert int(d.get("memoryTotalBytes", d.get("memory_total_bytes", 0))) > 0, d
print("status lists", want, d.get("model"))' "$gpu" >>"$log" 2>&1 || fail "cluster status (see daemon.log)"
    python3 examples/jobs/make_blobs.py "$work/blobs.safetensors" >>"$log" 2>&1 &&
        cli dataset upload blobs "$work/blobs.safetensors" >>"$log" 2>&1 &&
        cli model create examples/jobs/mlp-blobs-model.json >>"$log" 2>&1 ||
        { fail "setting up the example"; kill "$pid"; return 1; }
    local v
    for dev in cpu gpu; do
        [ "$dev" = gpu ] && [ "$gpu" = cpu ] && v=cpu || v=$dev
        python3 - "$v" >"$work/job-$dev.json" <<'PY'
import json, sys
j = json.load(open("examples/jobs/mlp-blobs.json"))
j.update(device=sys.argv[1], model_version=1, serve_when_done=False)
print(json.dumps(j))
PY
        cli train submit "$work/job-$dev.json" --watch >"$work/watch-$dev.log" 2>&1 ||
            { fail "the job on $v did not succeed:"; tail -3 "$work/watch-$dev.log" | tee -a "$log"; }
        tail -1 "$work/watch-$dev.log" | tee -a "$log"
    done
    # versions: 1 the seed, 2 the cpu job's, 3 the gpu job's
    cli model export blobs-mlp --version 2 -o "$work/cpu.safetensors" >>"$log" 2>&1 &&
        cli model export blobs-mlp --version 3 -o "$work/gpu.safetensors" >>"$log" 2>&1 ||
        fail "exporting the results"
    python3 - "$work/cpu.safetensors" "$work/gpu.safetensors" "$tol" <<'PY' 2>&1 | tee -a "$log" || rc=1
import json, struct, sys
import numpy as np
def load(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    h.pop("__metadata__", None)
    return {k: np.frombuffer(b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]],
                             dtype=np.float32).reshape(v["shape"]) for k, v in h.items()}
a, b, tol = load(sys.argv[1]), load(sys.argv[2]), float(sys.argv[3])
assert sorted(a) == sorted(b), (sorted(a), sorted(b))
scale = max(float(np.abs(x).max()) for x in a.values())
worst = max(float(np.abs(a[k] - b[k]).max()) for k in a) / scale
print("daemon: trained weights, gpu vs cpu: max |diff| / max |w| = %.3g (tolerance %g)" % (worst, tol))
sys.exit(0 if worst <= tol else 1)
PY
    echo '{"x": [[3, 3], [-3, 3], [0.5, -2], [-1, -1]]}' >"$work/in.json"
    cli model load blobs-mlp >>"$log" 2>&1
    for dev in cpu "$gpu"; do
        cli model config blobs-mlp --device "$dev" >>"$log" 2>&1 || fail "serving on $dev"
        cli --json predict blobs-mlp -i "$work/in.json" >"$work/pred-$dev.json" 2>>"$log" ||
            fail "predict on $dev"
    done
    python3 - "$work/pred-cpu.json" "$work/pred-$gpu.json" <<'PY' 2>&1 | tee -a "$log" || rc=1
import json, sys
import numpy as np
a, b = (np.array(json.load(open(p))["logits"]["data"]) for p in sys.argv[1:3])
d = float(np.abs(a - b).max() / max(1e-6, np.abs(a).max()))
print("daemon: served on the gpu vs the cpu: max |diff| / max |y| = %.3g (tolerance 1e-4)" % d)
sys.exit(0 if d <= 1e-4 else 1)
PY
    if cli model config blobs-mlp --device "$gpu" --memory-limit-bytes 100 >"$work/lim.log" 2>&1 ||
        ! grep -q "RESOURCE_EXHAUSTED: .*on $gpu: needs .* over its memory limit of 100 bytes" "$work/lim.log"; then
        fail "a memory limit under the weights on $gpu was not refused as expected:"
        cat "$work/lim.log" | tee -a "$log"
    fi
    cli status | tee -a "$log"
    kill "$pid"; wait "$pid" 2>/dev/null
    grep -E "level=(warn|error)" "$work/err" >>"$log"
    [ "$rc" = 0 ] && say "OK" || say "FAILED (fluxiond log: $work/err)"
    return "$rc"
}

run_checks() { # $1: dir with test_ops, test_cuda and fluxion-bench
    local bin=$1 rc rc2
    mkdir -p "$out"
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv 2>&1 | tee "$out/gpu.txt"
    echo "== test_ops --xb cuda"
    "$bin/test_ops" --xb cuda 2>&1 | tee "$out/test_ops.log"
    rc=${PIPESTATUS[0]}
    echo "== test_ops exit status $rc (0 passed, 77 skipped: no device)"
    echo "== test_cuda"
    "$bin/test_cuda" 2>&1 | tee "$out/test_cuda.log"
    rc2=${PIPESTATUS[0]}
    echo "== test_cuda exit status $rc2 (0 passed, 77 skipped: no device)"
    [ "$rc" = 0 ] && rc=$rc2
    echo "== daemon on the gpu"
    daemon_check "$bin" || { [ "$rc" = 0 ] && rc=4; }
    echo "== benchmarks"
    REPS=${REPS:-3} bash tests/bench/gpu_compare.sh "$bin/fluxion-bench" \
        2>"$out/bench.jsonl" | tee "$out/bench.md" || { echo "gpu_check: benchmark failed"; tail "$out/bench.jsonl"; [ "$rc" = 0 ] && rc=3; }
    TF32=1 REPS=1 MODELS=mlp BIG="mlp:8192" bash tests/bench/gpu_compare.sh "$bin/fluxion-bench" \
        2>>"$out/bench.jsonl" | tee "$out/bench_tf32.md" || true
    return "$rc"
}

case "$mode" in
prepare)
    build
    rm -rf .gpu && mkdir -p .gpu/bin .gpu/lib
    ex=$(git rev-parse --path-format=absolute --git-path info/exclude)
    mkdir -p "$(dirname "$ex")"
    grep -qx '/.gpu/' "$ex" 2>/dev/null || echo '/.gpu/' >>"$ex"
    cp build-gpu/test_ops build-gpu/test_cuda build-gpu/fluxion-bench build-gpu/fluxiond build-gpu/fluxion .gpu/bin/
    # every non-glibc, non-CUDA shared library, resolved through symlinks
    for b in .gpu/bin/*; do ldd "$b"; done | awk '/=> \// {print $3}' | sort -u |
        grep -Ev '/(libc|libm|libdl|libpthread|librt|ld-linux[^/]*|libcuda|libcudart|libcublas|libcublasLt|libstdc\+\+|libgcc_s)\.so' |
        while read -r lib; do cp -L "$lib" .gpu/lib/; done
    strip --strip-unneeded .gpu/lib/* 2>/dev/null || true # the carry limit is 64 MiB
    du -sh .gpu; ls .gpu/lib
    ;;
run)
    [ -x .gpu/bin/test_cuda ] || { echo "gpu_check: no .gpu/bin/test_cuda: run 'gpu_check.sh prepare' here and carry .gpu"; exit 2; }
    cudalib=""
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
        [ -d "$d" ] && cudalib="$cudalib:$d"
    done
    export LD_LIBRARY_PATH="$root/.gpu/lib$cudalib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    # CUDA 13 libraries elsewhere (pip's nvidia-* wheels, another prefix)?
    for lib in $(ldd .gpu/bin/test_cuda | awk '/not found/ {print $1}'); do
        hit=$(find /usr/local /opt /usr/lib -name "$lib" 2>/dev/null | head -1)
        [ -n "$hit" ] && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$(dirname "$hit")"
    done
    ldd .gpu/bin/test_cuda | grep -E "not found|cublas|cudart" || true
    run_checks .gpu/bin
    ;;
local)
    build
    run_checks build-gpu
    ;;
daemon)
    daemon_check "${2:-build-gpu}"
    ;;
*)
    echo "usage: gpu_check.sh prepare|run|local|daemon [BINDIR] (see the comment at the top)" >&2
    exit 2
    ;;
esac
