# Provisioning of the real servers arng runs against, shared by scripts/test.sh,
# scripts/services.sh (and so scripts/run.sh) and bench/lib.sh, so that the test
# suite, the local stack and the benchmarks get Mosquitto and influxd the same way.
# Sourced, not executed, after `set -euo pipefail`:
#
#   . scripts/lib/provision.sh
#
# The sourcing script defines `die MESSAGE` (prints and exits 1); progress goes to
# stderr, so a function's stdout stays free for values.
#
#   apt_install PKG...     Debian packages, with sudo when not root; fails with the
#                          package names when there is no apt-get
#   provision_mosquitto    mosquitto, mosquitto_passwd and the clients (mosquitto_sub,
#                          mosquitto_pub) from Debian's packages when one is missing;
#                          puts /usr/sbin on the PATH (where Debian installs the broker)
#   provision_influxd      exports ARNG_INFLUXD: the given binary, else the cached build
#                          of scripts/build-influxd.sh (10-20 minutes the first time)
#   port_open PORT         true when something accepts TCP connections on 127.0.0.1:PORT
#   check_port NAME VALUE  dies unless VALUE is a port number (NAME names the setting)
#   live_pid PIDFILE NAME  prints the pid in PIDFILE if that process is alive and is NAME
#   dev_password USER      the password of USER in mosquitto-conf/dev-accounts
#   terminate NAME PID SECS  SIGTERM, then SIGKILL if PID still runs after SECS seconds

provision_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

# Debian puts mosquitto in /usr/sbin, which is not on a non-root user's PATH.
case ":$PATH:" in *:/usr/sbin:*) ;; *) export PATH="$PATH:/usr/sbin" ;; esac

apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "cannot install $* (no apt-get): install it by hand"
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "$* missing and you are not root: apt-get install $*"
    sudo=sudo
  fi
  echo "provision: installing $* with apt-get" >&2
  timeout 600 $sudo apt-get update -qq >/dev/null || die "apt-get update failed while installing $*"
  DEBIAN_FRONTEND=noninteractive timeout 600 $sudo apt-get install -y -qq "$@" >/dev/null \
    || die "apt-get install $* failed"
}

provision_mosquitto() {
  local tool missing=0
  for tool in mosquitto mosquitto_passwd mosquitto_sub mosquitto_pub; do
    command -v "$tool" >/dev/null 2>&1 || missing=1
  done
  [ "$missing" -eq 0 ] || apt_install mosquitto mosquitto-clients
  for tool in mosquitto mosquitto_passwd mosquitto_sub mosquitto_pub; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is still missing after installing mosquitto and mosquitto-clients"
  done
}

provision_influxd() {
  if [ -z "${ARNG_INFLUXD:-}" ]; then
    ARNG_INFLUXD=$("$provision_root/scripts/build-influxd.sh") \
      || die "could not build influxd (scripts/build-influxd.sh, see the messages above)"
  fi
  [ -x "$ARNG_INFLUXD" ] || die "influxd binary $ARNG_INFLUXD is not executable"
  export ARNG_INFLUXD
}

port_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

check_port() {
  case "$2" in
    '' | *[!0-9]*) die "$1 must be a port number, got '$2'" ;;
  esac
  [ "$2" -ge 1 ] && [ "$2" -le 65535 ] || die "$1 must be a port number (1-65535), got '$2'"
}

# A pid file left by a crash may name a pid since reused by an unrelated process,
# hence the check of the process name.
live_pid() {
  local pidfile=$1 name=$2 pid
  [ -r "$pidfile" ] || return 1
  pid=$(cat "$pidfile" 2>/dev/null) || return 1
  case "$pid" in '' | *[!0-9]*) return 1 ;; esac
  kill -0 "$pid" 2>/dev/null || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 1
  echo "$pid"
}

dev_password() {
  local line
  line=$(grep -E "^$1:" "$provision_root/mosquitto-conf/dev-accounts" | head -n1) \
    || die "no account '$1' in mosquitto-conf/dev-accounts"
  echo "${line#*:}"
}

terminate() {
  local name=$1 pid=$2 secs=$3 waited=0
  kill -TERM "$pid" 2>/dev/null || return 0
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$waited" -ge $((secs * 10)) ]; then
      echo "$name (pid $pid) ignored SIGTERM for $secs s: sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
}
