# Helpers shared by the test-server scripts (rgw-start.sh, swift-start.sh and their stop scripts).
# Sourced, not run: `. "$(dirname "$0")/lib.sh"`. Messages name the calling script.
# shellcheck shell=bash

# Installs the Debian packages given, if any (CI starts from a bare Debian). The rgw and Swift
# scripts may install at the same moment (global setup starts both in parallel): serialise on one
# lock so neither apt-get fails on dpkg's lock.
apt_install_missing() { # PACKAGE...
  [ $# -gt 0 ] || return 0
  echo "installing: $*" >&2
  local sudo=; [ "$(id -u)" = 0 ] || sudo="sudo -n"
  if ! _apt_install "$sudo" "$@"; then
    $sudo flock -w 900 /tmp/walvault-test-apt.lock apt-get -o DPkg::Lock::Timeout=300 update >&2
    _apt_install "$sudo" "$@"
  fi
}
_apt_install() { # SUDO PACKAGE...
  local sudo=$1; shift
  $sudo env DEBIAN_FRONTEND=noninteractive flock -w 900 /tmp/walvault-test-apt.lock \
    apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends "$@" >&2
}

# running = exists and is not a zombie (an exited child that nobody has reaped yet)
running() { kill -0 "$1" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
alive() { [ -f "$1" ] && running "$(cat "$1")"; }
http_code() { curl -s -o /dev/null -m 2 -w '%{http_code}' "$1" 2>/dev/null || true; }

# Waits up to TRIES x 0.1 s (default 100) for PID to end, then SIGKILLs it.
wait_or_kill() { # PID [TRIES]
  local _
  for _ in $(seq "${2:-100}"); do running "$1" || break; sleep 0.1; done
  if running "$1"; then kill -9 "$1" 2>/dev/null || true; fi
}
# SIGTERM, then wait_or_kill.
stop_pid() { # PID [TRIES]
  kill "$1" 2>/dev/null || true
  wait_or_kill "$@"
}

# Ports bound by anyone (TCP and UDP, IPv4 and IPv6, any state), read from /proc so that
# no iproute2 is needed on a bare CI image.
used_ports() {
  local f local_addr
  for f in /proc/net/tcp /proc/net/tcp6 /proc/net/udp /proc/net/udp6; do
    [ -r "$f" ] || continue
    while read -r _ local_addr _; do
      [ "$local_addr" = local_address ] || echo $((16#${local_addr##*:}))
    done < "$f"
  done
}
# Are COUNT consecutive ports from BASE all unused?
range_free() { # BASE COUNT
  local used p
  used=" $(used_ports | sort -un | tr '\n' ' ') "
  for ((p = $1; p < $1 + $2; p++)); do
    case $used in *" $p "*) return 1 ;; esac
  done
}
# A random base in [LOW, HIGH) whose COUNT consecutive ports are all unused. Random rather than
# "first free" so parallel starts (rgw and Swift, or two test runs) rarely race for one range;
# kept below the kernel's ephemeral range (32768+) so outgoing connections cannot take them.
pick_free_base() { # COUNT LOW HIGH
  local count=$1 low=$2 high=$3 base
  for _ in $(seq 100); do
    base=$((low + (RANDOM * 32768 + RANDOM) % (high - low - count)))
    if range_free "$base" "$count"; then echo "$base"; return 0; fi
  done
  echo "$(basename "$0" .sh): no free range of $count ports in $low..$high" >&2
  return 1
}
# The port recorded in STATE_DIR/port when its COUNT ports are free again (so a restart keeps the
# endpoint), else a new free base from pick_free_base.
reuse_or_pick_port() { # STATE_DIR COUNT LOW HIGH
  local port
  port=$(cat "$1/port" 2>/dev/null || true)
  if [ -z "$port" ] || ! range_free "$port" "$2"; then port=$(pick_free_base "$2" "$3" "$4") || return 1; fi
  echo "$port"
}

# The KEY=VALUE lines the start scripts print for `eval`.
print_s3_env() { # ENDPOINT ACCESS_KEY SECRET_KEY PID_FILE
  echo "S3_ENDPOINT=$1"
  echo "S3_ACCESS_KEY=$2"
  echo "S3_SECRET_KEY=$3"
  echo "S3_REGION=us-east-1"
  echo "S3_FORCE_PATH_STYLE=true"
  echo "PID_FILE=$4"
}
