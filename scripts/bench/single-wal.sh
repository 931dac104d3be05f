#!/usr/bin/env bash
# Single wal-push and wal-fetch of one real 16 MiB WAL segment against a local radosgw:
# wall time and peak RSS, median of N runs (default 5), next to `node -e 0` as the baseline.
# Each push goes to a fresh repository prefix, so every run is a real upload (not the
# already-archived path). Run as root from the repository root after `npm run build`:
#   bash scripts/bench/single-wal.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-5}
PATH="$(scripts/setup-node.sh):$PATH"
NODE=$(command -v node)
[ -f dist/walvault.mjs ] || npm run build >/dev/null
command -v /usr/bin/time >/dev/null || apt-get install -y -q time >/dev/null

WORK=$(mktemp -d /tmp/walvault-bench-XXXX)
chmod 755 "$WORK"
cleanup() {
  [ -f "$WORK/pg/postmaster.pid" ] && runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
  scripts/test-servers/rgw-stop.sh "$WORK/rgw" --purge >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
[ -n "${KEEP:-}" ] && trap - EXIT

eval "$(scripts/test-servers/rgw-start.sh "$WORK/rgw")"
export AWS_ENDPOINT_URL_S3=$S3_ENDPOINT AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY
export AWS_REGION=us-east-1 WALVAULT_S3_FORCE_PATH_STYLE=true AWS_EC2_METADATA_DISABLED=true WALVAULT_SPOOL=$WORK/spool
"$NODE" --input-type=module -e "
import { S3Client, CreateBucketCommand } from '@aws-sdk/client-s3';
await new S3Client({ forcePathStyle: true }).send(new CreateBucketCommand({ Bucket: 'bench' }));"

# A real, completed 16 MiB segment of pgbench WAL.
mkdir -p "$WORK/pg" && chown postgres "$WORK/pg"
runuser -u postgres -- /usr/lib/postgresql/15/bin/initdb -D "$WORK/pg" -A trust -U postgres --no-sync >/dev/null
runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$WORK/pg" -o "-c port=54399 -c listen_addresses='' -c unix_socket_directories='$WORK/pg'" -l "$WORK/pg/startup.log" -w start >/dev/null
PSQL=(runuser -u postgres -- psql -h "$WORK/pg" -p 54399 -U postgres -Atq)
runuser -u postgres -- /usr/lib/postgresql/15/bin/pgbench -h "$WORK/pg" -p 54399 -U postgres -i -s 3 -q postgres >/dev/null 2>&1
SEG=$("${PSQL[@]}" -c "SELECT pg_walfile_name(pg_current_wal_lsn() - 16777216)")
cp "$WORK/pg/pg_wal/$SEG" "$WORK/$SEG"

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
measure() { # label, command... -> "seconds maxrss_kb" lines in $WORK/<label>
  /usr/bin/time -f '%e %M' -o "$WORK/t" "${@:2}" >/dev/null 2>"$WORK/err" || { cat "$WORK/err" >&2; exit 1; }
  cat "$WORK/t" >> "$WORK/$1"
}
for i in $(seq "$RUNS"); do
  measure node "$NODE" -e 0
  measure push env WALVAULT_REPO="s3://bench/run$i" "$NODE" dist/walvault.mjs wal-push "$WORK/$SEG" "$SEG"
  measure fetch env WALVAULT_REPO="s3://bench/run$i" "$NODE" dist/walvault.mjs wal-fetch "$SEG" "$WORK/fetched$i"
  cmp -s "$WORK/$SEG" "$WORK/fetched$i" || { echo "fetched segment differs" >&2; exit 1; }
done
printf '%-34s %10s %12s\n' "median of $RUNS ($SEG, 16 MiB)" "wall (s)" "peak RSS MiB"
for l in node push fetch; do
  t=$(cut -d' ' -f1 "$WORK/$l" | median); m=$(cut -d' ' -f2 "$WORK/$l" | median)
  printf '%-34s %10.3f %12.1f\n' "$l" "$t" "$(echo "$m / 1024" | bc -l)"
done
