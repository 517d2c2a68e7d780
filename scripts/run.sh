#!/usr/bin/env bash
# run.sh - the main job: set up, build, and train the example (softmax
# regression on a Gaussian mixture, RMSProp), printing per-epoch loss and
# train/test error next to the data's Bayes error.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh build
exec ./build/logreg "$@"
