#!/usr/bin/env bash
# Base backups: walvault vs pgBackRest on one PostgreSQL 15 database (pgbench -i -s $SCALE; 150 is
# about 2.2 GiB) and one radosgw, in one run, every store access through one nginx TLS terminator
# (pgBackRest talks to S3 over TLS only):
#   baseline     pg_basebackup -Ft -D - -X none --checkpoint=fast > /dev/null (reads and sends, no
#                hashing, compression or upload): every time is also given as a ratio to it
#   full         walvault backup-push --method files --jobs 1/2/4, --method stream (one tar, for
#                reference); pgBackRest backup --type=full, process-max 1/2/4 x compress-type zst/lz4
#   incremental  after an UPDATE of one row in 1 % of pgbench_accounts' heap pages (CHECKPOINT'ed):
#                walvault backup-push --incremental (when `backup-push --help` lists it) against its
#                jobs-$INCR_JOBS full; pgBackRest --type=incr against its zst full at the same process-max
#   restore      of the full backups (walvault --jobs N files backup; pgBackRest zst, --process-max N,
#                both the bundle+block full and one with pgBackRest's defaults, "-plain": no bundles,
#                no block maps) into an empty directory, N in $RESTORE_JOBS
#   encrypted    (ENCRYPTION=1, the default) every walvault row again right after it, "wv-enc-...", on
#                a second repository encrypted with a keyring made for the run (encryptionKeyFile);
#                the summary gives the ratios wv-enc / wv
# Each row: wall time (EPOCHREALTIME around the command), peak RSS (GNU time %M: the largest single
# process of the command's tree, as for pgBackRest's local workers), CPU-seconds (GNU time %U + %S:
# the command and the children it waited for; not PostgreSQL's side, not the archiving), stored bytes (walvault
# backup-list storedBytes; pgBackRest info repository.delta). One run of each (the database takes
# minutes to build); run it twice to see the noise. pgBackRest uses repo-bundle + repo-block (block
# incremental needs both, and its docs recommend block for the full too; block is beta in 2.45: beta=y).
#
# Run as root (installs what is missing with apt-get on Debian 12), from a built tree or not:
#   bash scripts/bench/backup.sh                   # SCALE=150
#   SCALE=20 RESTORE_JOBS="1 4" bash scripts/bench/backup.sh
#   WALVAULT_DIST=/tmp/other-build/dist bash scripts/bench/backup.sh   # measure another build (this tree is not built)
#   TOOLS=walvault SCALE=50 RESTORE_JOBS=2 bash scripts/bench/backup.sh # walvault rows only (plain and encrypted)
# Work files under $W (default /tmp/walvault-bench-backup, removed at the end). Everything started
# listens on 127.0.0.1 and is stopped by PID on exit. Prints one markdown table (summarize-backup.mjs).
set -uo pipefail

REPO_ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BENCH=$REPO_ROOT/scripts/bench
W=${W:-/tmp/walvault-bench-backup}
SCALE=${SCALE:-150}
JOBS=${JOBS:-"1 2 4"}
RESTORE_JOBS=${RESTORE_JOBS:-"1 4"}
INCR_JOBS=${INCR_JOBS:-4}
TOOLS=${TOOLS:-"walvault pgbackrest"}
ENCRYPTION=${ENCRYPTION:-1}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
BUCKET=bench
export W PGBIN

# shellcheck source=lib.sh
source "$BENCH/lib.sh"

[[ $(id -u) == 0 ]] || die "run as root (PostgreSQL parts run as the postgres user)"
[[ $W == /tmp/* ]] || die "W must be under /tmp"
install_missing
PATH="$("$REPO_ROOT/scripts/setup-node.sh"):$PATH"
export PATH
NODE=$(command -v node)
has_tool() { [[ " $TOOLS " == *" $1 "* ]]; }
has_tool walvault || has_tool pgbackrest || die "TOOLS must name walvault, pgbackrest or both"
if [[ -z ${WALVAULT_DIST:-} ]]; then ( cd "$REPO_ROOT" && npm run build --silent >&2 ) || die "npm run build failed"; fi

rm -rf "$W"
mkdir -p "$W"
chmod 755 "$W"
RUN_ID=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$W/../walvault-bench-backup-results-$RUN_ID
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
chown postgres "$OUT"
RAW=$OUT/raw.tsv
: > "$RAW"
PGDATA=$W/pg/data

bench_cleanup() {
  log "cleanup"
  pg_stop "$PGDATA"
  if [[ -f $W/tls/nginx.pid ]]; then kill "$(cat "$W/tls/nginx.pid")" 2>/dev/null; rm -f "$W/tls/nginx.pid"; fi
  [[ -n ${RGW_STARTED:-} ]] && "$REPO_ROOT/scripts/test-servers/rgw-stop.sh" "$W/rgw" --purge >/dev/null 2>&1
  RGW_STARTED=
  rm -rf "$W"
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ servers
log "starting radosgw"
# memstore keeps objects in RAM: room for ~12 compressed copies of the database plus its WAL.
export CEPH_MEMSTORE_BYTES=${CEPH_MEMSTORE_BYTES:-8589934592}
eval "$("$REPO_ROOT/scripts/test-servers/rgw-start.sh" "$W/rgw")" || die "radosgw did not start"
RGW_STARTED=1
export AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY
TLS_PORT=$(free_port)
tls_start "$TLS_PORT" "${S3_ENDPOINT#http://}"
S3_URL=https://127.0.0.1:$TLS_PORT
export BENCH_S3_ENDPOINT=$S3_URL NODE_EXTRA_CA_CERTS=$W/tls/cert.pem
s3tool mkbucket "$BUCKET" >/dev/null || die "cannot create the bucket through $S3_URL"

install_walvault # WALVAULT_DIST: another build (e.g. a branch's dist/) instead of this tree's
PG_PORT=$(free_port)
# The walvault repositories: "wv", and "wv-enc" (the same, encrypted with a keyring made for this
# run) unless ENCRYPTION=0. Every walvault measurement runs on each in turn, one right after the other.
WV_REPOS=()
if has_tool walvault; then
  WV_REPOS=(wv)
  WV_CONF=$(walvault_conf wv "$W/conf/wv-spool")
  if ((ENCRYPTION)); then
    WV_REPOS+=(wv-enc)
    make_keyring "$W/conf/keyring"
    WV_ENC_CONF=$(walvault_conf wv-enc "$W/conf/wv-enc-spool" "$W/conf/keyring")
  fi
fi
wv_conf() { if [[ $1 == wv-enc ]]; then echo "$WV_ENC_CONF"; else echo "$WV_CONF"; fi; } # repository -> config file
wvc() { # repository -> WVC: the walvault command line for it
  WVC=(env AWS_EC2_METADATA_DISABLED=true PGHOST="$W/sock" PGPORT="$PG_PORT" PGUSER=postgres "$W/wv/walvault" --config "$(wv_conf "$1")")
}
wv() { local r=$1; shift; wvc "$r"; as_pg "${WVC[@]}" "$@"; } # repository args...
PGBR_CONF=$W/conf/pgbackrest/pgbackrest.conf
mkdir -p "$W/conf/pgbackrest/log" "$W/conf/pgbackrest/lock" "$W/conf/pgbackrest/spool"
cat > "$PGBR_CONF" <<EOF
[global]
repo1-type=s3
repo1-s3-endpoint=127.0.0.1
repo1-storage-port=$TLS_PORT
repo1-storage-verify-tls=n
repo1-s3-bucket=$BUCKET
repo1-s3-region=us-east-1
repo1-s3-key=$AWS_ACCESS_KEY_ID
repo1-s3-key-secret=$AWS_SECRET_ACCESS_KEY
repo1-s3-uri-style=path
repo1-path=/pgbackrest
repo1-retention-full=99
start-fast=y
beta=y
log-level-console=warn
log-path=$W/conf/pgbackrest/log
lock-path=$W/conf/pgbackrest/lock
spool-path=$W/conf/pgbackrest/spool

[bench]
pg1-path=$PGDATA
pg1-port=$PG_PORT
pg1-socket-path=$W/sock
EOF
chown -R postgres "$W/conf/pgbackrest"
chmod 600 "$PGBR_CONF"
PGBR=(pgbackrest --config="$PGBR_CONF" --stanza=bench)
PGBR_BLOCK=(--repo1-bundle --repo1-block) # on the command line: the -plain full runs without them
pgbr() { as_pg "${PGBR[@]}" "$@"; }

# ------------------------------------------------------------------ the database
log "initdb + pgbench -i -s $SCALE"
as_pg "$PGBIN/initdb" -D "$PGDATA" -N -U postgres --auth=trust >/dev/null || die initdb
# Every repository archives every segment: each backup waits for the segment that ends it in its own
# archive. The walvault repositories get it at the same time (one wal-push each, concurrently), so
# that neither's backups also wait for the other's push. pgBackRest's push comes after, in
# archive_command itself (pgBackRest refuses to back up unless archive_command names it).
{
  echo '#!/bin/sh'
  echo '# the walvault part of archive_command: $1 = %p, $2 = %f'
  echo 'rc=0 pids='
  for r in "${WV_REPOS[@]}"; do echo "$W/wv/walvault --config $(wv_conf "$r") wal-push \"\$1\" \"\$2\" & pids=\"\$pids \$!\""; done
  echo 'for p in $pids; do wait "$p" || rc=1; done'
  echo 'exit "$rc"'
} > "$W/conf/archive.sh"
chmod 755 "$W/conf/archive.sh"
ARCHIVE_CMD="$W/conf/archive.sh %p %f"
has_tool pgbackrest && ARCHIVE_CMD+=" && pgbackrest --config=$PGBR_CONF --stanza=bench archive-push %p"
cat >> "$PGDATA/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$W/sock'
wal_level = replica
archive_mode = on
archive_command = '$ARCHIVE_CMD'
max_wal_size = 8GB
checkpoint_timeout = 30min
synchronous_commit = off
shared_buffers = 256MB
log_line_prefix = '%m [%p] '
EOF
pg_start "$PGDATA" "$PG_PORT"
if has_tool pgbackrest; then pgbr stanza-create || die "pgbackrest stanza-create"; fi
as_pg "$PGBIN/pgbench" -h "$W/sock" -p "$PG_PORT" -i -s "$SCALE" -q postgres >/dev/null 2>&1 || die "pgbench -i"
psqlc "$PG_PORT" -c 'CHECKPOINT' -c 'SELECT pg_switch_wal()' >/dev/null
DB_BYTES=$(psqlc "$PG_PORT" -c 'SELECT sum(pg_database_size(oid)) FROM pg_database')
{
  echo "run $RUN_ID: pgbench -s $SCALE, $(awk -v b="$DB_BYTES" 'BEGIN{printf "%.0f MiB", b/1048576}') (sum of pg_database_size)"
  echo "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), load at start $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "walvault build: ${WALVAULT_DIST:-$REPO_ROOT/dist} ($(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null) in $REPO_ROOT)"
  echo "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'), $(pgbackrest version), node $("$NODE" --version), walvault $(as_pg "$W/wv/walvault" --version), radosgw via nginx TLS"
  echo "tools: $TOOLS$( ((ENCRYPTION)) && has_tool walvault && echo "; walvault also encrypted (wv-enc rows: the same command on a repository with encryptionKeyFile, run right after the wv row)")"
} > "$OUT/env.txt"
cat "$OUT/env.txt" >&2

# ------------------------------------------------------------------ measuring
# timed label kind command...: runs the command as postgres, one row in raw.tsv; its stdout goes to
# $OUT/<label>.out (or $TIMED_OUT), its stderr to $OUT/<label>.err
timed() {
  local label=$1 kind=$2; shift 2
  local t0 t1 rc
  log "$label: $*"
  sync
  t0=$EPOCHREALTIME
  as_pg /usr/bin/time -f '%M %U %S' -o "$OUT/$label.time" "$@" >"${TIMED_OUT:-$OUT/$label.out}" 2>"$OUT/$label.err"
  rc=$?
  t1=$EPOCHREALTIME
  ((rc == 0)) || { log "$label failed (exit $rc):"; tail -5 "$OUT/$label.err" >&2; }
  LAST_OK=$((rc == 0))
  LAST_ROW="$label	$kind	wall_s=$(ms_between "$t0" "$t1") $(tail -1 "$OUT/$label.time" | awk '{printf "rss_kib=%s cpu_s=%.2f", $1, $2 + $3}') ok=$LAST_OK"
}
emit() { printf '%s %s\n' "$LAST_ROW" "$*" >> "$RAW"; } # extra key=value pairs

wv_stored() { # id repository -> storedBytes sizeBytes type
  wv "$2" backup-list --json | "$NODE" -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const b=JSON.parse(s).find(x=>x.id===process.argv[1]);console.log(b?`${b.storedBytes} ${b.sizeBytes} ${b.type??"full"}`:"NA NA NA")})' "$1"
}
pgbr_newest() { # -> label delta size type
  pgbr info --output=json | "$NODE" -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const b=JSON.parse(s)[0].backup.at(-1);console.log(`${b.label} ${b.info.repository.delta} ${b.info.size} ${b.type}`)})'
}

TIMED_OUT=/dev/null timed baseline baseline "$PGBIN/pg_basebackup" -h "$W/sock" -p "$PG_PORT" -D - -Ft -X none --checkpoint=fast --no-password
emit "stored=0"

# Each walvault measurement runs on both repositories back to back, the first one alternating
# (turn), so that neither always runs right after the other's backup.
TURN=0
turn() { # -> ORDER: the repositories, reversed every other call
  TURN=$((TURN + 1))
  ORDER=("${WV_REPOS[@]}")
  if ((TURN % 2 == 0 && ${#ORDER[@]} > 1)); then mapfile -t ORDER < <(printf '%s\n' "${WV_REPOS[@]}" | tac); fi
}
declare -A WV_FULL=() # repository -> the id of its jobs-$INCR_JOBS full
turn
for r in "${ORDER[@]}"; do
  wvc "$r"
  timed "$r-stream" full "${WVC[@]}" backup-push --method stream
  read -r st sz _ <<<"$(wv_stored "$(tail -1 "$OUT/$r-stream.out")" "$r")"
  emit "stored=$st size=$sz"
done
for j in $JOBS; do
  turn
  for r in "${ORDER[@]}"; do
    wvc "$r"
    timed "$r-files-j$j" full "${WVC[@]}" backup-push --method files --jobs "$j"
    id=$(tail -1 "$OUT/$r-files-j$j.out")
    read -r st sz _ <<<"$(wv_stored "$id" "$r")"
    emit "stored=$st size=$sz jobs=$j"
    [[ $j == "$INCR_JOBS" ]] && ((LAST_OK)) && WV_FULL[$r]=$id
  done
done

# pgBackRest's defaults (no bundles, no block maps) once, for the restore comparison: with bundles
# its restore reads every small file with its own ranged GET.
PGBR_PLAIN=
PGBR_FULL=
if has_tool pgbackrest; then
  timed "pgbr-zst-p$INCR_JOBS-plain" full "${PGBR[@]}" backup --type=full --compress-type=zst --process-max="$INCR_JOBS"
  read -r lbl st sz _ <<<"$(pgbr_newest)"
  emit "stored=$st size=$sz jobs=$INCR_JOBS"
  ((LAST_OK)) && PGBR_PLAIN=$lbl

  for c in lz4 zst; do # zst last: the incremental builds on the newest backup
    for j in $JOBS; do
      timed "pgbr-$c-p$j" full "${PGBR[@]}" backup --type=full --compress-type="$c" --process-max="$j" "${PGBR_BLOCK[@]}"
      read -r lbl st sz _ <<<"$(pgbr_newest)"
      emit "stored=$st size=$sz jobs=$j"
      [[ $c == zst && $j == "$INCR_JOBS" ]] && ((LAST_OK)) && PGBR_FULL=$lbl
    done
  done
fi

# ------------------------------------------------------------------ incremental
# One row in each of 1 % of the heap pages; the new row versions land together at the table's end
# (fillfactor 100), the primary key gets one new entry per row.
log "changing 1 % of pgbench_accounts' pages"
CHANGED=$(psqlc "$PG_PORT" -c "WITH u AS (UPDATE pgbench_accounts SET abalance = abalance + 1
  WHERE (ctid::text::point)[0]::bigint % 100 = 0 AND (ctid::text::point)[1] = 1 RETURNING 1)
  SELECT count(*) || ' rows of ' || pg_relation_size('pgbench_accounts') / 8192 || ' pages' FROM u") || die "the UPDATE failed"
psqlc "$PG_PORT" -c 'CHECKPOINT' >/dev/null
psqlc "$PG_PORT" -c 'SELECT pg_switch_wal()' >/dev/null
echo "incremental after: UPDATE of one row in every 100th heap page of pgbench_accounts ($CHANGED)" >> "$OUT/env.txt"

turn
for r in "${ORDER[@]}"; do
  if [[ -n ${WV_FULL[$r]:-} ]] && wv "$r" backup-push --help 2>/dev/null | grep -q -- '--incremental'; then
    wvc "$r"
    timed "$r-incr" incr "${WVC[@]}" backup-push --method files --incremental --jobs "$INCR_JOBS"
    read -r st sz ty <<<"$(wv_stored "$(tail -1 "$OUT/$r-incr.out")" "$r")"
    emit "stored=$st size=$sz jobs=$INCR_JOBS type=$ty"
  else
    printf '%s-incr\tincr\tok=NA\n' "$r" >> "$RAW"
    log "walvault backup-push --incremental ($r): not available in this build, or no full to build on"
  fi
done
if [[ -n $PGBR_FULL ]]; then
  timed pgbr-zst-incr incr "${PGBR[@]}" backup --type=incr --compress-type=zst --process-max="$INCR_JOBS" "${PGBR_BLOCK[@]}"
  read -r lbl st sz ty <<<"$(pgbr_newest)"
  emit "stored=$st size=$sz jobs=$INCR_JOBS type=$ty"
fi

# ------------------------------------------------------------------ restore
for j in $RESTORE_JOBS; do
  turn
  for r in "${ORDER[@]}"; do
    [[ -n ${WV_FULL[$r]:-} ]] || continue
    D=$W/restore/$r-$j
    mkdir -p "$W/restore"; chown postgres "$W/restore"
    wvc "$r"
    timed "$r-restore-j$j" restore "${WVC[@]}" backup-fetch "${WV_FULL[$r]}" "$D" --jobs "$j" --target-immediate
    emit "jobs=$j bytes=$(du -sb "$D" | cut -f1)"
    rm -rf "$D"
  done
  for set in "$PGBR_FULL" "$PGBR_PLAIN"; do
    [[ -n $set ]] || continue
    D=$W/restore/pgbr-$j
    mkdir -p "$D"; chown -R postgres "$W/restore"; chmod 700 "$D"
    timed "pgbr-restore-p$j$([[ $set == "$PGBR_PLAIN" ]] && echo -plain)" restore "${PGBR[@]}" restore --set="$set" --pg1-path="$D" --process-max="$j" --type=immediate
    emit "jobs=$j bytes=$(du -sb "$D" | cut -f1)"
    rm -rf "$D"
  done
done

for r in "${WV_REPOS[@]}"; do # encrypted rows that stored readable objects would measure nothing
  read -r n sealed <<<"$(s3tool ciphers "$BUCKET" "$r/")"
  echo "repository $r: $sealed of $n objects carry cipher metadata (HEAD of each)" >> "$OUT/env.txt"
  [[ $r == wv-enc && $sealed != "$n" ]] && log "WARNING: the wv-enc repository holds $((n - sealed)) unencrypted objects"
done
echo "load at end $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/env.txt"
"$NODE" "$BENCH/summarize-backup.mjs" "$OUT" | tee "$OUT/table.md"
log "results: $OUT (raw.tsv, table.md, env.txt, per-command .out/.err/.time)"
