#!/usr/bin/env bash
# Memory and throughput of `walvault backup-push` on a >= 2 GiB database, against radosgw.
#
#   scripts/bench/backup-memory.sh [SCALE]        (run as root, from a built tree: npm run build)
#
# Creates a throw-away PostgreSQL 15 cluster (16 MiB WAL segments) with pgbench -i -s SCALE
# (default 150, about 2.2 GiB), starts radosgw (memstore, CEPH_MEMSTORE_BYTES default 6 GiB) with
# scripts/test-servers/rgw-start.sh, then measures on the same database:
#   1. pg_basebackup -D - -Ft -X none --checkpoint=fast > /dev/null   (the floor: no hashing,
#      compression or upload)
#   2. walvault backup-push with default settings (zstd, 16 MiB parts x 3) under /usr/bin/time -v
#   3. the same with WALVAULT_COMPRESSION=none (every byte goes over the wire)
# and prints peak RSS, wall time, MiB/s and the ratio to pg_basebackup. Everything it starts is
# stopped and removed at the end (also on failure).
set -euo pipefail

SCALE=${1:-150}
REPO_ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PG_BIN=/usr/lib/postgresql/15/bin
export CEPH_MEMSTORE_BYTES=${CEPH_MEMSTORE_BYTES:-6442450944}
[ "$(id -u)" = 0 ] || { echo "run as root (the cluster runs as postgres)" >&2; exit 1; }
[ -f "$REPO_ROOT/dist/walvault.mjs" ] || { echo "dist/walvault.mjs missing: npm run build" >&2; exit 1; }
NODE=$(command -v node)
"$NODE" -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>22||(a===22&&b>=15)?0:1)' ||
  NODE="$("$REPO_ROOT/scripts/setup-node.sh")/node"

WORK=$(mktemp -d /tmp/wv-bench-XXXXXX)
chmod 755 "$WORK"
PGDIR="$WORK/pg"
RGW_STATE="$WORK/rgw"
PORT=$(( 20000 + RANDOM % 20000 ))

cleanup() {
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PGDIR/data" stop -m immediate >/dev/null 2>&1 || true
  bash "$REPO_ROOT/scripts/test-servers/rgw-stop.sh" "$RGW_STATE" --purge >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

say() { printf '[bench] %s\n' "$*" >&2; }

# --------------------------------------------------------------------------- radosgw + bucket
say "starting radosgw (memstore $((CEPH_MEMSTORE_BYTES / 1024 / 1024)) MiB)"
eval "$(bash "$REPO_ROOT/scripts/test-servers/rgw-start.sh" "$RGW_STATE")"
BUCKET=wv-bench-$(date +%s)
(cd "$REPO_ROOT" && S3_ENDPOINT=$S3_ENDPOINT S3_ACCESS_KEY=$S3_ACCESS_KEY S3_SECRET_KEY=$S3_SECRET_KEY BUCKET=$BUCKET "$NODE" --input-type=module -e '
  import { S3Client, CreateBucketCommand } from "@aws-sdk/client-s3";
  const c = new S3Client({ endpoint: process.env.S3_ENDPOINT, region: "us-east-1", forcePathStyle: true,
    credentials: { accessKeyId: process.env.S3_ACCESS_KEY, secretAccessKey: process.env.S3_SECRET_KEY } });
  await c.send(new CreateBucketCommand({ Bucket: process.env.BUCKET }));
')

# A copy of the bundle and Node that postgres can run (the repo may sit in an unreadable home).
install -d -m 755 "$WORK/bin"
cp -r "$REPO_ROOT/dist" "$WORK/bin/dist"
cp "$NODE" "$WORK/bin/node"
chmod -R a+rX "$WORK/bin"
WALVAULT="$WORK/bin/node $WORK/bin/dist/walvault.mjs"
CONFIG="$WORK/walvault.json"
cat > "$CONFIG" <<JSON
{ "repo": "s3://$BUCKET/bench", "s3Endpoint": "$S3_ENDPOINT", "s3Region": "us-east-1", "s3ForcePathStyle": true,
  "s3AccessKeyId": "$S3_ACCESS_KEY", "s3SecretAccessKey": "$S3_SECRET_KEY", "spool": "$WORK/spool" }
JSON
install -d -o postgres -m 700 "$WORK/spool"
chown postgres "$CONFIG"

# --------------------------------------------------------------------------- PostgreSQL
install -d -o postgres -m 700 "$PGDIR"
say "initdb + pgbench -i -s $SCALE"
runuser -u postgres -- "$PG_BIN/initdb" -D "$PGDIR/data" --auth=trust -U postgres --no-sync --no-instructions >/dev/null
cat >> "$PGDIR/data/postgresql.conf" <<CONF
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$PGDIR'
shared_buffers = 256MB
max_wal_size = 8GB
synchronous_commit = off
archive_mode = on
archive_command = '/bin/true'
CONF
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/log" -w start >/dev/null
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres PGDATABASE=postgres
"$PG_BIN/pgbench" -i -s "$SCALE" -q >/dev/null 2>&1
"$PG_BIN/psql" -qAtX -c 'CHECKPOINT'
# From here on WAL goes to the repository through walvault (the loading WAL was thrown away).
"$PG_BIN/psql" -qAtX -c "ALTER SYSTEM SET archive_command = 'AWS_EC2_METADATA_DISABLED=true $WALVAULT --config $CONFIG wal-push %p %f'" -c 'SELECT pg_reload_conf()' >/dev/null
sleep 1
"$PG_BIN/psql" -qAtX -c 'SELECT pg_switch_wal()' >/dev/null
DBSIZE=$("$PG_BIN/psql" -qAtX -c 'SELECT sum(pg_database_size(oid)) FROM pg_database')
say "cluster size $((DBSIZE / 1024 / 1024)) MiB"

# --------------------------------------------------------------------------- measurements
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
now() { date +%s.%N; }

say "pg_basebackup -Ft -D - > /dev/null"
T0=$(now)
"$PG_BIN/pg_basebackup" -D - -Ft -X none --checkpoint=fast --no-password > /dev/null 2>"$WORK/pgbb.err"
T1=$(now)
PGBB_SECS=$(awk -v a="$T0" -v b="$T1" 'BEGIN { printf "%.2f", b - a }')

run_push() { # $1 = label, rest = env
  local label=$1; shift
  say "walvault backup-push ($label)"
  env "$@" AWS_EC2_METADATA_DISABLED=true /usr/bin/time -v -o "$WORK/time.$label" \
    $WALVAULT --config "$CONFIG" backup-push > "$WORK/id.$label" 2> "$WORK/push.$label.err" || {
      cat "$WORK/push.$label.err" >&2; exit 1; }
  local id rss wall
  id=$(cat "$WORK/id.$label")
  rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$WORK/time.$label")
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { print $2 }' "$WORK/time.$label" | awk -F: '{ s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; print s }')
  local json
  json=$($WALVAULT --config "$CONFIG" backup-list --json)
  local size stored
  size=$(printf '%s' "$json" | "$NODE" -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const b=JSON.parse(s).find(x=>x.id===process.argv[1]);console.log(b.sizeBytes)})' "$id")
  stored=$(printf '%s' "$json" | "$NODE" -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const b=JSON.parse(s).find(x=>x.id===process.argv[1]);console.log(b.storedBytes)})' "$id")
  printf '%-22s peak RSS %6.1f MiB | %7.2f s | tar %8s MiB -> stored %8s MiB | %7.1f MiB/s | %.2fx pg_basebackup time\n' \
    "backup-push ($label)" "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')" "$wall" "$(mib "$size")" "$(mib "$stored")" \
    "$(awk -v b="$size" -v s="$wall" 'BEGIN { print b / 1048576 / s }')" "$(awk -v a="$wall" -v b="$PGBB_SECS" 'BEGIN { print a / b }')"
  TAR_BYTES=$size
}

RESULTS=$WORK/results
{
  echo "database: pgbench -s $SCALE, $(mib "$DBSIZE") MiB (sum of pg_database_size); PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'); $(nproc) cores"
  run_push zstd
  printf '%-22s %20s | %7.2f s | tar %8s MiB                          | %7.1f MiB/s\n' "pg_basebackup > null" "" "$PGBB_SECS" \
    "$(mib "$TAR_BYTES")" "$(awk -v b="$TAR_BYTES" -v s="$PGBB_SECS" 'BEGIN { print b / 1048576 / s }')"
  run_push none WALVAULT_COMPRESSION=none
} | tee "$RESULTS"
