#!/usr/bin/env bash
# serve_while_training.sh - inference before training (issue 13): serving
# latency while a training job runs on the same device (the CPU here), with
# fluxiond --inference-first on and off, against serving alone and training
# alone. Not a timed test: a benchmark whose table goes in the README.
#
# Two daemons, ON (--inference-first on) and OFF (--inference-first off),
# each serving examples/models/mlp.json and holding the blobs dataset and
# model of examples/jobs/ (mlp-blobs.json, made to outlast the measurement:
# epochs 100000, rare checkpoints, not served when done). Per round, for
# each concurrency C, one after another (interleaved, so a change in the
# machine's load spreads over every row):
#   alone  fluxion-bench serve on ON with no job running
#   on     the same while a job trains on ON
#   off    the same while a job trains on OFF
# and once per round "training alone": a job on ON, then on OFF, with no
# requests (each mode's job is compared with its own daemon's: the
# difference between the two is what the yield's checks cost a job). A job
# is submitted for each measurement and cancelled after it (so no job runs
# outside its own row). The job's samples/s is its steps over the
# measurement (from its PROGRESS events' step and unix_ms) times its batch
# size. Prints the medians over the rounds as a markdown table and the load
# average.
#
#   tests/bench/serve_while_training.sh [ROUNDS] [SECONDS] [CONCURRENCIES]   (3 4 "1 4 16")
set -euo pipefail
cd "$(dirname "$0")/../.."
B=${FX_BUILD_DIR:-build}
ROUNDS=${1:-3}; SECS=${2:-4}; CONCS=${3:-"1 4 16"}
W=$(mktemp -d)
cleanup() {
  kill "${PON:-}" "${POFF:-}" "${WPID:-}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

start_daemon() { # NAME FLAG -> pid in $W/NAME.pid, address in $W/NAME.addr
  "$B/fluxiond" --listen 127.0.0.1:0 --data-dir "$W/$1" --inference-first "$2" \
    >"$W/$1.out" 2>"$W/$1.log" &
  echo $! >"$W/$1.pid"
}
start_daemon on on; PON=$(cat "$W/on.pid")
start_daemon off off; POFF=$(cat "$W/off.pid")
for _ in $(seq 1 100); do
  grep -q '^listening on ' "$W/on.out" && grep -q '^listening on ' "$W/off.out" && break
  sleep 0.1
done
ON=$(sed -n 's/^listening on //p' "$W/on.out"); OFF=$(sed -n 's/^listening on //p' "$W/off.out")
[ -n "$ON" ] && [ -n "$OFF" ] || { echo "a daemon did not start" >&2; cat "$W"/*.log >&2; exit 1; }

/usr/bin/python3 examples/jobs/make_blobs.py "$W/blobs.safetensors" --samples 8192 >/dev/null
/usr/bin/python3 - examples/jobs/mlp-blobs.json "$W/job.json" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
j.update(epochs=100000, checkpoint_every_steps=1000000, serve_when_done=False)
json.dump(j, open(sys.argv[2], "w"))
PY
BATCH=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["batch_size"])' "$W/job.json")
for S in "$ON" "$OFF"; do
  "$B/fluxion" --server "$S" model create examples/models/mlp.json >/dev/null
  "$B/fluxion" --server "$S" dataset upload blobs "$W/blobs.safetensors" >/dev/null
  "$B/fluxion" --server "$S" model create examples/jobs/mlp-blobs-model.json >/dev/null
done

now_ms() { date +%s%3N; }

# job_start SERVER -> job id in $JOB, its events going to $W/watch.$JOB;
# returns once the job reports progress (it is training).
job_start() {
  JOB=$("$B/fluxion" --server "$1" --json train submit "$W/job.json" |
        /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  "$B/fluxion" --server "$1" --json job watch "$JOB" >"$W/watch.$JOB" 2>/dev/null &
  WPID=$!
  for _ in $(seq 1 100); do
    grep -qs '"PROGRESS"' "$W/watch.$JOB" && break
    sleep 0.1
  done
  sleep 0.5
}
job_stop() { # SERVER
  "$B/fluxion" --server "$1" job cancel "$JOB" >/dev/null
  wait "$WPID" 2>/dev/null || true # the watch ends with the job
}
# job_rate T0 T1 -> the job's samples/s over [T0, T1] (ms since the epoch)
job_rate() {
  /usr/bin/python3 - "$W/watch.$JOB" "$1" "$2" "$BATCH" <<'PY'
import json, sys
path, t0, t1, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
pts = []
for line in open(path):
    e = json.loads(line)
    if e.get("kind") == "PROGRESS":
        pts.append((int(e["unixMs"] if "unixMs" in e else e["unix_ms"]),
                    int(e["job"]["progress"].get("step", 0))))
# the reports that bracket the window: the last at or before t0, the first at or after t1
a = max((p for p in pts if p[0] <= t0), default=pts[0])
b = min((p for p in pts if p[0] >= t1), default=pts[-1])
print("%.0f" % ((b[1] - a[1]) * batch / ((b[0] - a[0]) / 1000.0)) if b[0] > a[0] else "nan")
PY
}
serve() { # SERVER C -> one JSON line
  "$B/fluxion-bench" serve --server "$1" --model mlp --concurrency "$2" --duration "$SECS" \
    --warmup 1
}

for r in $(seq 1 "$ROUNDS"); do
  for C in $CONCS; do
    echo "alone $C $(serve "$ON" "$C")" >>"$W/runs"
    for M in on off; do
      S=$ON; [ "$M" = off ] && S=$OFF
      job_start "$S"
      t0=$(now_ms); res=$(serve "$S" "$C"); t1=$(now_ms)
      sleep 0.6 # a progress report after the window
      echo "$M $C $res $(job_rate "$t0" "$t1")" >>"$W/runs"
      job_stop "$S"
    done
  done
  for M in on off; do
    S=$ON; [ "$M" = off ] && S=$OFF
    job_start "$S"
    t0=$(now_ms); sleep $((SECS + 1)); t1=$(now_ms)
    sleep 0.6
    echo "train-$M 0 {} $(job_rate "$t0" "$t1")" >>"$W/runs"
    job_stop "$S"
  done
  echo "round $r done, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
done

/usr/bin/python3 - "$W/runs" "$ROUNDS" "$SECS" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    mode, c, rest = line.split(" ", 2)
    dec, end = json.JSONDecoder().raw_decode(rest)
    rate = rest[end:].strip()
    rows.setdefault((mode, int(c)), []).append((dec, float(rate) if rate else None))
med = lambda xs: statistics.median(xs) if xs else float("nan")
train = {m: med([x[1] for x in rows.get(("train-" + m, 0), [])]) for m in ("on", "off")}
print("Serving examples/models/mlp.json (fluxion-bench serve, %s s per run) while"
      " examples/jobs/mlp-blobs.json trains on the same CPU; medians of %s"
      " interleaved rounds." % (sys.argv[3], sys.argv[2]))
print()
print("| concurrency | serving | req/s | p50 us | p99 us | p99 vs alone | job samples/s | job vs training alone |")
print("|---|---|---|---|---|---|---|---|")
for c in sorted({c for (_, c) in rows if c}):
    alone = rows.get(("alone", c), [])
    a99 = med([x[0]["p99_us"] for x in alone])
    for mode, label in (("alone", "alone"), ("on", "training, --inference-first on"),
                        ("off", "training, --inference-first off")):
        rs = rows.get((mode, c), [])
        if not rs:
            continue
        rps = med([x[0]["requests_per_s"] for x in rs])
        p50 = med([x[0]["p50_us"] for x in rs])
        p99 = med([x[0]["p99_us"] for x in rs])
        job = med([x[1] for x in rs if x[1] is not None and x[1] == x[1]]) if mode != "alone" else None
        print("| %d | %s | %.0f | %.0f | %.0f | %.2fx | %s | %s |" % (
            c, label, rps, p50, p99, p99 / a99,
            "%.0f" % job if job else "-", "%.2f" % (job / train[mode]) if job else "-"))
for m in ("on", "off"):
    print("| - | none: training alone, --inference-first %s | - | - | - | - | %.0f | 1.00 |"
          % (m, train[m]))
PY
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
