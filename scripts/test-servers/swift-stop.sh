#!/usr/bin/env bash
# Stop the Swift+s3api servers started by swift-start.sh STATE_DIR. Only the PIDs recorded in
# STATE_DIR/run are signalled, so another test run or a packaged Swift is never touched.
# usage: swift-stop.sh STATE_DIR [--purge]   (--purge also deletes STATE_DIR)
set -euo pipefail
STATE=${1:?usage: $0 STATE_DIR [--purge]}
RUN=$STATE/run
. "$(dirname "$0")/lib.sh"
# Signal all first, then wait: the servers are independent, so they shut down in parallel.
pids=()
for s in proxy object container account memcached; do
  f=$RUN/$s.pid
  [ -f "$f" ] || continue
  p=$(cat "$f")
  if running "$p"; then kill "$p" 2>/dev/null || true; pids+=("$p"); fi
  rm -f "$f"
done
for p in "${pids[@]}"; do wait_or_kill "$p"; done
if [ "${2:-}" = "--purge" ]; then rm -rf "$STATE"; fi
echo "swift-s3 stopped ($STATE)" >&2
