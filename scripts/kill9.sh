#!/usr/bin/env bash
# The long kill -9 loop (issue 19; README, "kill -9"): KILLS (default 100)
# kill -9s of a busy fluxiond at seeded random moments, every acknowledged
# object checked after each restart, resumed jobs compared bit for bit with
# uninterrupted runs. tests/integration/test_kill9.py is the CI form.
#
#     scripts/kill9.sh [KILLS] [SEED] [STEPS]       # build/ by default
#     BUILD=build-asan scripts/kill9.sh 20
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
export FLUXIOND=${FLUXIOND:-$BUILD/fluxiond} FX_PY_OUT=${FX_PY_OUT:-$BUILD/python}
export FX_SOURCE_DIR=$PWD
exec nice -n "${NICE:-10}" /usr/bin/python3 tests/integration/killloop.py \
    --kills "${1:-100}" --seed "${2:-1}" --steps "${3:-2000}"
