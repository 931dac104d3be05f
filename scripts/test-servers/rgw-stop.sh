#!/usr/bin/env bash
# Stop the radosgw/OSD/monitor started by rgw-start.sh STATE_DIR (their recorded PIDs only, so a
# second test run or a real Ceph on the same host is never touched).
# usage: rgw-stop.sh STATE_DIR [--purge]   (--purge also deletes STATE_DIR)
set -euo pipefail
STATE=${1:?usage: $0 STATE_DIR [--purge]}
RUN=$STATE/run
running() { kill -0 "$1" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
# Order matters: rgw first (a client of the others), then the OSD (it tells the mon it is going
# down; with the mon gone first it would wait for its shutdown timeout), then the mon.
for s in rgw osd mon; do
  f=$RUN/$s.pid
  [ -f "$f" ] || continue
  p=$(cat "$f")
  if running "$p"; then
    kill "$p" 2>/dev/null || true
    for _ in $(seq 100); do running "$p" || break; sleep 0.1; done
    if running "$p"; then kill -9 "$p" 2>/dev/null || true; fi
  fi
  rm -f "$f"
done
if [ "${2:-}" = "--purge" ]; then rm -rf "$STATE"; fi
echo "ceph-rgw stopped ($STATE)" >&2
