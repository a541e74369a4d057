#!/usr/bin/env bash
# Usage: scripts/run.sh
#
# The whole arng chain on this machine, in one command and without Docker:
#   1. provisions Mosquitto (Debian package) and influxd 2.7 (cached build) the way
#      scripts/test.sh does (scripts/lib/provision.sh);
#   2. builds arng (release);
#   3. starts Mosquitto and InfluxDB with scripts/services.sh, in a state directory of
#      its own, so a developer's `scripts/services.sh up` stack is never touched;
#   4. runs `arng ingest` (account ingest), `arng serve` (account api) and
#      `arng simulate --zones nord,sud,est` (account simulator);
#   5. prints the live page URL, curl lines and the mosquitto_sub line to watch;
#   6. on Ctrl-C or SIGTERM stops everything in order (simulator, API, ingest after
#      its last write, then the broker and InfluxDB) and leaves nothing running.
# Exit status: 130 after Ctrl-C, 143 after SIGTERM, 1 if something failed to start or
# stopped on its own (its log is shown).
#
# Environment:
#   ARNG_MQTT_PORT     Mosquitto port on 127.0.0.1 (default 1883)
#   ARNG_INFLUX_PORT   InfluxDB port on 127.0.0.1 (default 8086)
#   ARNG_API_PORT      arng serve port on 127.0.0.1 (default 8000)
#   ARNG_METRICS_PORT  arng ingest's Prometheus endpoint (default 9100)
#   ARNG_API_TOKEN     token of the API's write routes (default change-me-dev-token)
#   ARNG_RUN_INTERVAL  time between two readings of one sensor (default 5s)
#   ARNG_STATE_DIR     base state directory (default ~/.local/state/arng); this
#                      script keeps everything under its run/ subdirectory
#   ARNG_BIN           an arng binary to use instead of building one (the tests)
#   ARNG_INFLUXD       an influxd binary (default: scripts/build-influxd.sh's cache)
#
# Data, logs and pid files: $ARNG_STATE_DIR/run/ (InfluxDB data and the broker's
# persistence survive between runs; remove the directory to start afresh). A run that
# was killed with SIGKILL leaves its processes behind; the next run stops them first.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

say() { echo "run: $*" >&2; }
die() { echo "run: $*" >&2; exit 1; }
. scripts/lib/provision.sh

state="${ARNG_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/arng}/run"
mqtt_port="${ARNG_MQTT_PORT:-1883}"
influx_port="${ARNG_INFLUX_PORT:-8086}"
api_port="${ARNG_API_PORT:-8000}"
metrics_port="${ARNG_METRICS_PORT:-9100}"
api_token="${ARNG_API_TOKEN:-change-me-dev-token}"
interval="${ARNG_RUN_INTERVAL:-5s}"
zones=nord,sud,est
sensors_per_zone=3

check_port ARNG_MQTT_PORT "$mqtt_port"
check_port ARNG_INFLUX_PORT "$influx_port"
check_port ARNG_API_PORT "$api_port"
check_port ARNG_METRICS_PORT "$metrics_port"
[ "$(printf '%s\n' "$mqtt_port" "$influx_port" "$api_port" "$metrics_port" | sort -u | wc -l)" -eq 4 ] \
  || die "ARNG_MQTT_PORT, ARNG_INFLUX_PORT, ARNG_API_PORT and ARNG_METRICS_PORT must differ"
case "$state" in
  *[[:space:]]*) die "the state directory must not contain whitespace: '$state' (set ARNG_STATE_DIR)" ;;
esac
mkdir -p "$state/logs"

# The services get exactly the settings below, whatever the calling shell exports
# (a leftover ARNG_MQTT_CA would turn every connection into a TLS handshake).
unset ARNG_MQTT_CA ARNG_MQTT_CERT ARNG_MQTT_KEY ARNG_SHARE_GROUP ARNG_SPOOL_DIR \
  ARNG_INGEST_CLIENT_ID ARNG_API_BIND ARNG_METRICS_BIND
export ARNG_MQTT_URL="mqtt://127.0.0.1:$mqtt_port"
export INFLUX_URL="http://127.0.0.1:$influx_port" INFLUX_ORG=ares INFLUX_BUCKET=entrepot INFLUX_TOKEN=dev-token

services() { ARNG_STATE_DIR="$state" ARNG_MQTT_PORT="$mqtt_port" ARNG_INFLUX_PORT="$influx_port" scripts/services.sh "$@"; }

# --- the arng processes: name -> pid, started in order, stopped in reverse ---------
names=()
declare -A pid_of=()
services_up=0
sleeper=""

stop_process() {
  local name=$1 pid=$2
  # ingest flushes its last batch and acknowledges it before exiting: give it time.
  terminate "arng $name" "$pid" 30
  wait "$pid" 2>/dev/null || true
  rm -f "$state/$name.pid"
}

cleanup() {
  local status=$? i name
  trap - EXIT
  # A second Ctrl-C must not cut the stop short and leave servers behind.
  trap '' INT TERM
  [ -z "$sleeper" ] || kill "$sleeper" 2>/dev/null || true
  for ((i = ${#names[@]} - 1; i >= 0; i--)); do
    name=${names[i]}
    stop_process "$name" "${pid_of[$name]}"
  done
  [ "$services_up" -eq 0 ] || services down >&2 || status=1
  say "stopped; data and logs kept in $state"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A previous run killed with SIGKILL could not clean up: stop what it left.
for name in simulate serve ingest; do
  if pid=$(live_pid "$state/$name.pid" arng); then
    say "stopping arng $name (pid $pid) left by a previous run"
    stop_process "$name" "$pid"
  fi
done

for port in "$api_port" "$metrics_port"; do
  port_open "$port" && die "127.0.0.1:$port is already in use (another arng serve or ingest?); choose other ports with ARNG_API_PORT / ARNG_METRICS_PORT"
done

provision_mosquitto
provision_influxd
command -v curl >/dev/null 2>&1 || apt_install curl

if [ -n "${ARNG_BIN:-}" ]; then
  arng=$ARNG_BIN
  [ -x "$arng" ] || die "ARNG_BIN=$arng is not an executable"
else
  say "building arng (cargo build --release)"
  cargo build --release --locked --quiet || die "cargo build --release failed"
  arng=$root/target/release/arng
fi

services_up=1
services up >&2

# start NAME ACCOUNT ARGS...: runs `arng ARGS` as broker account ACCOUNT, logging to
# $state/logs/NAME.log, and records its pid.
start() {
  local name=$1 account=$2
  shift 2
  ARNG_MQTT_USERNAME=$account ARNG_MQTT_PASSWORD=$(dev_password "$account") \
    "$arng" "$@" >"$state/logs/$name.log" 2>&1 </dev/null &
  pid_of[$name]=$!
  names+=("$name")
  echo "${pid_of[$name]}" >"$state/$name.pid"
}

# wait_ready NAME WHAT COMMAND...: until COMMAND succeeds (30 s), or NAME exits.
wait_ready() {
  local name=$1 what=$2 waited=0
  shift 2
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "${pid_of[$name]}" 2>/dev/null; then
      tail -n 30 "$state/logs/$name.log" >&2
      die "arng $name exited during startup (log: $state/logs/$name.log)"
    fi
    [ $waited -lt 300 ] || { tail -n 30 "$state/logs/$name.log" >&2; die "arng $name: no $what within 30 s"; }
    sleep 0.1
    waited=$((waited + 1))
  done
}

start ingest ingest ingest --metrics-port "$metrics_port" --spool-dir "$state/spool"
wait_ready ingest "subscription" grep -q "subscribed: receiving readings" "$state/logs/ingest.log"
ARNG_API_TOKEN=$api_token start serve api serve --port "$api_port"
wait_ready serve "GET /ready" curl -fsS -m 2 "http://127.0.0.1:$api_port/ready"
start simulate simulator simulate --zones "$zones" --sensors-per-zone "$sensors_per_zone" --interval "$interval"

api="http://127.0.0.1:$api_port"
cat <<EOF

arng is running: zones $zones, $sensors_per_zone sensors each, one reading per sensor every $interval.

  live page   $api/

  curl -s $api/zones/nord/latest
  curl -s $api/zones
  curl -s "$api/zones/sud/history?range=1h&every=5m"
  curl -s $api/thresholds
  curl -s "$api/alerts?since=24h"
  curl -s -X POST $api/alerts -H "Authorization: Bearer $api_token" -H "Content-Type: application/json" -d '{"zone":"nord","sensor":"s1","metric":"temp","severity":"critical","message":"door left open","value":31.5,"threshold":30}'

  mosquitto_sub -h 127.0.0.1 -p $mqtt_port -u operator -P $(dev_password operator) -t 'entrepot/#' -v

  InfluxDB    $INFLUX_URL (org ares, bucket entrepot, token dev-token)
  metrics     http://127.0.0.1:$metrics_port/metrics (ingest), $api/metrics (API)
  logs        $state/logs/{ingest,serve,simulate}.log, $state/mosquitto/mosquitto.log, $state/influxd.log

Ctrl-C stops everything.
EOF

# Supervise: a process that stops on its own ends the run, with its log.
while :; do
  for name in "${names[@]}"; do
    if ! kill -0 "${pid_of[$name]}" 2>/dev/null; then
      tail -n 30 "$state/logs/$name.log" >&2
      die "arng $name stopped on its own (log: $state/logs/$name.log); stopping the rest"
    fi
  done
  # In the background, so that a signal is handled at once rather than after sleep.
  sleep 1 &
  sleeper=$!
  wait "$sleeper" || true
  sleeper=""
done
