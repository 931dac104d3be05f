#!/usr/bin/env bash
# Peak RSS and wall time of wal-push with 1 GiB WAL segments (initdb --wal-segsize=1024) against a
# local radosgw: compression zstd and none, look-ahead off (one segment) and on (two ready segments,
# the second uploaded by the first's wal-push in the same process). Every pushed segment is fetched
# back once and compared. Segments are fabricated with a valid long page header; FILL=random (the
# default: incompressible, so a compressed body held in memory would show in full) or FILL=zeros.
# Run as root from the repository root after `npm run build`:
#   bash scripts/bench/wal-1g.sh
# Environment: SEG_MIB (default 1024), FILL, DIST (another build to compare, e.g. an older
# dist/walvault.mjs), CEPH_MEMSTORE_BYTES (radosgw keeps objects in RAM; default 3 GiB here).
set -euo pipefail
cd "$(dirname "$0")/../.."
PATH="$(scripts/setup-node.sh):$PATH"
NODE=$(command -v node)
SEG_MIB=${SEG_MIB:-1024}
FILL=${FILL:-random}
DIST=${DIST:-$PWD/dist/walvault.mjs}
[ -f dist/walvault.mjs ] || npm run build >/dev/null
command -v /usr/bin/time >/dev/null || apt-get install -y -q time >/dev/null
export CEPH_MEMSTORE_BYTES=${CEPH_MEMSTORE_BYTES:-$((3 * 1024 * 1024 * 1024))}

WORK=$(mktemp -d /tmp/walvault-bench-1g-XXXX)
chmod 755 "$WORK"
cleanup() {
  scripts/test-servers/rgw-stop.sh "$WORK/rgw" --purge >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

eval "$(scripts/test-servers/rgw-start.sh "$WORK/rgw")"
export AWS_ENDPOINT_URL_S3=$S3_ENDPOINT AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY
export AWS_REGION=us-east-1 WALVAULT_S3_FORCE_PATH_STYLE=true AWS_EC2_METADATA_DISABLED=true
export WALVAULT_SPOOL=$WORK/spool WALVAULT_PREFETCH=0 WALVAULT_DEADLINE=600
s3() { "$NODE" --input-type=module -e "
import { S3Client, CreateBucketCommand, ListObjectsV2Command, DeleteObjectCommand } from '@aws-sdk/client-s3';
const c = new S3Client({ forcePathStyle: true });
if ('$1' === 'create') await c.send(new CreateBucketCommand({ Bucket: 'bench' }));
else for (const o of (await c.send(new ListObjectsV2Command({ Bucket: 'bench', Prefix: '${2:-}/wal/' }))).Contents ?? [])
  await c.send(new DeleteObjectCommand({ Bucket: 'bench', Key: o.Key }));"; }
s3 create

# Two ready segments in a pg_wal-like directory.
mkdir -p "$WORK/pg_wal/archive_status"
SEGS=$("$NODE" --input-type=module -e "
const { writeLargeSegment } = await import('$PWD/test/support/wal-fixtures.ts');
for (const n of [2, 3]) {
  const s = await writeLargeSegment('$WORK/pg_wal', n, { segSize: $SEG_MIB * 1024 * 1024, fill: '$FILL', seed: n });
  console.log(s.name);
}")
read -r A B <<<"$(echo $SEGS)"

printf '%-30s %10s %14s   %s\n' "${SEG_MIB} MiB segments, FILL=$FILL" "wall (s)" "peak RSS MiB" "result"
run=0
for codec in zstd none; do
  for la in 0 8; do
    run=$((run + 1))
    prefix="run$run"
    rm -f "$WORK"/pg_wal/archive_status/*
    touch "$WORK/pg_wal/archive_status/$A.ready"
    [ "$la" -gt 0 ] && touch "$WORK/pg_wal/archive_status/$B.ready"
    /usr/bin/time -f '%e %M' -o "$WORK/t" env WALVAULT_REPO="s3://bench/$prefix" WALVAULT_COMPRESSION=$codec WALVAULT_LOOKAHEAD=$la \
      "$NODE" "$DIST" wal-push "$WORK/pg_wal/$A" "$A" 2>"$WORK/err" || { cat "$WORK/err" >&2; exit 1; }
    read -r wall rss <"$WORK/t"
    printf '%-30s %10.1f %14.0f   %s\n' "$codec, look-ahead $([ "$la" -gt 0 ] && echo on || echo off)" "$wall" "$(echo "$rss / 1024" | bc -l)" \
      "$(grep -o 'pushed .*' "$WORK/err" | sed 's/ to s3:[^ ]*//' | head -c 120)"
    # Round trip of the foreground segment.
    WALVAULT_REPO="s3://bench/$prefix" "$NODE" "$DIST" wal-fetch "$A" "$WORK/fetched" 2>"$WORK/err" || { cat "$WORK/err" >&2; exit 1; }
    cmp -s "$WORK/pg_wal/$A" "$WORK/fetched" || { echo "fetched $A differs" >&2; exit 1; }
    rm -f "$WORK/fetched"
    s3 delete "$prefix" # memstore capacity
  done
done
