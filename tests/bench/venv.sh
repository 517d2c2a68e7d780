#!/usr/bin/env bash
# Creates the benchmark venv (default build/bench-venv) with the peers the
# benchmarks compare against: PyPI torch 2.x, numpy, onnx, onnxruntime, and
# (for serve_table.sh) nvidia-pytriton + tritonclient[grpc].  Idempotent:
# packages already importable are skipped.  Never touches the test path
# (scripts/test.sh's environment) or the system Python.
#
#   tests/bench/venv.sh [VENV_DIR]        # BENCH_VENV=... works too
#   NO_TRITON=1 tests/bench/venv.sh       # skip nvidia-pytriton (large)
#
# Uses the first `python3` on PATH that is not Debian's /usr/bin/python3
# (the pyenv one here): Debian's python3 has torch 1.13 on the system
# OpenBLAS in its dist-packages, which is not the peer to beat.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VENV=${1:-${BENCH_VENV:-$ROOT/build/bench-venv}}

pick_python() {
    if [ -n "${BENCH_PYTHON:-}" ]; then echo "$BENCH_PYTHON"; return; fi
    local p
    for p in $(type -ap python3); do
        case "$(readlink -f "$p")" in
            /usr/bin/*|/bin/*) continue ;;
        esac
        echo "$p"; return
    done
    echo "venv.sh: no python3 other than Debian's on PATH; set BENCH_PYTHON" >&2
    exit 1
}

if [ ! -x "$VENV/bin/python" ]; then
    PY=$(pick_python)
    echo "venv.sh: creating $VENV with $PY ($("$PY" --version 2>&1))"
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
fi
VPY="$VENV/bin/python"

need=()
have() { "$VPY" -c "import $1" >/dev/null 2>&1; }
have torch || need+=("torch>=2")
have numpy || need+=(numpy)
have onnx || need+=(onnx)
have onnxruntime || need+=(onnxruntime)
if [ -z "${NO_TRITON:-}" ]; then
    have pytriton || need+=(nvidia-pytriton)
    have tritonclient.grpc || need+=("tritonclient[grpc]")
fi
if [ ${#need[@]} -gt 0 ]; then
    echo "venv.sh: installing ${need[*]} into $VENV"
    "$VENV/bin/pip" install -q "${need[@]}"
else
    echo "venv.sh: $VENV already has every package"
fi
"$VPY" - <<'PY'
import importlib, importlib.metadata
for m in ("torch", "numpy", "onnx", "onnxruntime", "pytriton", "tritonclient"):
    try:
        importlib.import_module(m)
        v = importlib.metadata.version({"pytriton": "nvidia-pytriton",
                                        "tritonclient.grpc": "tritonclient"}.get(m, m))
    except Exception as e:  # reported, not fatal: serve_table skips Triton
        v = "MISSING (%s)" % type(e).__name__
    print("venv.sh: %-12s %s" % (m, v))
PY
