#!/usr/bin/env bash
# test.sh - every test: set up, build, run the suite (ctest), then build and
# run it again under AddressSanitizer + UndefinedBehaviorSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs="$(nproc)"

scripts/setup.sh build
(cd build && ctest --output-on-failure -j"$jobs")

if [ "${FX_SKIP_SANITIZERS:-0}" != 1 ]; then
  echo "== tests under ASan + UBSan =="
  FX_BUILD_TYPE=Debug scripts/setup.sh build-asan -DFX_SANITIZE=ON
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
     UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
     ctest --output-on-failure -j"$jobs")
fi
