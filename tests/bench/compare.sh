#!/bin/sh
# compare.sh - fluxion vs PyTorch training throughput, as a Markdown table.
#
#     tests/bench/compare.sh [path/to/fluxion-bench]
#
# For each model (logreg, mlp) and thread count (1, 2) it runs
# `fluxion-bench train` and tests/bench/torch_bench.py REPS times each,
# alternating the two so they share the machine's noise, and reports the
# median samples/s of each, their ratio and the final losses. It then times
# OpenBLAS sgemm at the mlp's first-layer shape (M 128, N 512, K 784) and
# reports the mlp step's achieved matmul GFLOP/s as a fraction of it.
#
# Both run with OPENBLAS_NUM_THREADS=1, each one's best setting. fluxion
# calls OpenBLAS single-threaded and splits products over its own OpenMP
# threads (engine/cpu/blas.c); a larger OpenBLAS pool would only spin idle
# at start-up. torch's set_num_threads sizes its OpenMP pool but not
# OpenBLAS's pthread pool, which otherwise takes every core: at 1 thread
# torch would then run its matmuls on 2 cores, and at 2 threads the two
# pools oversubscribe the cores and torch runs 2-3x slower than with
# OPENBLAS_NUM_THREADS=1 (measured on a 2-core VM), so leaving it unset
# would flatter fluxion.
# OpenBLAS 0.3.21 takes some newer Xeons (family 6 model 207 under KVM) for
# a "Prescott" and runs its SSE3 kernels, ~5x slower than the AVX-512 ones;
# unless OPENBLAS_CORETYPE is set, the script picks the best kernels the CPU
# runs for both implementations (below), and the footer names the core used.
#
# On a shared machine a run that meets another busy process loses far more
# than its share at 2 threads (every parallel region waits for the thread
# that was descheduled), so before each run the script waits, up to
# IDLE_WAIT seconds, for the cores to be idle (IDLE_PCT percent over half a
# second). The cpu util column shows how much CPU each run actually got.
#
# Environment: REPS (default 3), MODELS (default "logreg mlp cnn lstm"), THREADS
# (default "1 2"), PYTHON (default /usr/bin/python3), STEPS / WARMUP (passed
# through when set), IDLE_WAIT (default 120; 0 disables), IDLE_PCT (default
# 90). The raw JSON lines go to stderr.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bench=${1:-${FLUXION_BENCH:-$root/build/fluxion-bench}}
py=${PYTHON:-/usr/bin/python3}

# Both implementations share the system OpenBLAS: give them the same kernels,
# the best this CPU runs. (fluxion-bench would re-exec itself onto them anyway,
# fx_blas_reexec_if_misdetected, while torch would keep OpenBLAS's detection.)
if [ -z "${OPENBLAS_CORETYPE:-}" ]; then
    if grep -qw avx512f /proc/cpuinfo; then export OPENBLAS_CORETYPE=SkylakeX
    elif grep -qw avx2 /proc/cpuinfo; then export OPENBLAS_CORETYPE=Haswell
    fi
fi
reps=${REPS:-3}
models=${MODELS:-logreg mlp cnn lstm}
threads=${THREADS:-1 2}
extra=""
[ -n "${STEPS:-}" ] && extra="$extra --steps $STEPS"
[ -n "${WARMUP:-}" ] && extra="$extra --warmup $WARMUP"

if [ ! -x "$bench" ]; then
    echo "compare.sh: no fluxion-bench at $bench (build it, or pass its path)" >&2
    exit 2
fi
if ! "$py" -c "import torch" 2>/dev/null; then
    echo "compare.sh: $py cannot import torch (apt-get install -y python3-torch)" >&2
    exit 2
fi

idle_wait=${IDLE_WAIT:-120}
idle_pct=${IDLE_PCT:-90}

# Percent of CPU time idle over half a second, from /proc/stat.
idle_now() {
    a=$(head -n 1 /proc/stat)
    sleep 0.5
    b=$(head -n 1 /proc/stat)
    printf '%s\n%s\n' "$a" "$b" | awk '{ idle[NR] = $5 + $6; tot[NR] = 0
        for (i = 2; i <= NF; i++) tot[NR] += $i }
        END { d = tot[2] - tot[1]; printf "%d\n", (d > 0 ? 100 * (idle[2] - idle[1]) / d : 100) }'
}

# Waits until the machine is idle or idle_wait seconds have passed.
wait_idle() {
    [ "$idle_wait" -gt 0 ] && [ -r /proc/stat ] || return 0
    start=$(date +%s)
    while [ "$(idle_now)" -lt "$idle_pct" ]; do
        if [ $(($(date +%s) - start)) -ge "$idle_wait" ]; then
            echo "compare.sh: machine still busy after ${idle_wait}s; running anyway" >&2
            return 0
        fi
        sleep 1
    done
}

raw=$(mktemp)
trap 'rm -f "$raw"' EXIT

for m in $models; do
    for t in $threads; do
        r=0
        while [ "$r" -lt "$reps" ]; do
            wait_idle
            # shellcheck disable=SC2086
            OPENBLAS_NUM_THREADS=1 "$bench" train --model "$m" --threads "$t" $extra \
                | tee -a "$raw" >&2
            wait_idle
            # shellcheck disable=SC2086
            OPENBLAS_NUM_THREADS=1 "$py" "$here/torch_bench.py" train --model "$m" --threads "$t" $extra \
                | tee -a "$raw" >&2
            r=$((r + 1))
        done
    done
done
for t in $threads; do
    r=0
    while [ "$r" -lt "$reps" ]; do
        wait_idle
        OPENBLAS_NUM_THREADS=1 "$bench" sgemm --m 128 --n 512 --k 784 --threads "$t" | tee -a "$raw" >&2
        r=$((r + 1))
    done
done

core=$(OPENBLAS_VERBOSE=2 "$bench" sgemm --reps 1 2>&1 | sed -n 's/^Core: *//p' | head -n 1)
"$py" - "$raw" "$(cat /proc/loadavg 2>/dev/null || echo '?')" "${core:-unknown}" <<'EOF'
import json, statistics, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
target = {"logreg": 10.0, "mlp": 1.5}

def med(xs):
    return statistics.median(xs) if xs else float("nan")

runs, sgemm = {}, {}
for r in rows:
    if r.get("bench") == "sgemm":
        sgemm.setdefault(r["threads"], []).append(r["gflops"])
    else:
        runs.setdefault((r["model"], r["threads"], r["impl"]), []).append(r)

keys = sorted({(m, t) for (m, t, _) in runs}, key=lambda k: (k[0] != "logreg", k[0], k[1]))
print("| model | threads | fluxion samples/s | torch samples/s | ratio | target | "
      "fluxion final loss | torch final loss | cpu util fluxion / torch |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for m, t in keys:
    f, p = runs.get((m, t, "fluxion"), []), runs.get((m, t, "torch"), [])
    fs, ps = med([r["samples_per_s"] for r in f]), med([r["samples_per_s"] for r in p])
    fl = f[-1]["final_loss"] if f else float("nan")
    pl = p[-1]["final_loss"] if p else float("nan")
    ratio = fs / ps if ps else float("nan")
    tg = target.get(m)
    mark = "" if tg is None else (f">= {tg:g}x " + ("ok" if ratio >= tg else "MISSED"))
    fu, pu = med([r.get("cpu_util", 0) for r in f]), med([r.get("cpu_util", 0) for r in p])
    print(f"| {m} | {t} | {fs:,.0f} | {ps:,.0f} | {ratio:.2f}x | {mark} | {fl:.4f} | {pl:.4f} "
          f"| {fu:.2f} / {pu:.2f} |")

# At 1 thread, samples per CPU second (samples/s divided by cpu util) hardly
# moves when other work shares the core, so it is the number to trust on a
# busy machine.
one = [(m, t) for m, t in keys if t == 1]
if one:
    print()
    print("| model (1 thread) | fluxion samples/CPU-s | torch samples/CPU-s | ratio |")
    print("|---|---:|---:|---:|")
    for m, t in one:
        per = lambda impl: med([r["samples_per_s"] / r["cpu_util"]
                                for r in runs.get((m, t, impl), []) if r.get("cpu_util")])
        fc, pc = per("fluxion"), per("torch")
        print(f"| {m} | {fc:,.0f} | {pc:,.0f} | {fc / pc:.2f}x |")

if sgemm and any(m == "mlp" for m, _ in keys):
    print()
    print("| mlp threads | fluxion step GFLOP/s | torch step GFLOP/s | sgemm 128x512x784 GFLOP/s "
          "| fluxion / sgemm | torch / sgemm |")
    print("|---:|---:|---:|---:|---:|---:|")
    for t in sorted(sgemm):
        peak = med(sgemm[t])
        fg = med([r["gflops"] for r in runs.get(("mlp", t, "fluxion"), [])])
        tg = med([r["gflops"] for r in runs.get(("mlp", t, "torch"), [])])
        print(f"| {t} | {fg:.1f} | {tg:.1f} | {peak:.1f} | {fg / peak:.0%} | {tg / peak:.0%} |")
    print()
    print("Step GFLOP/s counts 3 matmuls per dense layer (forward, d input, d weight; "
          "2*M*N*K flops each).")
n = max((len(v) for v in runs.values()), default=0)
print(f"Medians of {n} runs each, fluxion and torch alternated; OpenBLAS core {sys.argv[3]}; "
      f"load average at the end {sys.argv[2].split()[0]}. cpu util is CPU time over wall time "
      "of the timed steps (below 1 at 1 thread: the run shared its core).")
EOF
