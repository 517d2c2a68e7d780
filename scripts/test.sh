#!/usr/bin/env bash
# test.sh - every test: set up, build, run the suite (ctest), then build and
# run it again under AddressSanitizer + UndefinedBehaviorSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs="$(nproc)"

# Test-only peers: PyTorch (Debian) for the equivalence tests, NVIDIA's
# tritonclient (PyPI, into the python3 on PATH) for protocol compatibility,
# tensorboard (PyPI) to read our event files.
# Tests whose peer is missing are reported as skipped, not failed.
FX_EXTRA_PKGS="python3-torch ${FX_EXTRA_PKGS:-}" scripts/setup.sh build
python3 -c 'import tritonclient.grpc, tritonclient.http, tensorboard' 2>/dev/null ||
  python3 -m pip install -q --disable-pip-version-check 'tritonclient[grpc,http]' tensorboard 2>&1 | grep -v "^WARNING: Running pip as" ||
  echo "test: tritonclient/tensorboard not installed; their tests will be skipped" >&2
(cd build && ctest --output-on-failure -j"$jobs")

if [ "${FX_SKIP_SANITIZERS:-0}" != 1 ]; then
  echo "== tests under ASan + UBSan =="
  FX_BUILD_TYPE=Debug scripts/setup.sh build-asan -DFX_SANITIZE=ON
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
     UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
     ctest --output-on-failure -j"$jobs")
fi
