#!/usr/bin/env bash
# tsan.sh - the server's unit tests and the concurrency stress test
# (tests/integration/test_stress.py) under ThreadSanitizer, in build-tsan/
# (cmake -DFX_TSAN=ON). Any report fails the run; tests/tsan.supp lists the
# third-party code whose reports are dropped, and why.
#
#   scripts/tsan.sh [STRESS_SECONDS]     (default 30; FX_TSAN_BUILD=DIR)
#
# scripts/test.sh runs it after the ASan suite (FX_SKIP_TSAN=1 skips it).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
build="${FX_TSAN_BUILD:-build-tsan}"
jobs="$(nproc)"
# the server's tests: RPC layer, batching and serving, jobs, store
tests=(test_rpc test_rpc_auth test_rpc_local test_batcher test_canary test_jobs test_yield
       test_store test_store_teams test_store_versions test_datasets test_models test_devices
       test_metrics test_comm test_train_dist)

cmake -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFX_TSAN=ON -DFX_CUDA=OFF >/dev/null
cmake --build "$build" -j"$jobs" --target fluxiond fluxion fluxion_py_stubs "${tests[@]}"

# halt_on_error: the first report ends the process (a daemon's then shows
# as its death in the test); allocator_may_return_null: tests that push an
# allocation past what TSan's allocator gives see NULL, as the engine's
# out-of-memory path expects, instead of TSan aborting.
export TSAN_OPTIONS="suppressions=$PWD/tests/tsan.supp halt_on_error=1 exitcode=66 allocator_may_return_null=1 history_size=4 ${TSAN_OPTIONS:-}"
regex="^($(IFS='|'; echo "${tests[*]}"))\$"
(cd "$build" && ctest -R "$regex" --output-on-failure -j"$jobs" --timeout 600)

echo "== test_stress.py under TSan (${seconds} s) =="
FLUXIOND="$build/fluxiond" FX_PY_OUT="$build/python" FX_SOURCE_DIR="$PWD" \
  PYTHONPATH="$build/python:$PWD/clients/python" OPENBLAS_NUM_THREADS=1 \
  FX_STRESS_SECONDS="$seconds" /usr/bin/python3 tests/integration/test_stress.py
