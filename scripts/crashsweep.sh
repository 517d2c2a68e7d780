#!/usr/bin/env bash
# crashsweep.sh - the long form of the crash and fault injection test
# (tests/integration/test_crash_injection.py): every N of every operation
# in every mode (eio, enospc, kill), then a table.
#
#   scripts/crashsweep.sh [BUILD_DIR] [OPS]      # default: build, every operation
#   nice -n 10 scripts/crashsweep.sh build create_model,upload_dataset
#
# BUILD_DIR must hold fluxiond and libfx_faultshim.so (a normal build: the
# shim is not built with FX_SANITIZE). Columns: the operation, the mode, K
# (the calls one run makes under the data directory), how many N were
# swept (1..K+1: K+1 faults nothing, or kills after the last call), how
# many recovered (every check passed), how many failed cleanly with an
# error (eio, enospc) or killed the daemon (kill; the others: the run made
# fewer calls than the count-only one, then a kill -9 after it) / succeeded
# anyway (eio, enospc: the failed call was best effort, or retried),
# how many left the object complete / absent, and the failures. Exit
# status 1 if any N failed.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
[[ $build = /* ]] || build=$here/$build
ops=${2:-}
for f in fluxiond libfx_faultshim.so python; do
    if [[ ! -e $build/$f ]]; then
        echo "crashsweep: no $build/$f (build fluxiond and fx_faultshim first)" >&2
        exit 2
    fi
done
table=$(mktemp /tmp/crashsweep.XXXXXX)
trap 'rm -f "$table"' EXIT
start=$(date +%s)
set +e
FLUXIOND=$build/fluxiond FX_PY_OUT=$build/python FX_SOURCE_DIR=$here \
    PYTHONPATH=$build/python:$here/clients/python OPENBLAS_NUM_THREADS=1 \
    FX_FAULT_SHIM=$build/libfx_faultshim.so FX_CRASH_FULL=1 FX_CRASH_TABLE=$table \
    FX_CRASH_OPS=$ops /usr/bin/python3 "$here/tests/integration/test_crash_injection.py" \
    > "$table.out" 2>&1
rc=$?
set -e
secs=$(( $(date +%s) - start ))
/usr/bin/python3 - "$table" "$secs" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
fmt = "%-15s %-7s %4s %6s %10s %14s %11s %9s %7s %9s"
print(fmt % ("operation", "mode", "K", "swept", "recovered", "failed/killed", "ok despite",
             "complete", "absent", "failures"))
tot = [0, 0, 0]
for r in rows:
    clean = r["failed_clean"] if r["mode"] != "kill" else r["killed"]
    despite = r["ok_despite"] if r["mode"] != "kill" else "-"
    print(fmt % (r["op"], r["mode"], r["k"], r["swept"], r["recovered"], clean, despite,
                 r["complete"], r["absent"], len(r["failures"])))
    tot[0] += r["swept"]; tot[1] += r["recovered"]; tot[2] += len(r["failures"])
print("total: %d N swept, %d recovered, %d failures, %s s" % (tot[0], tot[1], tot[2],
                                                            sys.argv[2]))
for r in rows:
    for f in r["failures"]:
        print("FAILED %s/%s %s" % (r["op"], r["mode"], f))
    for c in r.get("ok_despite_calls", []):
        print("ok despite %s/%s %s" % (r["op"], r["mode"], c))
EOF
if [[ $rc -ne 0 ]]; then
    echo "crashsweep: the test failed (status $rc); its output: $table.out" >&2
    trap - EXIT
    exit 1
fi
rm -f "$table.out"
