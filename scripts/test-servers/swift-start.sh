#!/usr/bin/env bash
# Start a single-node OpenStack Swift (Debian 12 packages) with the s3api middleware on 127.0.0.1,
# for walvault's tests. Why Swift next to radosgw: it is a production S3 layer that differs exactly
# where a WAL archiver cares (If-None-Match -> 501, DeleteObjects needs Content-MD5, no aws-chunked),
# so walvault's fallback paths get exercised. See /work/shared/research/s3-servers.md.
#
# usage: swift-start.sh STATE_DIR [PORT]
#   STATE_DIR  created if missing; holds config, rings, data, logs, PID files (nothing in /etc/swift)
#   PORT       S3 port. Also used: PORT+1 account, PORT+2 container, PORT+3 object server,
#              PORT+4 memcached, PORT+5 (UDP, nothing listens) as the syslog sink Swift falls
#              back to when /dev/log is absent. Without PORT a free range of 6 ports is picked
#              (the one recorded in STATE_DIR/port is reused while up or while its ports are free).
# env (optional):
#   S3_ACCESS_KEY  must be "account:user" (tempauth form); default test:tester
#   S3_SECRET_KEY  default testing
#
# Prints KEY=VALUE lines for `eval "$(swift-start.sh DIR)"`. Idempotent: if the servers of STATE_DIR
# are up it only prints them. Data persists in STATE_DIR across restarts.
# Stop with swift-stop.sh STATE_DIR [--purge].
set -euo pipefail

STATE=${1:?usage: $0 STATE_DIR [PORT]}
PORT=${2:-}
ACCESS_KEY=${S3_ACCESS_KEY:-test:tester}
SECRET_KEY=${S3_SECRET_KEY:-testing}
BIND=127.0.0.1
NPORTS=6
SERVERS="memcached account container object proxy"

case "$ACCESS_KEY" in
  *:*) ;;
  *) echo "S3_ACCESS_KEY must look like account:user (Swift tempauth)" >&2; exit 2 ;;
esac
S3_ACCOUNT=${ACCESS_KEY%%:*}
S3_USER=${ACCESS_KEY#*:}

. "$(dirname "$0")/lib.sh"

# ---------------------------------------------------------------- install (CI starts from a bare Debian)
missing=()
command -v swift-proxy-server     >/dev/null 2>&1 || missing+=(swift-proxy)
command -v swift-account-server   >/dev/null 2>&1 || missing+=(swift-account)
command -v swift-container-server >/dev/null 2>&1 || missing+=(swift-container)
command -v swift-object-server    >/dev/null 2>&1 || missing+=(swift-object)
command -v swift-ring-builder     >/dev/null 2>&1 || missing+=(swift)
command -v memcached              >/dev/null 2>&1 || missing+=(memcached)
command -v curl                   >/dev/null 2>&1 || missing+=(curl)
apt_install_missing "${missing[@]}"

mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
ETC=$STATE/etc RUN=$STATE/run LOG=$STATE/log DEV=$STATE/srv
mkdir -p "$ETC" "$RUN" "$LOG" "$DEV/d1" "$STATE/cache"

print_info() { print_s3_env "http://$BIND:$PORT" "$ACCESS_KEY" "$SECRET_KEY" "$RUN/proxy.pid"; }

all_alive() { local s; for s in $SERVERS; do alive "$RUN/$s.pid" || return 1; done; }

# Already up? (with no PORT given, the port recorded by the previous start is the one to check)
CHECK_PORT=${PORT:-$(cat "$STATE/port" 2>/dev/null || true)}
if [ -n "$CHECK_PORT" ] && all_alive && [ "$(http_code "http://$BIND:$CHECK_PORT/healthcheck")" = 200 ]; then
  PORT=$CHECK_PORT
  print_info
  exit 0
fi
# Partial/stale state: stop whatever of ours is left (recorded PIDs only).
for s in $SERVERS; do
  if alive "$RUN/$s.pid"; then kill "$(cat "$RUN/$s.pid")" 2>/dev/null || true; fi
done
for s in $SERVERS; do
  if [ -f "$RUN/$s.pid" ]; then
    wait_or_kill "$(cat "$RUN/$s.pid")" 50
    rm -f "$RUN/$s.pid"
  fi
done

# Without PORT, keep the previous port when it is free again, so a restart keeps the endpoint.
if [ -z "$PORT" ]; then
  PORT=$(reuse_or_pick_port "$STATE" $NPORTS 26000 32000)
fi
echo "$PORT" > "$STATE/port"
ACC_PORT=$((PORT + 1))
CONT_PORT=$((PORT + 2))
OBJ_PORT=$((PORT + 3))
MC_PORT=$((PORT + 4))
LOG_UDP_PORT=$((PORT + 5))

# ---------------------------------------------------------------- config
RUN_USER=$(id -un)
cat > "$ETC/swift.conf" <<CONF
[swift-hash]
swift_hash_path_suffix = s3test-suffix
swift_hash_path_prefix = s3test-prefix

[storage-policy:0]
name = Policy-0
default = yes

[swift-constraints]
CONF

# [DEFAULT] shared by all four servers. workers = 0 runs each server in one process (2 cores);
# mount_check = false because the "device" is a plain directory.
common_default() { # PORT
  cat <<CONF
[DEFAULT]
swift_dir = $ETC
devices = $DEV
mount_check = false
disable_fallocate = true
bind_ip = $BIND
bind_port = $1
workers = 0
user = $RUN_USER
log_udp_host = $BIND
log_udp_port = $LOG_UDP_PORT
log_level = INFO
recon_cache_path = $STATE/cache
CONF
}

storage_conf() { # NAME PORT
  common_default "$2"
  cat <<CONF

[pipeline:main]
pipeline = healthcheck $1-server

[app:$1-server]
use = egg:swift#$1

[filter:healthcheck]
use = egg:swift#healthcheck
CONF
}
storage_conf account "$ACC_PORT" > "$ETC/account-server.conf"
storage_conf container "$CONT_PORT" > "$ETC/container-server.conf"
storage_conf object "$OBJ_PORT" > "$ETC/object-server.conf"

{
  common_default "$PORT"
  cat <<CONF

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats bulk s3api tempauth copy slo dlo versioned_writes symlink proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
allow_account_management = true

[filter:s3api]
use = egg:swift#s3api
location = us-east-1

[filter:tempauth]
use = egg:swift#tempauth
user_${S3_ACCOUNT}_${S3_USER} = ${SECRET_KEY} .admin

[filter:cache]
use = egg:swift#memcache
memcache_servers = $BIND:$MC_PORT
CONF
  # the remaining filters need no options: section name as in the pipeline, egg name with "_"
  for f in catch_errors gatekeeper healthcheck proxy-logging listing_formats bulk copy slo dlo versioned_writes symlink; do
    printf '\n[filter:%s]\nuse = egg:swift#%s\n' "$f" "${f//-/_}"
  done
} > "$ETC/proxy-server.conf"

# ---------------------------------------------------------------- rings (rebuilt only when ports change)
want="$ACC_PORT $CONT_PORT $OBJ_PORT"
if [ "$(cat "$ETC/ring-ports" 2>/dev/null || true)" != "$want" ] \
   || [ ! -f "$ETC/account.ring.gz" ] || [ ! -f "$ETC/container.ring.gz" ] \
   || [ ! -f "$ETC/object.ring.gz" ]; then
  rm -f "$ETC"/*.builder "$ETC"/*.ring.gz "$ETC/ring-ports"
  rm -rf "$ETC/backups"
  # One python process instead of 9 swift-ring-builder calls: each call pays Swift's import time,
  # which cost 4-7 s of the start. /usr/bin/python3 because Swift lives in Debian's python.
  /usr/bin/python3 - "$ETC" "$BIND" "$ACC_PORT" "$CONT_PORT" "$OBJ_PORT" <<'PY'
import sys
from swift.common.ring import RingBuilder
etc, ip = sys.argv[1], sys.argv[2]
for name, port in zip(('account', 'container', 'object'), map(int, sys.argv[3:6])):
    b = RingBuilder(6, 1, 1)  # part_power 6, 1 replica, min_part_hours 1
    b.add_dev({'id': 0, 'region': 1, 'zone': 1, 'ip': ip, 'port': port,
               'device': 'd1', 'weight': 1.0, 'meta': ''})
    b.rebalance()
    b.get_ring().save('%s/%s.ring.gz' % (etc, name))
    b.save('%s/%s.builder' % (etc, name))
PY
  echo "$want" > "$ETC/ring-ports"
fi

# ---------------------------------------------------------------- start
start_bg() { # NAME CMD...
  local name=$1; shift
  nohup "$@" >> "$LOG/$name.log" 2>&1 < /dev/null &
  echo $! > "$RUN/$name.pid"
}
# memcached refuses to run as root without -u; as non-root it must not be given another user.
MC_USER=root; [ "$(id -u)" = 0 ] || MC_USER=$RUN_USER
start_bg memcached memcached -l "$BIND" -p "$MC_PORT" -U 0 -m 64 -u "$MC_USER"
start_bg account   swift-account-server   "$ETC/account-server.conf" -v
start_bg container swift-container-server "$ETC/container-server.conf" -v
start_bg object    swift-object-server    "$ETC/object-server.conf" -v
start_bg proxy     swift-proxy-server     "$ETC/proxy-server.conf" -v

ok=0
for _ in $(seq 600); do   # up to ~60 s: Python start-up is slow on a loaded 2-core machine
  for s in $SERVERS; do
    if ! alive "$RUN/$s.pid"; then
      echo "swift: $s exited during start; last log lines:" >&2
      tail -n 20 "$LOG/$s.log" >&2
      exit 1
    fi
  done
  if [ "$(http_code "http://$BIND:$PORT/healthcheck")" = 200 ] \
     && [ "$(http_code "http://$BIND:$ACC_PORT/healthcheck")" = 200 ] \
     && [ "$(http_code "http://$BIND:$CONT_PORT/healthcheck")" = 200 ] \
     && [ "$(http_code "http://$BIND:$OBJ_PORT/healthcheck")" = 200 ]; then
    ok=1; break
  fi
  sleep 0.1
done
if [ $ok != 1 ]; then
  echo "swift did not answer on $BIND:$PORT within 60 s; logs in $LOG" >&2
  exit 1
fi
print_info
