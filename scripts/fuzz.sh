#!/usr/bin/env bash
# fuzz.sh - builds the libFuzzer targets (tests/fuzz/, clang with ASan +
# UBSan) in build-fuzz and runs each for SECONDS (default 60), then prints
# a table: target, executions, executions/s, coverage (libFuzzer's final
# "cov:", edges reached), crashes. Exits 1 when any target crashed, leaked,
# hit undefined behaviour, a timeout or the memory limit; the input is
# saved under build-fuzz/crashes/ (replay it: build-fuzz/fuzz_TARGET FILE;
# then add it to tests/fuzz/corpus/TARGET/ as regress-<what> with the fix).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     (TARGET: graph, rpc_model, ...)
#
# Each target starts from its seeds (tests/fuzz/corpus/TARGET, in the repo,
# small) plus what earlier runs found (build-fuzz/corpus/TARGET, kept
# between runs, never committed). FX_FUZZ_JOBS: parallel targets (default
# 1: the figures are per target on one core).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"; shift || true
BUILD="${FX_FUZZ_BUILD:-build-fuzz}"
command -v clang >/dev/null || { echo "fuzz: clang is needed (apt-get install clang)" >&2; exit 2; }
# libFuzzer's runtime is a package of its own on Debian (clang only recommends it)
echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return 0; }' |
  clang -x c - -fsanitize=fuzzer,address,undefined -o /dev/null 2>/dev/null ||
  { echo "fuzz: clang cannot link -fsanitize=fuzzer (apt-get install libclang-rt-14-dev)" >&2; exit 2; }

if [ $# -gt 0 ]; then targets=("$@"); else
  targets=(); for d in tests/fuzz/corpus/*/; do targets+=("$(basename "$d")"); done
fi
launcher=(); command -v ccache >/dev/null && launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache)
t0=$(date +%s)
cmake -B "$BUILD" -DCMAKE_C_COMPILER=clang -DFX_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  "${launcher[@]}" >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target "${targets[@]/#/fuzz_}" >/dev/null
echo "fuzz: built ${#targets[@]} targets in $(( $(date +%s) - t0 )) s"

# The longest input worth trying: a bit above the largest seed's kind.
max_len() {
  case "$1" in
    tbevents) echo 1024 ;;
    graph|pbjson|dataset|onnx) echo 16384 ;;
    *) echo 4096 ;;
  esac
}
dict() {
  case "$1" in
    rpc_*|dataset|onnx) echo tests/fuzz/dict/protobuf.dict ;;
    graph) cat tests/fuzz/dict/json.dict tests/fuzz/dict/protobuf.dict > "$BUILD/graph.dict"
           echo "$BUILD/graph.dict" ;;
    *) echo tests/fuzz/dict/json.dict ;;
  esac
}

mkdir -p "$BUILD/crashes" "$BUILD/logs"
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
run_one() {
  local t="$1" work="$BUILD/corpus/$1"
  mkdir -p "$work"
  # -timeout: a single input running 10 s is an unbounded loop or a size
  # not checked before work; -rss_limit_mb: the same for memory.
  "$BUILD/fuzz_$t" "$work" "tests/fuzz/corpus/$t" -max_total_time="$secs" \
    -max_len="$(max_len "$t")" -dict="$(dict "$t")" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$BUILD/crashes/$t-" >"$BUILD/logs/$t.log" 2>&1 &&
    echo 0 >"$BUILD/logs/$t.rc" || echo $? >"$BUILD/logs/$t.rc"
}
jobs_max="${FX_FUZZ_JOBS:-1}"
for t in "${targets[@]}"; do
  [ -x "$BUILD/fuzz_$t" ] || { echo "fuzz: no target $t" >&2; exit 2; }
  while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do wait -n || true; done
  run_one "$t" &
done
wait

fail=0
printf '%-18s %12s %9s %7s %8s\n' target execs execs/s cov crashes
for t in "${targets[@]}"; do
  log="$BUILD/logs/$t.log"
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$({ grep -o 'cov: [0-9]*' "$log" || true; } | tail -1 | cut -d' ' -f2)
  crashes=0
  if [ "$(cat "$BUILD/logs/$t.rc")" != 0 ]; then
    crashes=1; fail=1
    echo "fuzz: $t failed: $(grep -m1 -E 'ERROR|runtime error|==[0-9]+==' "$log" || tail -1 "$log")" >&2
    grep -o "Test unit written to .*" "$log" >&2 || true
  fi
  printf '%-18s %12s %9s %7s %8s\n' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "$crashes"
done
exit "$fail"
