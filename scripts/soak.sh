#!/usr/bin/env bash
# The soak (issue 19; README, "Soak"): CALLS inference calls (default 10^7)
# over gRPC (fluxion-bench serve) and HTTP (keep-alive threads), or SECONDS
# (default 900) if that comes first, with create/import/promote/delete and
# dataset/ONNX cycles in parallel; fluxiond's RSS, threads, fds and data dir
# sampled and printed as a table; exit 1 on an error or on growth beyond the
# bounds tests/integration/soak.py states. test_soak.py is the CI form.
#
#     scripts/soak.sh [CALLS] [SECONDS]                # build/ by default
#     BUILD=build-asan scripts/soak.sh 100000 120
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
export FLUXIOND=${FLUXIOND:-$BUILD/fluxiond} FX_PY_OUT=${FX_PY_OUT:-$BUILD/python}
export FLUXION_BENCH=${FLUXION_BENCH:-$BUILD/fluxion-bench} FX_SOURCE_DIR=$PWD
SECONDS_MAX=${2:-900}
exec nice -n "${NICE:-10}" /usr/bin/python3 tests/integration/soak.py --calls "${1:-10000000}" \
    --seconds "$SECONDS_MAX" --interval "${INTERVAL:-$(( SECONDS_MAX >= 300 ? 30 : 5 ))}"
