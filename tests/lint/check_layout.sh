#!/usr/bin/env bash
# check_layout.sh - the house rules of server/ (README "Layout"), checked by
# grep so that a violation fails the suite:
#   - only server/rpc/ includes gRPC, only server/store/ includes sqlite3.h,
#     only server/main.c includes uv.h;
#   - the domain folders (base, store, models, serving, datasets, training, auth,
#     sched, metrics, onnx, peers, comm) never include api/ or rpc/ headers;
#   - base/ includes nothing from the other folders; sched/ (the scheduler's
#     pure core) and metrics/ (the exposition writer) include only base/;
#   - no server source file is over MAX_LINES lines.
set -u
cd "$(dirname "$0")/../.."
MAX_LINES=${MAX_LINES:-800}
bad=0
fail() { echo "check_layout: $*" >&2; bad=1; }

while IFS= read -r f; do
  case "$f" in server/rpc/*) ;; *) fail "$f includes gRPC (only server/rpc/ may)";; esac
done < <(grep -rlE '#\s*include\s*<grpc/' server --include='*.[ch]')
while IFS= read -r f; do
  case "$f" in server/store/*) ;; *) fail "$f includes sqlite3.h (only server/store/ may)";; esac
done < <(grep -rlE '#\s*include\s*[<"]sqlite3\.h' server --include='*.[ch]')
while IFS= read -r f; do
  [ "$f" = server/main.c ] || fail "$f includes uv.h (only server/main.c may)"
done < <(grep -rlE '#\s*include\s*[<"]uv\.h' server --include='*.[ch]')
for d in base store models serving datasets training auth sched metrics onnx peers comm; do
  [ -d "server/$d" ] || continue
  grep -rnE '#\s*include\s*"(api|rpc)/' "server/$d" --include='*.[ch]' |
    while IFS= read -r hit; do echo "check_layout: $hit (a domain folder includes api/ or rpc/)" >&2; done
  grep -rqE '#\s*include\s*"(api|rpc)/' "server/$d" --include='*.[ch]' && bad=1
done
if grep -rnE '#\s*include\s*"(api|rpc|store|models|serving|datasets|training|auth|sched)/' server/base --include='*.[ch]' >/dev/null; then
  grep -rnE '#\s*include\s*"(api|rpc|store|models|serving|datasets|training|auth|sched)/' server/base --include='*.[ch]' >&2
  fail "server/base/ includes another server folder (base depends on nothing)"
fi
if grep -rnE '#\s*include\s*"[a-z]+/' server/sched --include='*.[ch]' | grep -vE '"(base|sched)/' >&2; then
  fail "server/sched/ includes a folder other than base/ (the core is pure)"
fi
if grep -rnE '#\s*include\s*"[a-z]+/' server/metrics --include='*.[ch]' | grep -vE '"(base|metrics)/' >&2; then
  fail "server/metrics/ includes a folder other than base/ (the writer is pure)"
fi
while read -r n f; do
  [ "$f" = total ] && continue
  [ "$n" -gt "$MAX_LINES" ] && fail "$f has $n lines (over $MAX_LINES: split it into modules)"
done < <(find server -name '*.[ch]' -print0 | xargs -0 wc -l)
[ $bad = 0 ] && echo "check_layout: server/ keeps the house rules"
exit $bad
