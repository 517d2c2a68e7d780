# shellcheck shell=bash
# lib.sh - helpers shared by the benchmark scripts (sourced, bash).
#
#   . "$(dirname "$0")/lib.sh"
#   bench_python              the benchmark venv's python (tests/bench/venv.sh),
#                             or $PYTHON when set; empty when neither exists
#   bench_wait_load [TAG]     before a table: waits until the 1-minute load
#                             average is below LOAD_MAX or LOAD_WAIT seconds
#                             passed, then proceeds and says so on stderr
#   bench_wait_idle [TAG]     before each run: waits until the cores are idle
#                             (IDLE_PCT percent idle over half a second, from
#                             /proc/stat) or IDLE_WAIT seconds passed
#   bench_interleave N CMD_A -- CMD_B
#                             runs A B A B ... N times each, each through
#                             bench_run (idle wait, RUN_TIMEOUT, stdout
#                             appended to $BENCH_RAW)
#   bench_median              medians of the numbers on stdin (one a line)
#   bench_machine             one line: CPU model, cores, ISA (AVX-512, AMX,
#                             AVX512-BF16, AVX2), load average
#   bench_load                the load average now (1, 5, 15 minutes)
#
# Environment: LOAD_MAX (default 0.5), LOAD_WAIT (default 300), IDLE_PCT
# (default 90), IDLE_WAIT (default 120; 0 disables both waits), RUN_TIMEOUT
# (default 900 s per run), BENCH_VENV
# (default build/bench-venv), PYTHON (overrides the venv's python).
# The load average trails by a minute (a run just finished keeps it near 1
# on 2 cores), so between the runs of a table the instantaneous idle share
# decides; the load average is checked once per table and printed with it.

BENCH_ROOT=${BENCH_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BENCH_VENV=${BENCH_VENV:-$BENCH_ROOT/build/bench-venv}
LOAD_MAX=${LOAD_MAX:-0.5}
LOAD_WAIT=${LOAD_WAIT:-300}
IDLE_PCT=${IDLE_PCT:-90}
IDLE_WAIT=${IDLE_WAIT:-120}

bench_python() {
    if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"
    elif [ -x "$BENCH_VENV/bin/python" ]; then echo "$BENCH_VENV/bin/python"
    fi
}

bench_load() { cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "? ? ?"; }

bench_wait_load() {
    local tag=${1:-bench} start l1
    [ "$IDLE_WAIT" -gt 0 ] 2>/dev/null || return 0
    start=$(date +%s)
    while :; do
        l1=$(cut -d' ' -f1 /proc/loadavg)
        awk -v l="$l1" -v m="$LOAD_MAX" 'BEGIN { exit !(l < m) }' && return 0
        if [ $(($(date +%s) - start)) -ge "$LOAD_WAIT" ]; then
            echo "$tag: load average $(bench_load) still above $LOAD_MAX after ${LOAD_WAIT}s;" \
                 "running anyway: on a busy machine the figures are noise" >&2
            return 0
        fi
        sleep 5
    done
}

# Percent of CPU time idle over half a second, from /proc/stat.
bench_idle_pct() {
    local a b
    a=$(head -n 1 /proc/stat); sleep 0.5; b=$(head -n 1 /proc/stat)
    printf '%s\n%s\n' "$a" "$b" | awk '{ idle[NR] = $5 + $6; tot[NR] = 0
        for (i = 2; i <= NF; i++) tot[NR] += $i }
        END { d = tot[2] - tot[1]; printf "%d\n", (d > 0 ? 100 * (idle[2] - idle[1]) / d : 100) }'
}

bench_wait_idle() {
    local tag=${1:-bench} start
    [ "$IDLE_WAIT" -gt 0 ] 2>/dev/null && [ -r /proc/stat ] || return 0
    start=$(date +%s)
    while [ "$(bench_idle_pct)" -lt "$IDLE_PCT" ]; do
        if [ $(($(date +%s) - start)) -ge "$IDLE_WAIT" ]; then
            echo "$tag: cores still busy after ${IDLE_WAIT}s (load average $(bench_load));" \
                 "running anyway" >&2
            return 0
        fi
        sleep 1
    done
}

# bench_run CMD...: after bench_wait_idle, runs CMD with at most RUN_TIMEOUT
# seconds (default 900), its stdout appended to $BENCH_RAW (and stderr); a
# run that fails or overruns is reported and left out of the medians (on a
# loaded machine a 2-thread OpenMP run can crawl: every parallel region
# waits for the thread that was descheduled).
bench_run() {
    bench_wait_idle "${1##*/}"
    local rc=0
    timeout "${RUN_TIMEOUT:-900}" "$@" >"$BENCH_RAW.one" || rc=$?
    tee -a "$BENCH_RAW" <"$BENCH_RAW.one" >&2
    rm -f "$BENCH_RAW.one"
    if [ "$rc" != 0 ]; then
        echo "${1##*/}: $* failed or ran past RUN_TIMEOUT (status $rc); left out" >&2
    fi
    return 0
}

# bench_interleave N A... -- B...: A B A B ..., N pairs; output to $BENCH_RAW.
bench_interleave() {
    local n=$1 i=0; shift
    local a=() b=() in_b=0 x
    for x in "$@"; do
        if [ "$in_b" = 0 ] && [ "$x" = "--" ]; then in_b=1; continue; fi
        if [ "$in_b" = 0 ]; then a+=("$x"); else b+=("$x"); fi
    done
    while [ "$i" -lt "$n" ]; do
        bench_run "${a[@]}"
        bench_run "${b[@]}"
        i=$((i + 1))
    done
}

bench_median() {
    sort -g | awk '{ v[NR] = $1 } END { if (!NR) { print "nan"; exit }
        print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}

bench_isa() {
    local f isa=""
    f=$( (lscpu 2>/dev/null | sed -n 's/^Flags: *//p'; grep -m1 '^flags' /proc/cpuinfo 2>/dev/null) | tr ' ' '\n')
    for x in avx512f avx512_bf16 avx512_vnni amx_tile amx_bf16 amx_int8 avx2 fma; do
        printf '%s\n' "$f" | grep -qx "$x" && isa="$isa${isa:+ }$x"
    done
    echo "${isa:-none of avx2/avx512}"
}

bench_machine() {
    local model
    model=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)
    [ -n "$model" ] || model=$(sed -n 's/^model name[^:]*: *//p' /proc/cpuinfo | head -n 1)
    echo "CPU: ${model:-unknown}, $(getconf _NPROCESSORS_ONLN) CPUs; ISA: $(bench_isa); load average $(bench_load)"
}

# OpenBLAS 0.3.21 takes some newer Xeons for a "Prescott": give every
# implementation that uses the system OpenBLAS its best kernels.
bench_openblas_coretype() {
    if [ -z "${OPENBLAS_CORETYPE:-}" ]; then
        if grep -qw avx512f /proc/cpuinfo; then export OPENBLAS_CORETYPE=SkylakeX
        elif grep -qw avx2 /proc/cpuinfo; then export OPENBLAS_CORETYPE=Haswell
        fi
    fi
}
