# shellcheck shell=bash
# Helpers for scripts/bench/run.sh (sourced). Everything started here is recorded in $W/pids-* and
# stopped by PID in cleanup().

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }
record() { local cfg=$1 test=$2 rep=$3; shift 3; printf '%s\t%s\t%s\t%s\n' "$cfg" "$test" "$rep" "$*" >> "$RAW"; }

install_missing() {
  local need=()
  [[ -x $PGBIN/postgres ]] || need+=(postgresql-15 postgresql-client-15)
  command -v pgbackrest >/dev/null || need+=(pgbackrest)
  command -v nginx >/dev/null || need+=(nginx)
  command -v openssl >/dev/null || need+=(openssl)
  command -v curl >/dev/null || need+=(curl)
  [[ -x /usr/bin/time ]] || need+=(time)
  command -v npm >/dev/null || need+=(npm)
  if ((${#need[@]})); then
    log "apt-get install ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null ||
      die "apt-get install ${need[*]} failed"
  fi
  id postgres >/dev/null 2>&1 || die "no postgres user (install postgresql-15)"
}

free_port() {
  node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# A clean environment, as PostgreSQL's own: nothing of the caller's (AWS_CA_BUNDLE, AWS_*...) leaks in.
as_pg() { runuser -u postgres -- env -i HOME="$W/home" PATH="$PGBIN:/usr/local/bin:/usr/bin:/bin" LANG=C.UTF-8 "$@"; }
AS_PG=(runuser -u postgres -- env -i HOME="$W/home" PATH="$PGBIN:/usr/local/bin:/usr/bin:/bin" LANG=C.UTF-8)
psqlc() { local port=$1; shift; as_pg "$PGBIN/psql" -X -q -A -t -h "$W/sock" -p "$port" -d postgres -v ON_ERROR_STOP=1 "$@"; }
pg_start() { # datadir port [-W]
  as_pg "$PGBIN/pg_ctl" -D "$1" -o "-p $2" -l "$1.log" -t 600 "${3:--w}" start >/dev/null ||
    { tail -20 "$1.log" >&2; die "pg_ctl start $1"; }
}
# CPU cost: pg_start_cpu starts the cluster under cpu-reaper.pl (a child subreaper, see there), so
# the CPU time of the postmaster and everything under it - backends, the archiver or startup
# process, their archive_command/restore_command children, and whatever those leave running
# (walvault's look-ahead/prefetch workers, pgBackRest's async processes) - is summed once the last
# of them has exited. Blind spots: the store side (nginx TLS, radosgw) is not counted; kernel work
# not charged to a task (page-cache writeback by kworkers, softirq) is not counted; PostgreSQL's own
# share in the window (start-up, checkpointer, the polling backend, WAL replay in a restore) is
# counted for every configuration alike: the `floor` row is that baseline plus a plain cp.
pg_start_cpu() { # datadir port cpu-file [-W]
  rm -f "$3" "$3.rc"
  perl "$BENCH/cpu-reaper.pl" "$3" "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$1" -o "-p $2" -l "$1.log" -t 600 "${4:--w}" start \
    >/dev/null 2>&1 </dev/null &
  REAPER_PID=$!
  local i
  for i in $(seq 6000); do [[ -f $3.rc ]] && break; sleep 0.1; done
  [[ $(cat "$3.rc" 2>/dev/null) == 0 ]] || { tail -20 "$1.log" >&2; die "pg_ctl start $1"; }
}
# After the cluster stopped and kill_workers: CPU= the reaper's CPU-seconds, or NA if something is
# still running after 60 s (the reaper then finishes on its own; its number is not used). The reaper
# writes its file only once the last descendant is gone.
reaper_cpu() { # cpu-file
  local i
  CPU=NA
  for i in $(seq 600); do [[ -f $1 ]] && break; sleep 0.1; done
  if [[ ! -f $1 ]]; then log "cpu: processes left after 60 s, not counted"; return; fi
  wait "$REAPER_PID" 2>/dev/null
  CPU=$(sed -n 's/^cpu_s=\([0-9.]*\).*/\1/p' "$1")
}
pg_stop() { [[ -f $1/postmaster.pid ]] && as_pg "$PGBIN/pg_ctl" -D "$1" -m fast -w -t 120 stop >/dev/null 2>&1; return 0; }
s3tool() { ( cd "$BENCH/node" && NODE_NO_WARNINGS=1 node s3-tool.mjs "$@" ); }
# the raw SDK process's CPU-seconds (user+system, GNU time) into $1; one process, no children
s3tool_cpu() { local f=$1; shift; ( cd "$BENCH/node" && NODE_NO_WARNINGS=1 /usr/bin/time -f '%U %S' -o "$f.t" node s3-tool.mjs "$@" ) &&
  awk '{printf "%.3f\n", $1+$2}' "$f.t" > "$f"; }
ms_between() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.4f", b-a}'; }

cleanup() {
  log "cleanup"
  local d
  for d in "$W/pg/trial" "$W/pg/restore" "$W/template/data"; do pg_stop "$d"; done
  kill_workers
  # the per-run copies (gigabytes); the WAL template stays for the next run
  rm -rf "$W/pg/trial" "$W/pg/restore" "$W/fp" "$W/rawget" "$W/floor"
  rm -f "$W/conf/keyring-${RUN_ID:-none}"
  if [[ -f $W/tls/nginx.pid ]]; then kill "$(cat "$W/tls/nginx.pid")" 2>/dev/null; rm -f "$W/tls/nginx.pid"; fi
  [[ -n ${RGW_STARTED:-} ]] && "$REPO_ROOT/scripts/test-servers/rgw-stop.sh" "$W/rgw" --purge >/dev/null 2>&1
  RGW_STARTED=
}

# ------------------------------------------------------------------ TLS terminator
tls_start() { # port upstream-host:port
  mkdir -p "$W/tls/tmp"
  if [[ ! -s $W/tls/cert.pem ]]; then
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$W/tls/key.pem" -out "$W/tls/cert.pem" -days 30 \
      -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" 2>/dev/null || die "openssl"
    chmod 644 "$W/tls/cert.pem"
  fi
  cat > "$W/tls/nginx.conf" <<EOF
daemon off;
user root;
worker_processes 2;
pid $W/tls/nginx.pid;
error_log $W/tls/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $W/tls/tmp/body;
  proxy_temp_path $W/tls/tmp/proxy;
  fastcgi_temp_path $W/tls/tmp/fastcgi;
  uwsgi_temp_path $W/tls/tmp/uwsgi;
  scgi_temp_path $W/tls/tmp/scgi;
  upstream rgw { server $2; keepalive 32; }
  server {
    listen 127.0.0.1:$1 ssl;
    ssl_certificate $W/tls/cert.pem;
    ssl_certificate_key $W/tls/key.pem;
    client_max_body_size 0;
    proxy_request_buffering off;
    proxy_buffering off;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host \$http_host;
    proxy_read_timeout 300s;
    location / { proxy_pass http://rgw; }
  }
}
EOF
  setsid nginx -c "$W/tls/nginx.conf" -p "$W/tls" </dev/null >"$W/tls/nginx.out" 2>&1 &
  local i
  for i in $(seq 50); do
    curl -sk -o /dev/null "https://127.0.0.1:$1/" && return 0
    sleep 0.1
  done
  cat "$W/tls/error.log" "$W/tls/nginx.out" >&2
  die "nginx did not start"
}

# ------------------------------------------------------------------ walvault install
# WALVAULT_DIST: another build's dist/ (a branch's, an older one) instead of this tree's.
install_walvault() {
  rm -rf "$W/wv"
  mkdir -p "$W/wv" "$W/home" "$W/sock" "$W/conf" "$W/pg"
  cp -r "${WALVAULT_DIST:-$REPO_ROOT/dist}" "$W/wv/dist" || die "cannot copy ${WALVAULT_DIST:-$REPO_ROOT/dist}"
  chmod -R a+rX "$W/wv"
  "$REPO_ROOT/scripts/make-wrapper.sh" "$NODE" "$W/wv/dist/walvault.mjs" > "$W/wv/walvault"
  chmod 755 "$W/wv/walvault"
  chown postgres "$W/home" "$W/sock" "$W/conf" "$W/pg"
  as_pg "$W/wv/walvault" --version >/dev/null || die "the postgres user cannot run $W/wv/walvault (node at $NODE)"
}

walvault_conf() { # prefix spool [keyring] -> path of a config file (with a keyring: encrypted)
  local f=$W/conf/walvault-$RANDOM$RANDOM.json enc=
  [[ -n ${3:-} ]] && enc=", \"encryptionKeyFile\": \"$3\""
  cat > "$f" <<EOF
{ "repo": "s3://$BUCKET/$1", "s3Endpoint": "$S3_URL", "s3Region": "us-east-1", "s3ForcePathStyle": true,
  "s3AccessKeyId": "$AWS_ACCESS_KEY_ID", "s3SecretAccessKey": "$AWS_SECRET_ACCESS_KEY",
  "s3CaBundle": "$W/tls/cert.pem", "spool": "$2"$enc }
EOF
  chown postgres "$f"
  echo "$f"
}

# A fresh keyring of one 256-bit key, for this run only: owned by postgres (archive_command,
# restore_command and the backups run as it) and readable by no one else, as walvault requires.
make_keyring() { # path
  rm -f "$1"
  ( umask 077 && printf '# walvault bench keyring, run %s\nbench-%s %s\n' "$RUN_ID" "$RUN_ID" "$(openssl rand -hex 32)" > "$1" ) &&
    chown postgres "$1" && chmod 600 "$1" || die "cannot write the keyring $1"
}

pgbackrest_conf() { # cfg prefix pgdata -> path of a config file
  local mode compress
  mode=$(cut -d- -f2 <<<"$1") compress=$(cut -d- -f3 <<<"$1")
  local d=$W/conf/$1
  mkdir -p "$d/log" "$d/lock" "$d/spool"
  rm -rf "${d:?}/spool"/* "${d:?}/lock"/*
  cat > "$d/pgbackrest.conf" <<EOF
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
repo1-path=/$2
compress-type=$compress
log-path=$d/log
lock-path=$d/lock
spool-path=$d/spool
EOF
  [[ $mode == async ]] && printf 'archive-async=y\nprocess-max=%s\narchive-get-queue-max=128MiB\n' "$PROCESS_MAX" >> "$d/pgbackrest.conf"
  printf '\n[bench]\npg1-path=%s\npg1-port=%s\npg1-socket-path=%s\n' "$3" "$PG_PORT" "$W/sock" >> "$d/pgbackrest.conf"
  chown -R postgres "$d"
  echo "$d/pgbackrest.conf"
}

# tool_setup cfg prefix pgdata: sets ARCHIVE_CMD and RESTORE_CMD; the cluster must be running for pgBackRest
tool_setup() {
  case $1 in
    walvault | walvault-enc)
      # walvault-enc: the same, encrypted with the run's keyring (its drain and restores share it)
      local spool=$W/conf/wv-spool keys=
      if [[ $1 == walvault-enc ]]; then
        spool=$W/conf/wv-enc-spool keys=$W/conf/keyring-$RUN_ID
        [[ -s $keys ]] || make_keyring "$keys"
      fi
      rm -rf "$spool"
      local conf; conf=$(walvault_conf "$2" "$spool" "$keys")
      ARCHIVE_CMD="$W/wv/walvault --config $conf wal-push %p %f"
      RESTORE_CMD="$W/wv/walvault --config $conf wal-fetch %f %p"
      ;;
    pgbackrest-*)
      local conf; conf=$(pgbackrest_conf "$1" "$2" "$3")
      ARCHIVE_CMD="pgbackrest --config=$conf --stanza=bench archive-push %p"
      RESTORE_CMD="pgbackrest --config=$conf --stanza=bench archive-get %f \"%p\""
      ;;
    floor)
      # what no archiver can beat: a plain cp of the uncompressed segments to and from a local directory
      local dir=$W/floor/$2
      mkdir -p "$dir"
      chown -R postgres "$W/floor"
      ARCHIVE_CMD="cp %p $dir/%f"
      RESTORE_CMD="cp $dir/%f %p"
      ;;
    *) die "unknown config $1" ;;
  esac
}

repo_count() { # cfg prefix -> "<objects> <bytes>"
  if [[ $1 == floor ]]; then
    find "$W/floor/$2" -type f -printf '%s\n' 2>/dev/null | awk '{n++; b+=$1} END {print n+0, b+0}'
  else
    s3tool count "$BUCKET" "$2/"
  fi
}
repo_drop() { # cfg prefix
  if [[ $1 == floor ]]; then rm -rf "${W:?}/floor/$2"; else s3tool rmprefix "$BUCKET" "$2/" >/dev/null; fi
}

# walvault's detached workers (look-ahead uploads, prefetch) exit by themselves after 10 idle
# seconds; between runs they are stopped at once so that no run pays for the previous one.
kill_workers() {
  local lock pid
  while read -r lock; do
    pid=$(cat "$lock" 2>/dev/null)
    [[ $pid =~ ^[0-9]+$ ]] && kill "$pid" 2>/dev/null
  done < <(find "$W/conf" "$W/fp" -name worker.lock 2>/dev/null)
  return 0
}

# ------------------------------------------------------------------ WAL template
# $W/template/base: a cleanly stopped cluster after `pgbench -i` (the restore starts from it);
# $W/template/data: the same cluster after pgbench wrote N more segments with archive_command='false'
# (exactly N .ready files: the drain's backlog, and the WAL the restore must fetch).
make_template() {
  local T=$W/template key="$N $PGBENCH_SCALE 1"
  if [[ -f $T/done && $(cat "$T/done") == "$key" ]]; then log "reusing the WAL template in $T"; return; fi
  log "building the WAL template (pgbench -i -s $PGBENCH_SCALE, then $N segments of TPC-B WAL)"
  rm -rf "$T"
  mkdir -p "$T"
  chown postgres "$T"
  local port; port=$(free_port)
  as_pg "$PGBIN/initdb" -D "$T/data" -N -U postgres --auth=trust >/dev/null || die initdb
  cat >> "$T/data/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$W/sock'
wal_level = replica
archive_mode = on
archive_command = '/bin/true'
max_wal_size = 8GB
checkpoint_timeout = 30min
synchronous_commit = off
shared_buffers = 128MB
log_line_prefix = '%m [%p] '
EOF
  pg_start "$T/data" "$port"
  as_pg "$PGBIN/pgbench" -h "$W/sock" -p "$port" -i -s "$PGBENCH_SCALE" -q postgres >/dev/null 2>&1 || die "pgbench -i"
  psqlc "$port" -c 'CHECKPOINT' >/dev/null
  pg_stop "$T/data"
  cp -a "$T/data" "$T/base"
  rm -f "$T/base.log"
  echo "archive_command = 'false'" >> "$T/data/postgresql.conf"
  pg_start "$T/data" "$port"
  as_pg "$PGBIN/pgbench" -h "$W/sock" -p "$port" -c 2 -j 2 -T 1800 -n postgres > "$T/pgbench.log" 2>&1 &
  local pb=$! ready i=0
  while :; do
    ready=$(find "$T/data/pg_wal/archive_status" -name '*.ready' | wc -l)
    ((ready > N)) && break
    ((++i % 20 == 0)) && psqlc "$port" -c 'CHECKPOINT' >/dev/null # full-page images keep coming
    kill -0 "$pb" 2>/dev/null || die "pgbench ended early ($ready segments)"
    sleep 0.5
  done
  kill "$pb"; wait "$pb" 2>/dev/null
  psqlc "$port" -c 'select pg_switch_wal()' >/dev/null
  pg_stop "$T/data"
  # exactly N pending: the newest extra ones count as archived
  local f
  find "$T/data/pg_wal/archive_status" -name '*.ready' -printf '%f\n' | sort | tail -n +$((N + 1)) |
    while read -r f; do mv "$T/data/pg_wal/archive_status/$f" "$T/data/pg_wal/archive_status/${f%.ready}.done"; done
  find "$T/data/pg_wal/archive_status" -name '*.ready' -printf '%f\n' | sort | sed 's/\.ready$//' > "$T/segments.txt"
  [[ $(wc -l < "$T/segments.txt") -eq $N ]] || die "template has $(wc -l < "$T/segments.txt") ready segments, wanted $N"
  grep -q '^[0-9A-F]\{24\}$' "$T/segments.txt" || die "unexpected ready files: $(head -3 "$T/segments.txt")"
  local raw gz
  raw=$((N * 16 * 1048576))
  gz=$(sed "s|^|$T/data/pg_wal/|" "$T/segments.txt" | xargs cat | gzip -1 | wc -c)
  echo "$N segments of 16 MiB from pgbench -s $PGBENCH_SCALE TPC-B with periodic CHECKPOINT (gzip -1 ratio $(awk -v a="$raw" -v b="$gz" 'BEGIN{printf "%.1f", a/b}'))" > "$T/info"
  echo "$key" > "$T/done"
  log "template ready: $(head -1 "$T/segments.txt") .. $(tail -1 "$T/segments.txt")"
}

# ------------------------------------------------------------------ drain
drain_run() { # cfg rep
  local cfg=$1 r=$2 prefix="drain/$1-$RUN_ID-$2"
  log "[$cfg] drain $r/$REPEAT"
  kill_workers
  pg_stop "$W/pg/trial"
  rm -rf "$W/pg/trial" "$W/pg/trial.log"
  cp -a --reflink=auto "$W/template/data" "$W/pg/trial"
  local cpuf=$OUT/$cfg-drain-$r.cpu
  pg_start_cpu "$W/pg/trial" "$PG_PORT" "$cpuf"
  tool_setup "$cfg" "$prefix" "$W/pg/trial"
  if [[ $cfg == pgbackrest-* ]]; then
    as_pg pgbackrest --config="$W/conf/$cfg/pgbackrest.conf" --stanza=bench --log-level-console=warn stanza-create >&2 ||
      { pg_stop "$W/pg/trial"; return 1; }
  fi
  # The archiver must be idle (past its three 1 s-apart failures of 'false', in its long wait), so
  # that the reload is what wakes it.
  local i idle=f
  for i in $(seq 150); do
    idle=$(psqlc "$PG_PORT" -c "select coalesce(last_failed_time > pg_postmaster_start_time()
      and clock_timestamp() - last_failed_time > interval '1.5 s', false) from pg_stat_archiver")
    [[ $idle == t ]] && break
    sleep 0.2
  done
  local res
  res=$(psqlc "$PG_PORT" <<EOF
select pg_stat_reset_shared('archiver');
set stats_fetch_consistency = none;
select set_config('bench.t0', clock_timestamp()::text, false) is not null;
alter system set archive_command = '${ARCHIVE_CMD//\'/\'\'}';
select pg_reload_conf();
do \$\$ begin
  loop
    exit when coalesce((select last_archived_wal from pg_stat_archiver), '') >= '$LAST_SEG';
    exit when (select failed_count from pg_stat_archiver) >= 3;
    exit when clock_timestamp() - current_setting('bench.t0')::timestamptz > interval '$DRAIN_TIMEOUT seconds';
    perform pg_sleep(0.02);
  end loop;
end \$\$;
select round(extract(epoch from clock_timestamp() - current_setting('bench.t0')::timestamptz)::numeric, 4),
       coalesce(last_archived_wal, '-'), archived_count, failed_count from pg_stat_archiver;
EOF
  )
  local wall last archived failed
  IFS='|' read -r wall last archived failed <<<"$(tail -1 <<<"$res")"
  # Immediate stop: a clean shutdown would switch to a new segment and archive it, leaving the
  # repository with a hole (the template's surplus segments are marked archived without being so).
  as_pg "$PGBIN/pg_ctl" -D "$W/pg/trial" -m immediate -w stop >/dev/null 2>&1
  kill_workers
  reaper_cpu "$cpuf"
  cp "$W/pg/trial.log" "$OUT/$cfg-drain-$r.log"
  local objs; objs=$(repo_count "$cfg" "$prefix")
  local ok=0; [[ $last == "$LAST_SEG" && $failed == 0 ]] && ok=1
  # an encrypted config that stored anything readable measured nothing: every object must name a cipher
  local sealed=
  if [[ $cfg == walvault-enc ]]; then
    sealed=$(s3tool ciphers "$BUCKET" "$prefix/")
    [[ ${sealed% *} == "${sealed#* }" && ${sealed% *} -gt 0 ]] || { log "[$cfg] drain $r: only ${sealed#* } of ${sealed% *} objects are encrypted"; ok=0; }
    sealed=" encrypted_objects=${sealed#* }"
  fi
  record "$cfg" drain "$r" "wall_s=$wall ok=$ok archived=$archived failed=$failed objects=${objs% *} stored_bytes=${objs#* } cpu_s=${CPU:-NA}$sealed"
  if ((!ok)); then
    log "[$cfg] drain $r did not finish: last=$last failed=$failed"
    grep -E 'archive command failed|ERROR|FATAL' "$W/pg/trial.log" | tail -4 >&2
    repo_drop "$cfg" "$prefix"
    return 1
  fi
  # the restores use the last good drain's repository
  local prev; prev=$(cat "$W/conf/$cfg.prefix" 2>/dev/null)
  [[ -n $prev ]] && repo_drop "$cfg" "$prev"
  echo "$prefix" > "$W/conf/$cfg.prefix"
}

drop_prefix() {
  local prev; prev=$(cat "$W/conf/$1.prefix" 2>/dev/null)
  [[ -n $prev ]] && repo_drop "$1" "$prev"
  rm -f "$W/conf/$1.prefix"
}

# ------------------------------------------------------------------ restore
log_epoch() { # "2026-11-24 06:00:00.123 UTC" -> seconds since epoch
  date -d "$1" +%s.%N
}

restore_run() { # cfg rep
  local cfg=$1 r=$2 prefix
  prefix=$(cat "$W/conf/$cfg.prefix" 2>/dev/null) || { log "[$cfg] no drained repository to restore from"; return 1; }
  log "[$cfg] restore $r/$REPEAT"
  local D=$W/pg/restore
  pg_stop "$D"
  kill_workers
  rm -rf "$D" "$D.log"
  cp -a --reflink=auto "$W/template/base" "$D"
  find "$D/pg_wal" -maxdepth 1 -type f -name '[0-9A-F]*' -delete
  rm -f "$D"/pg_wal/archive_status/*
  tool_setup "$cfg" "$prefix" "$D"
  rm -rf "$W/conf/$cfg/spool"/* 2>/dev/null
  touch "$D/recovery.signal"
  cat >> "$D/postgresql.auto.conf" <<EOF
restore_command = '${RESTORE_CMD//\'/\'\'}'
archive_mode = off
EOF
  chown -R postgres "$D"
  sync
  local cpuf=$OUT/$cfg-restore-$r.cpu
  pg_start_cpu "$D" "$PG_PORT" "$cpuf" -W
  local i done=0
  for i in $(seq $((DRAIN_TIMEOUT * 10))); do
    if grep -q 'database system is ready to accept connections' "$D.log"; then done=1; break; fi
    grep -q -E 'FATAL|PANIC' "$D.log" && break
    sleep 0.1
  done
  local t0 t1 restored wall ok=0
  t0=$(grep -m1 'starting PostgreSQL' "$D.log" | awk '{print $1" "$2" "$3}')
  t1=$(grep -m1 'database system is ready to accept connections' "$D.log" | awk '{print $1" "$2" "$3}')
  restored=$(grep -c 'restored log file "[0-9A-F]\{24\}" from archive' "$D.log")
  if ((done)) && [[ -n $t0 && -n $t1 ]]; then
    wall=$(ms_between "$(log_epoch "$t0")" "$(log_epoch "$t1")")
    grep -q "restored log file \"$LAST_SEG\" from archive" "$D.log" && ok=1
  fi
  pg_stop "$D"
  kill_workers
  reaper_cpu "$cpuf"
  cp "$D.log" "$OUT/$cfg-restore-$r.log"
  record "$cfg" restore "$r" "wall_s=${wall:-NA} ok=$ok restored=$restored cpu_s=${CPU:-NA}"
  ((ok)) || { log "[$cfg] restore $r failed; log tail:"; tail -5 "$D.log" >&2; return 1; }
}

# ------------------------------------------------------------------ raw SDK limit
raw_runs() {
  local r res files=()
  local s
  for s in "${SEGS[@]}"; do files+=("$W/template/data/pg_wal/$s"); done
  for r in $(seq "$REPEAT"); do
    log "raw SDK put/get, concurrency $RAW_CONC, run $r/$REPEAT"
    res=$(s3tool_cpu "$OUT/raw-put-$r.cpu" put "$BUCKET" "raw/$RUN_ID-$r/" "$RAW_CONC" "${files[@]}") || { log "raw put failed"; continue; }
    record raw drain "$r" "wall_s=$(json_get "$res" wall_s) rss_mib=$(json_get "$res" max_rss_mib) ok=1 cpu_s=$(cat "$OUT/raw-put-$r.cpu")"
    rm -rf "$W/rawget"; mkdir -p "$W/rawget"
    sync
    res=$(s3tool_cpu "$OUT/raw-get-$r.cpu" get "$BUCKET" "raw/$RUN_ID-$r/" "$RAW_CONC" "$W/rawget" "${SEGS[@]}") || { log "raw get failed"; continue; }
    record raw restore "$r" "wall_s=$(json_get "$res" wall_s) rss_mib=$(json_get "$res" max_rss_mib) ok=1 cpu_s=$(cat "$OUT/raw-get-$r.cpu")"
    cmp -s "$W/rawget/$LAST_SEG" "$W/template/data/pg_wal/$LAST_SEG" || log "raw get: $LAST_SEG differs"
    s3tool rmprefix "$BUCKET" "raw/$RUN_ID-$r/" >/dev/null
  done
  rm -rf "$W/rawget"
}
json_get() { node -e 'console.log(JSON.parse(process.argv[1])[process.argv[2]])' "$1" "$2"; }

# ------------------------------------------------------------------ start-up cost and memory
timed_pg() { # label rep command... : wall (EPOCHREALTIME) and peak RSS (GNU time) of one run as postgres
  local label=$1 rep=$2; shift 2
  local tf=$W/fp/time.out t0 t1 rc
  t0=$EPOCHREALTIME
  ( cd "$W/fp" && as_pg /usr/bin/time -f '%M' -o "$tf" "$@" >/dev/null 2>>"$W/fp/stderr.log" )
  rc=$?
  t1=$EPOCHREALTIME
  record "$label" startup "$rep" "wall_s=$(ms_between "$t0" "$t1") rss_kib=$(tail -1 "$tf") rc=$rc ok=$((rc == 0))"
}

startup_runs() {
  log "start-up cost: wal-push fast paths (shell, Node) vs /bin/true and node -e 0 ($STARTUP_RUNS runs each, interleaved)"
  rm -rf "$W/fp"
  mkdir -p "$W/fp/pg_wal/archive_status"
  local i s
  for ((i = 0; i < 9 && i < N; i++)); do
    s=${SEGS[$i]}
    cp "$W/template/data/pg_wal/$s" "$W/fp/pg_wal/$s"
    touch "$W/fp/pg_wal/archive_status/$s.ready"
  done
  chown -R postgres "$W/fp"
  sleep 0.1 # files changed within the racy margin get no acknowledgement for the shell fast path
  local conf; conf=$(walvault_conf "startup/$RUN_ID" "$W/fp/spool")
  # one wal-push that uploads 9 files (its own + 8 look-ahead): the memory peak of the slow path
  timed_pg wal-push-lookahead 1 "$W/wv/walvault" --config "$conf" wal-push "pg_wal/${SEGS[0]}" "${SEGS[0]}"
  grep -q "look-ahead uploaded 8 more" "$W/fp/stderr.log" || log "startup: the look-ahead did not upload 8 files: $(tail -2 "$W/fp/stderr.log")"
  for i in $(seq "$STARTUP_RUNS"); do
    timed_pg true0 "$i" /bin/true
    timed_pg node-e0 "$i" "$NODE" -e 0
    # the installed command (the shell answers), and Node's own fast path (spool record, identity)
    timed_pg wal-push-fast "$i" "$W/wv/walvault" --config "$conf" wal-push "pg_wal/${SEGS[1]}" "${SEGS[1]}"
    timed_pg wal-push-fast-node "$i" "$NODE" "$W/wv/dist/walvault.mjs" --config "$conf" wal-push "pg_wal/${SEGS[2]}" "${SEGS[2]}"
  done
  grep -q "uploaded ahead.*checked by the wrapper" "$W/fp/stderr.log" || log "startup: the shell fast path was not taken: $(tail -2 "$W/fp/stderr.log")"
  s3tool rmprefix "$BUCKET" "startup/$RUN_ID/" >/dev/null
}
