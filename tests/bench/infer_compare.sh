#!/usr/bin/env bash
# infer_compare.sh - the mlp's forward (inference, 1 thread) against ONNX
# Runtime, as a Markdown table: rows "forward mlp batch B, time vs ONNX
# Runtime".
#
#     bash tests/bench/infer_compare.sh [path/to/fluxion-bench]
#
# `fluxion-bench forward --save-weights` writes the mlp's weights (and one
# input with fluxion's output); tests/bench/onnx_bench.py loads them into a
# torch module, exports it to ONNX (opset 17) and checks that ONNX Runtime
# computes the same outputs (max abs difference printed under the table).
# Then for each batch size, fluxion-bench forward and onnx_bench.py forward
# (CPUExecutionProvider, intra_op_num_threads 1, ORT_SEQUENTIAL) run
# interleaved A B A B ..., each after the cores are idle (lib.sh), and the
# table shows medians of the per-run median times. Ratio = fluxion time /
# ORT time (<= 1.0 means fluxion is at least as fast).
#
# Environment: REPS (runs of each, default 5), BATCHES (default "1 8 64"),
# FWD_REPS (forwards per run, default 2000), PREPACK=1 (pass --prepack to
# fluxion-bench: the engine's pre-packed weights, when the build has them),
# BF16=1 (pass --bf16: the forward in bf16 precision, weights packed as bf16
# with PREPACK=1; the table then notes fluxion's max error against fp32),
# PYTHON (default: the venv's, tests/bench/venv.sh), IDLE_WAIT, LOAD_MAX.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
bench=${1:-${FLUXION_BENCH:-$BENCH_ROOT/build/fluxion-bench}}
py=$(bench_python)
reps=${REPS:-5}
batches=${BATCHES:-1 8 64}
fwd_reps=${FWD_REPS:-2000}
pp=()
[ -n "${PREPACK:-}" ] && pp=(--prepack)
[ -n "${BF16:-}" ] && pp+=(--bf16)

[ -x "$bench" ] || { echo "infer_compare.sh: no fluxion-bench at $bench (build it, or pass its path)" >&2; exit 2; }
if [ -z "$py" ] || ! "$py" -c "import onnxruntime, torch" 2>/dev/null; then
    echo "infer_compare.sh: no python with onnxruntime and torch (run tests/bench/venv.sh, or set PYTHON)" >&2
    exit 2
fi
bench_openblas_coretype
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
BENCH_RAW=$work/raw
: >"$BENCH_RAW"
OPENBLAS_NUM_THREADS=1 "$bench" forward --model mlp --batch 8 --reps 1 --warmup 0 \
    --save-weights "$work/mlp.safetensors" >/dev/null
check=$("$py" "$here/onnx_bench.py" export --weights "$work/mlp.safetensors" --out "$work/mlp.onnx")

bench_wait_load infer_compare.sh
load_before=$(bench_load)
for b in $batches; do
    bench_interleave "$reps" "$bench" forward --model mlp --batch "$b" --threads 1 \
        --reps "$fwd_reps" "${pp[@]}" -- \
        "$py" "$here/onnx_bench.py" forward --onnx "$work/mlp.onnx" --batch "$b" --reps "$fwd_reps"
done

bench_machine
echo
"$py" - "$BENCH_RAW" "$load_before" "$(bench_load)" "$check" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
runs = {}
for r in rows:
    runs.setdefault((r["batch"], r["impl"]), []).append(r)
target = {8: 1.0, 64: 1.0}
print("| what | fluxion median us | ONNX Runtime median us | fluxion / ORT time | target | "
      "fluxion samples/s | ORT samples/s |")
print("|---|---:|---:|---:|---:|---:|---:|")
pre = ""
for b in sorted({k[0] for k in runs}):
    f, o = runs.get((b, "fluxion"), []), runs.get((b, "onnxruntime"), [])
    if f and (f[0].get("prepack") or f[0].get("precision") == "bf16"):
        pre = " (fluxion%s%s)" % (" --prepack" if f[0].get("prepack") else "",
                                  " --bf16: max rel error of the logits vs fp32 %.1e, argmax "
                                  "agreement %.4f" % (max(r["max_rel_err"] for r in f),
                                                      min(r["argmax_agree"] for r in f))
                                  if f[0].get("precision") == "bf16" else "")
    fm = statistics.median(r["median_us"] for r in f) if f else float("nan")
    om = statistics.median(r["median_us"] for r in o) if o else float("nan")
    ratio = fm / om
    tg = target.get(b)
    mark = "" if tg is None else ("<= %.1fx %s" % (tg, "ok" if ratio <= tg else "MISSED"))
    print("| forward mlp batch %d, time vs ONNX Runtime | %.1f | %.1f | %.2fx | %s | %.0f | %.0f |"
          % (b, fm, om, ratio, mark, b * 1e6 / fm, b * 1e6 / om))
c = json.loads(sys.argv[4])
n = max((len(v) for v in runs.values()), default=0)
print()
print("1 thread each (fluxion --threads 1, OPENBLAS_NUM_THREADS=1; ORT intra_op 1, sequential)%s; "
      "medians of %d interleaved runs of per-forward medians; same weights (ORT output vs "
      "fluxion's: max abs diff %.1e); torch %s exported opset 17, onnxruntime %s; "
      "load average before %s, after %s. ORT's times include the Python call of "
      "InferenceSession.run (a few us; it matters at batch 1 only)."
      % (pre, n, c["max_abs_diff_ort_vs_fluxion"], c["torch"], c["onnxruntime"],
         sys.argv[2], sys.argv[3]))
PY
