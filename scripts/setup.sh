#!/usr/bin/env bash
# setup.sh - installs the Debian packages Fluxion needs (only the missing
# ones) and builds it. Safe to run again: it does nothing that is done.
#
#   scripts/setup.sh [BUILD_DIR] [extra cmake args...]
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(build-essential cmake pkg-config
      libopenblas-dev libcmocka-dev libsqlite3-dev libuv1-dev
      libgrpc-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler protobuf-compiler-grpc
      libjansson-dev libssl-dev python3 python3-numpy python3-grpcio python3-protobuf
      libprotobuf-dev libmicrohttpd-dev libgloo-dev)
# Extra packages for a caller (e.g. benchmarks ask for python3-torch).
if [ -n "${FX_EXTRA_PKGS:-}" ]; then read -r -a extra <<< "$FX_EXTRA_PKGS"; PKGS+=("${extra[@]}"); fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

BUILD="${1:-build}"; shift || true
cmake -B "$BUILD" -DCMAKE_BUILD_TYPE="${FX_BUILD_TYPE:-Release}" "$@" >/dev/null
cmake --build "$BUILD" -j"$(nproc)"
