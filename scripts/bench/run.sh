#!/usr/bin/env bash
# walvault vs pgBackRest on one machine, in one run, against one radosgw, with the same WAL:
#   drain    PostgreSQL's own archiver works off a backlog of N ready segments (archive_command is
#            'false' while pgbench writes them, then switched to the tool + pg_reload_conf()); time
#            until pg_stat_archiver.last_archived_wal is the last one (server-side clock)
#   restore  a PostgreSQL archive recovery that must fetch those N segments through restore_command;
#            time from postmaster start to "ready to accept connections" after promotion (server log)
#   raw      one long-lived Node process with the AWS SDK putting/getting the N files, concurrency 4
#   startup  wal-push of an already uploaded (look-ahead) segment vs `node -e 0`; peak RSS
#   floor    archive_command/restore_command = plain `cp` to/from a local directory of the same
#            uncompressed segments: what no archiver can beat (restore target: walvault <= 1.1x it)
#   walvault-enc  the walvault config with client-side encryption (a keyring of one key made for the
#            run, encryptionKeyFile in the same config file); the summary gives walvault-enc / walvault
#   cpu      CPU-seconds of every process of each drain/restore (PostgreSQL and all it starts, also
#            detached workers), summed by scripts/bench/cpu-reaper.pl; reported per archived GiB
# Every store access of the tools goes through one TLS terminator (nginx, self-signed certificate)
# in front of radosgw: pgBackRest cannot talk plain HTTP to S3. Prints one table (medians).
#
# Run as root from anywhere (installs what is missing with apt-get on Debian 12):
#   bash scripts/bench/run.sh                   # N=64 segments, 3 repeats
#   N=32 REPEAT=5 bash scripts/bench/run.sh
#   N=16 REPEAT=1 STARTUP_RUNS=5 bash scripts/bench/run.sh   # smoke run, a few minutes
#   CONFIGS="walvault pgbackrest-async-lz4" bash scripts/bench/run.sh
#   CONFIGS="walvault walvault-enc" INTERLEAVE=1 bash scripts/bench/run.sh   # the cost of encryption
#   WALVAULT_DIST=/path/to/dist bash scripts/bench/run.sh   # measure another build (this tree is not built)
# INTERLEAVE=1: repeat r of every config's drain, then of every config's restore, in turn (drift and
# other load spread over all configs alike; every other repeat in reverse order, so that no config
# always follows the same one) instead of one config after the other; keeps one
# repository per config in radosgw's memory at a time, so meant for a few compressed configs.
# Work files: $W (default /tmp/walvault-bench; the WAL template is reused by later runs with the
# same N and scale). Everything it starts listens on 127.0.0.1 and is stopped by PID on exit.
set -uo pipefail

REPO_ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BENCH=$REPO_ROOT/scripts/bench
W=${W:-/tmp/walvault-bench}
N=${N:-64}
REPEAT=${REPEAT:-3}
PGBENCH_SCALE=${PGBENCH_SCALE:-20}
PROCESS_MAX=${PROCESS_MAX:-4}
RAW_CONC=${RAW_CONC:-4}
STARTUP_RUNS=${STARTUP_RUNS:-21}
CONFIGS=${CONFIGS:-"walvault pgbackrest-sync-none pgbackrest-sync-lz4 pgbackrest-async-none pgbackrest-async-lz4 floor"}
INTERLEAVE=${INTERLEAVE:-0}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-600}
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
( cd "$REPO_ROOT" && { [[ -d node_modules/@aws-sdk/client-s3 ]] || npm ci --no-audit --no-fund --loglevel=error >&2; } &&
  { [[ -n ${WALVAULT_DIST:-} ]] || npm run build --silent >&2; } ) ||
  die "npm ci / npm run build failed"

mkdir -p "$W"
chmod 755 "$W"
RUN_ID=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$W/results-$RUN_ID
mkdir -p "$OUT"
RAW=$OUT/raw.tsv
: > "$RAW"
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ servers
log "starting radosgw"
# The OSD keeps objects in RAM (memstore): room for two uncompressed drains plus the raw runs.
export CEPH_MEMSTORE_BYTES=${CEPH_MEMSTORE_BYTES:-6442450944}
eval "$("$REPO_ROOT/scripts/test-servers/rgw-start.sh" "$W/rgw")" || die "radosgw did not start"
RGW_STARTED=1
RGW_ENDPOINT=$S3_ENDPOINT
export AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY
TLS_PORT=$(free_port)
tls_start "$TLS_PORT" "${RGW_ENDPOINT#http://}"
S3_URL=https://127.0.0.1:$TLS_PORT
export BENCH_S3_ENDPOINT=$S3_URL NODE_EXTRA_CA_CERTS=$W/tls/cert.pem
s3tool mkbucket "$BUCKET" >/dev/null || die "cannot create the bucket through $S3_URL"
log "radosgw $RGW_ENDPOINT, TLS (nginx) $S3_URL"

# walvault as PostgreSQL runs it: the postgres user, a node it can execute, a copy of dist/.
install_walvault
make_template
mapfile -t SEGS < "$W/template/segments.txt"
LAST_SEG=${SEGS[-1]}
PG_PORT=$(free_port)
{
  echo "run $RUN_ID: N=$N REPEAT=$REPEAT scale=$PGBENCH_SCALE segments ${SEGS[0]}..$LAST_SEG$( ((INTERLEAVE)) && echo ", configs interleaved")"
  echo "walvault build: ${WALVAULT_DIST:-$REPO_ROOT/dist} ($(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null) in $REPO_ROOT)"
  echo "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'), $(pgbackrest version), node $("$NODE" --version), $(nginx -v 2>&1 | sed 's/.*: //'), radosgw $(radosgw --version 2>/dev/null | awk '{print $3}')"
  echo "WAL: $(cat "$W/template/info")"
} > "$OUT/env.txt"

turn() { # repeat -> the configs in the order of that repeat: every other repeat reversed
  if (($1 % 2)); then echo "$CONFIGS"; else tr ' ' '\n' <<<"$CONFIGS" | tac | tr '\n' ' '; fi
}
if ((INTERLEAVE)); then
  for r in $(seq "$REPEAT"); do for cfg in $(turn "$r"); do drain_run "$cfg" "$r" || log "[$cfg] drain $r failed"; done; done
  for r in $(seq "$REPEAT"); do for cfg in $(turn "$r"); do restore_run "$cfg" "$r" || log "[$cfg] restore $r failed"; done; done
  for cfg in $CONFIGS; do drop_prefix "$cfg"; done
else
  for cfg in $CONFIGS; do
    for r in $(seq "$REPEAT"); do drain_run "$cfg" "$r" || log "[$cfg] drain $r failed"; done
    for r in $(seq "$REPEAT"); do restore_run "$cfg" "$r" || log "[$cfg] restore $r failed"; done
    drop_prefix "$cfg"
  done
fi
raw_runs
startup_runs

"$NODE" "$BENCH/summarize.mjs" "$OUT" | tee "$OUT/table.md"
log "results: $OUT (raw.tsv, table.md, env.txt, logs)"
