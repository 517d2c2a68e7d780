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
#     and copies test_cuda, fluxion-bench, the bench scripts and every shared
#     library they need that is neither glibc nor CUDA into .gpu/ (ignored by
#     git; listed in .git/info/exclude by this script). ~10-20 MiB.
#
#   there (through the device tool, carrying .gpu):
#       run(command="bash scripts/gpu_check.sh run", carry=[".gpu"])
#     runs test_cuda (every op and layer vs the CPU, memory limit, pool reuse,
#     enumeration) and tests/bench/gpu_compare.sh (mlp, cnn vs PyTorch at two
#     batch sizes), with the device's CUDA libraries first on the library
#     path. Logs land in $OUT (test_cuda.log, bench.md, bench.jsonl) when OUT
#     is set. Exit status: test_cuda's, unless the benchmark fails.
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
    cmake --build build-gpu --target test_cuda fluxion-bench -j"$(nproc)" || exit 1
}

run_checks() { # $1: dir with test_cuda and fluxion-bench
    local bin=$1 rc
    mkdir -p "$out"
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv 2>&1 | tee "$out/gpu.txt"
    echo "== test_cuda"
    "$bin/test_cuda" 2>&1 | tee "$out/test_cuda.log"
    rc=${PIPESTATUS[0]}
    echo "== test_cuda exit status $rc (0 passed, 77 skipped: no device)"
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
    cp build-gpu/test_cuda build-gpu/fluxion-bench .gpu/bin/
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
*)
    echo "usage: gpu_check.sh prepare|run|local (see the comment at the top)" >&2
    exit 2
    ;;
esac
