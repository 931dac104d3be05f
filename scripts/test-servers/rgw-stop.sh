#!/usr/bin/env bash
# Stop the radosgw/OSD/monitor started by rgw-start.sh STATE_DIR (their recorded PIDs only, so a
# second test run or a real Ceph on the same host is never touched).
# usage: rgw-stop.sh STATE_DIR [--purge]   (--purge also deletes STATE_DIR)
set -euo pipefail
STATE=${1:?usage: $0 STATE_DIR [--purge]}
RUN=$STATE/run
. "$(dirname "$0")/lib.sh"
# Order matters: rgw first (a client of the others), then the OSD (it tells the mon it is going
# down; with the mon gone first it would wait for its shutdown timeout), then the mon.
for s in rgw osd mon; do
  f=$RUN/$s.pid
  [ -f "$f" ] || continue
  p=$(cat "$f")
  if running "$p"; then stop_pid "$p"; fi
  rm -f "$f"
done
if [ "${2:-}" = "--purge" ]; then rm -rf "$STATE"; fi
echo "ceph-rgw stopped ($STATE)" >&2
