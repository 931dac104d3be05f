#!/usr/bin/env bash
# Start a throw-away single-node Ceph (Debian 12 packages, 16.2.x "pacific") for walvault's tests:
# 1 monitor + 1 OSD on memstore (objects live in RAM) + radosgw (beast) on 127.0.0.1.
# No mgr and no cephx (auth none): this is a loopback test fixture, never a real cluster.
# Why radosgw: it is the one local S3 server that honours If-None-Match: * (412), which
# wal-push relies on (see /work/shared/research/s3-servers.md).
#
# usage: rgw-start.sh STATE_DIR [PORT]
#   STATE_DIR  created if missing; holds ceph.conf, mon/osd data, logs, PID files
#   PORT       S3 port. Also used: PORT+1 (mon, msgr2), PORT+2..PORT+9 (OSD messenger).
#              Without PORT a free range of 10 ports is picked (or the one recorded in
#              STATE_DIR/port is reused while that cluster is up or its ports are free).
# env (optional):
#   S3_ACCESS_KEY / S3_SECRET_KEY  default AKIALOCALTEST0000001 / localtestsecret0000000000000000000000001
#                                  (user `test`, which owns the buckets the tests create)
#   a second user `pusher` (AKIALOCALPUSHER00001 / localpushersecret000000000000000000000001) owns
#   nothing: the append-only tests grant it rights with a bucket policy (test/support/append-only.ts)
#   CEPH_MEMSTORE_BYTES            OSD capacity (RAM), default 2 GiB
#
# Prints KEY=VALUE lines for `eval "$(rgw-start.sh DIR)"`. Idempotent: if this STATE_DIR's cluster
# is up it only prints them; otherwise it builds a NEW empty cluster (memstore keeps nothing).
# Stop with rgw-stop.sh STATE_DIR [--purge].
set -euo pipefail

STATE=${1:?usage: $0 STATE_DIR [PORT]}
PORT=${2:-}
ACCESS_KEY=${S3_ACCESS_KEY:-AKIALOCALTEST0000001}
SECRET_KEY=${S3_SECRET_KEY:-localtestsecret0000000000000000000000001}
PUSHER_ACCESS_KEY=AKIALOCALPUSHER00001
PUSHER_SECRET_KEY=localpushersecret000000000000000000000001
MEMSTORE_BYTES=${CEPH_MEMSTORE_BYTES:-2147483648}
BIND=127.0.0.1
NPORTS=10

. "$(dirname "$0")/lib.sh"

# ---------------------------------------------------------------- install (CI starts from a bare Debian)
missing=()
command -v ceph-mon   >/dev/null 2>&1 || missing+=(ceph-mon)
command -v ceph-osd   >/dev/null 2>&1 || missing+=(ceph-osd)
command -v radosgw    >/dev/null 2>&1 || missing+=(radosgw)
command -v ceph       >/dev/null 2>&1 || missing+=(ceph-common)
command -v monmaptool >/dev/null 2>&1 || missing+=(ceph-base)
command -v curl       >/dev/null 2>&1 || missing+=(curl)
apt_install_missing "${missing[@]}"

mkdir -p "$STATE"
STATE=$(cd "$STATE" && pwd)
CONF=$STATE/ceph.conf RUN=$STATE/run LOG=$STATE/log

print_info() {
  print_s3_env "http://$BIND:$PORT" "$ACCESS_KEY" "$SECRET_KEY" "$RUN/rgw.pid"
  echo "S3_USER=test"
  echo "S3_PUSHER_USER=pusher"
  echo "S3_PUSHER_ACCESS_KEY=$PUSHER_ACCESS_KEY"
  echo "S3_PUSHER_SECRET_KEY=$PUSHER_SECRET_KEY"
}

# Already up? (with no PORT given, the port recorded by the previous start is the one to check)
CHECK_PORT=${PORT:-$(cat "$STATE/port" 2>/dev/null || true)}
if [ -n "$CHECK_PORT" ] && alive "$RUN/mon.pid" && alive "$RUN/osd.pid" && alive "$RUN/rgw.pid" \
   && [ "$(http_code "http://$BIND:$CHECK_PORT/")" = 200 ]; then
  PORT=$CHECK_PORT
  print_info
  exit 0
fi

# Stop leftovers of a previous run of this STATE_DIR (our PIDs only), then start from scratch.
for s in rgw osd mon; do
  f=$RUN/$s.pid
  if alive "$f"; then stop_pid "$(cat "$f")"; fi
  rm -f "$f"
done
rm -rf "$STATE/mon" "$STATE/osd" "$STATE/rgw" "$RUN" "$LOG" "$STATE/monmap" "$CONF"
mkdir -p "$STATE/mon/a" "$STATE/osd/0" "$STATE/rgw" "$RUN" "$LOG"

# Without PORT, keep the previous port when it is free again, so a restart keeps the endpoint.
if [ -z "$PORT" ]; then
  PORT=$(reuse_or_pick_port "$STATE" $NPORTS 20000 26000)
fi
echo "$PORT" > "$STATE/port"
MON_PORT=$((PORT + 1))
MS_MIN=$((PORT + 2))
MS_MAX=$((PORT + NPORTS - 1))

FSID=$(cat /proc/sys/kernel/random/uuid)
cat > "$CONF" <<CONF
[global]
fsid = $FSID
mon host = v2:$BIND:$MON_PORT
mon initial members = a
public addr = $BIND
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
ms client mode = crc
ms mon service mode = crc
ms mon cluster mode = crc
ms cluster mode = crc
ms service mode = crc
ms bind msgr1 = false
ms bind ipv6 = false
ms bind port min = $MS_MIN
ms bind port max = $MS_MAX
# one OSD: every pool must live with a single replica
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
# the default 1 s Paxos interval made each of radosgw's pool creations wait ~1 s (start 14 s -> 3 s)
paxos propose interval = 0.01
paxos min wait = 0.001
run dir = $RUN
admin socket = $RUN/\$name.asok
log file = $LOG/\$name.log

[mon.a]
mon data = $STATE/mon/a

[osd.0]
osd data = $STATE/osd/0
osd objectstore = memstore
memstore device bytes = $MEMSTORE_BYTES
osd max object size = 134217728
osd mon shutdown timeout = 1

[client.rgw.a]
rgw frontends = beast endpoint=$BIND:$PORT
rgw data = $STATE/rgw
rgw thread pool size = 64
# Deleted/overwritten object data goes to RGW garbage collection, which by default waits 2 h;
# with memstore that data stays in RAM and counts against the OSD size (it reached GBs).
rgw gc obj min wait = 0
rgw gc processor period = 5
rgw gc processor max time = 5
CONF

C=(-c "$CONF")
monmaptool --create --fsid "$FSID" --addv a "[v2:$BIND:$MON_PORT]" "$STATE/monmap" >/dev/null
ceph-mon "${C[@]}" --mkfs -i a --monmap "$STATE/monmap" >/dev/null
nohup ceph-mon "${C[@]}" -i a -f >> "$LOG/mon.out" 2>&1 < /dev/null &
echo $! > "$RUN/mon.pid"

ceph "${C[@]}" --connect-timeout 30 osd create >/dev/null   # -> osd id 0
ceph-osd "${C[@]}" -i 0 --mkfs >> "$LOG/osd-mkfs.out" 2>&1
nohup ceph-osd "${C[@]}" -i 0 -f >> "$LOG/osd.out" 2>&1 < /dev/null &
echo $! > "$RUN/osd.pid"

osd_up=0
for _ in $(seq 300); do
  running "$(cat "$RUN/osd.pid")" || { echo "ceph-osd exited; see $LOG" >&2; tail -20 "$LOG/osd.out" >&2; exit 1; }
  if ceph "${C[@]}" --connect-timeout 5 osd dump 2>/dev/null | grep -q '^osd.0 up'; then osd_up=1; break; fi
  sleep 0.2
done
[ $osd_up = 1 ] || { echo "osd.0 did not come up; see $LOG" >&2; exit 1; }

# creates the rgw pools on first use, then the S3 user
if ! timeout 120 radosgw-admin "${C[@]}" user create --uid=test --display-name=test \
    --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" > "$LOG/user-create.json" 2>> "$LOG/user-create.err"; then
  echo "radosgw-admin user create failed:" >&2; tail -20 "$LOG/user-create.err" >&2; exit 1
fi
if ! timeout 60 radosgw-admin "${C[@]}" user create --uid=pusher --display-name=pusher \
    --access-key="$PUSHER_ACCESS_KEY" --secret-key="$PUSHER_SECRET_KEY" >> "$LOG/user-create.json" 2>> "$LOG/user-create.err"; then
  echo "radosgw-admin user create (pusher) failed:" >&2; tail -20 "$LOG/user-create.err" >&2; exit 1
fi

nohup radosgw "${C[@]}" -n client.rgw.a -f >> "$LOG/rgw.out" 2>&1 < /dev/null &
echo $! > "$RUN/rgw.pid"

ok=0
for _ in $(seq 600); do   # up to ~60 s
  for s in mon osd rgw; do
    if ! alive "$RUN/$s.pid"; then echo "ceph: $s exited during start; see $LOG" >&2; tail -20 "$LOG/$s.out" >&2; exit 1; fi
  done
  if [ "$(http_code "http://$BIND:$PORT/")" = 200 ]; then ok=1; break; fi
  sleep 0.1
done
if [ $ok != 1 ]; then echo "radosgw did not answer on $BIND:$PORT; logs in $LOG" >&2; exit 1; fi
print_info
