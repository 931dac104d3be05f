#!/usr/bin/env bash
# Soak test (not part of CI, which runs the 60 s variant): PostgreSQL 15 under pgbench for N minutes
# with archive_command = walvault, whose S3 endpoint is the fault proxy (test/support/fault-proxy.ts)
# in front of a local radosgw, injecting random faults (503 SlowDown, resets mid-body, stalls, lost
# responses, 500s). Afterwards, faults off, it checks that every segment PostgreSQL archived is in the
# store, without a gap, with the local segment's SHA-256, and prints minutes, segments archived,
# faults injected and segments lost (must be 0).
#
# usage: scripts/soak/run.sh [minutes] [seed]     (default 10 minutes)
#   WALVAULT_SOAK_RATE=<tps>   pgbench -R (default 250: about 1.5 segments/s of 1 MiB)
#   WALVAULT_SOAK_SUMMARY=<file>  also write the summary as JSON there (default soak-summary.json)
# Needs root (or a postgres-capable user), PostgreSQL 15 and radosgw as installed by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/../.."
minutes="${1:-10}"
seed="${2:-$(date +%s)}"
case "$minutes" in ''|*[!0-9.]*) echo "usage: $0 [minutes] [seed]" >&2; exit 2 ;; esac

PATH="$(scripts/setup-node.sh):$PATH"
export PATH
[ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error
npm run build --silent

seconds=$(node -e "console.log(Math.round(Number(process.argv[1]) * 60))" "$minutes")
export WALVAULT_SOAK_SECONDS="$seconds"
export WALVAULT_SOAK_SEED="$seed"
export WALVAULT_SOAK_SUMMARY="${WALVAULT_SOAK_SUMMARY:-$PWD/soak-summary.json}"
export WALVAULT_SOAK_DRAIN_TIMEOUT="${WALVAULT_SOAK_DRAIN_TIMEOUT:-600}"
export WALVAULT_TEST_STORES=rgw
echo "soak: ${minutes} min of pgbench (seed ${seed}), summary in ${WALVAULT_SOAK_SUMMARY}"
status=0
npx vitest run --project integration test/integration/soak-short.test.ts || status=$?
if [ -f "$WALVAULT_SOAK_SUMMARY" ]; then
  node -e '
    const s = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    console.log(`soak: ${s.minutes} min, ${s.segmentsArchived} segments archived, ${s.faultsInjected} faults injected ` +
      `(${Object.entries(s.faultsByRule).map(([k, v]) => `${k} ${v}`).join(", ")}), archiver failures ${s.archiverFailedCount}, ` +
      `segments lost ${s.segmentsLost}`);
  ' "$WALVAULT_SOAK_SUMMARY"
fi
exit "$status"
