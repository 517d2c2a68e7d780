#!/usr/bin/env bash
# auth_overhead.sh - what authentication costs a served model: two fluxiond
# side by side, A in local mode (no tokens) and B with auth on (every call
# carries a bearer token that is hashed and checked), both serving
# examples/models/mlp.json; fluxion-bench serve runs A B A B ... and the
# medians of requests/s and p50 are printed with their ratio.
#
#   tests/bench/auth_overhead.sh [ROUNDS] [CONCURRENCY] [SECONDS]   (3 16 4)
set -euo pipefail
cd "$(dirname "$0")/../.."
B=${FX_BUILD_DIR:-build}
ROUNDS=${1:-3}; CONC=${2:-16}; SECS=${3:-4}
W=$(mktemp -d)
cleanup() { kill "${PA:-}" "${PB:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
"$B/fluxiond" --listen 127.0.0.1:0 --data-dir "$W/a" >"$W/a.out" 2>"$W/a.log" & PA=$!
"$B/fluxiond" --listen 127.0.0.1:0 --data-dir "$W/b" --init-admin-token "$W/b.token" \
  >"$W/b.out" 2>"$W/b.log" & PB=$!
for _ in $(seq 1 100); do
  grep -q '^listening on ' "$W/a.out" && grep -q '^listening on ' "$W/b.out" && break
  sleep 0.1
done
A=$(sed -n 's/^listening on //p' "$W/a.out"); BB=$(sed -n 's/^listening on //p' "$W/b.out")
TOK=$(cat "$W/b.token")
"$B/fluxion" --server "$A" model create examples/models/mlp.json >/dev/null
FLUXION_TOKEN=$TOK "$B/fluxion" --server "$BB" model create examples/models/mlp.json >/dev/null
for i in $(seq 1 "$ROUNDS"); do
  FLUXION_TOKEN= "$B/fluxion-bench" serve --server "$A" --model mlp --concurrency "$CONC" \
    --duration "$SECS" --warmup 1 | sed 's/^/A /' >>"$W/runs"
  FLUXION_TOKEN=$TOK "$B/fluxion-bench" serve --server "$BB" --model mlp --concurrency "$CONC" \
    --duration "$SECS" --warmup 1 | sed 's/^/B /' >>"$W/runs"
done
/usr/bin/python3 - "$W/runs" "$CONC" <<'PY'
import json, statistics, sys
runs = {"A": [], "B": []}
for line in open(sys.argv[1]):
    k, j = line.split(" ", 1)
    runs[k].append(json.loads(j))
med = {k: (statistics.median(r["requests_per_s"] for r in v),
           statistics.median(r["p50_us"] for r in v)) for k, v in runs.items()}
print("| daemon (mlp, concurrency %s) | requests/s | p50 us |" % sys.argv[2])
print("|---|---|---|")
print("| A local mode (no auth) | %.0f | %.0f |" % med["A"])
print("| B auth on, bearer token | %.0f | %.0f |" % med["B"])
print("| B / A | %.2f | %.2f |" % (med["B"][0] / med["A"][0], med["B"][1] / med["A"][1]))
PY
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
