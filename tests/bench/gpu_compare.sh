#!/bin/sh
# gpu_compare.sh - fluxion vs PyTorch eager training throughput on a GPU, as
# a Markdown table.
#
#     tests/bench/gpu_compare.sh [path/to/fluxion-bench]
#
# For each model (mlp, cnn) at its default batch and at a larger batch, runs
# `fluxion-bench train --device $DEVICE` and `torch_bench.py train --device
# $DEVICE` REPS times each, alternating, and reports the median samples/s of
# each, their ratio (target: >= 1.0 at the default batch) and the matmul
# TFLOP/s the step achieves (the larger batch shows how near the GPU's f32
# rate the step gets; with TF32=1 both run with TF32 tensor cores).
#
# Environment: DEVICE (default cuda:0), REPS (default 3), MODELS (default
# "mlp cnn"), BIG (larger batch per model, default "mlp:8192 cnn:1024"),
# PYTHON (default python3), STEPS / WARMUP (passed through), TF32 (1: pass
# --tf32 to both). Raw JSON lines go to stderr.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bench=${1:-$root/build/fluxion-bench}
DEVICE=${DEVICE:-cuda:0}
REPS=${REPS:-3}
MODELS=${MODELS:-"mlp cnn"}
BIG=${BIG:-"mlp:8192 cnn:1024"}
PYTHON=${PYTHON:-python3}
extra=""
[ -n "${STEPS:-}" ] && extra="$extra --steps $STEPS"
[ -n "${WARMUP:-}" ] && extra="$extra --warmup $WARMUP"
[ "${TF32:-0}" = 1 ] && extra="$extra --tf32"

[ -x "$bench" ] || { echo "gpu_compare: no fluxion-bench at $bench" >&2; exit 2; }

# field NAME JSON -> the value of a number or string field of one JSON line
field() { printf '%s\n' "$2" | sed -n "s/.*\"$1\":\"\{0,1\}\([^,\"}]*\).*/\1/p"; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}'; }

echo "| model | batch | fluxion samples/s | torch samples/s | fluxion/torch | fluxion TFLOP/s | torch TFLOP/s | final loss f/t |"
echo "|---|---|---|---|---|---|---|---|"
for m in $MODELS; do
    big=$(printf '%s\n' $BIG | sed -n "s/^$m://p")
    for b in default $big; do
        bflag=""
        [ "$b" != default ] && bflag="--batch $b"
        fs="" ts="" fg="" tg="" fl="" tl="" batch=""
        for r in $(seq "$REPS"); do
            f=$("$bench" train --model "$m" --device "$DEVICE" $bflag $extra)
            echo "$f" >&2
            t=$("$PYTHON" "$here/torch_bench.py" train --model "$m" --device "$DEVICE" $bflag $extra)
            echo "$t" >&2
            fs="$fs $(field samples_per_s "$f")"; ts="$ts $(field samples_per_s "$t")"
            fg="$fg $(field gflops "$f")"; tg="$tg $(field gflops "$t")"
            fl=$(field final_loss "$f"); tl=$(field final_loss "$t"); batch=$(field batch "$f")
        done
        mf=$(echo "$fs" | median); mt=$(echo "$ts" | median)
        gf=$(echo "$fg" | median); gt=$(echo "$tg" | median)
        awk -v m="$m" -v b="$batch" -v f="$mf" -v t="$mt" -v gf="$gf" -v gt="$gt" -v fl="$fl" -v tl="$tl" \
            'BEGIN { printf "| %s | %s | %.0f | %.0f | %.2fx | %.2f | %.2f | %s / %s |\n", m, b, f, t, f / t, gf / 1000, gt / 1000, fl, tl }'
    done
done
echo
echo "Device $DEVICE; $REPS runs each, medians; TF32 ${TF32:-0}; torch $("$PYTHON" -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0))' 2>/dev/null || echo '?')."
