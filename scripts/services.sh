#!/usr/bin/env bash
# Usage: scripts/services.sh up|down|status|env
#
# Local Mosquitto and InfluxDB 2.7 on loopback, without Docker, for development
# and manual end-to-end runs (tests start their own throwaway servers instead).
#
#   up      start both (idempotent: a live service is left alone), then set up
#           InfluxDB once (org ares, bucket entrepot, token dev-token, 30 days) and
#           run scripts/influx-setup.sh (bucket entrepot_1m, downsampling task)
#   down    stop both (SIGTERM, then wait; SIGKILL after 20 s)
#   status  one line per service: pid, address, health; exit 1 if one is down
#   env     print `export` lines for arng (eval "$(scripts/services.sh env)")
#
# Environment:
#   ARNG_STATE_DIR    state, data and logs; default
#                     ${XDG_STATE_HOME:-$HOME/.local/state}/arng
#   ARNG_MQTT_PORT    Mosquitto port on 127.0.0.1 (default 1883)
#   ARNG_INFLUX_PORT  InfluxDB port on 127.0.0.1 (default 8086)
#
# Layout of the state directory:
#   mosquitto/             config rendered from mosquitto-conf/mosquitto.conf by
#                          scripts/broker-config.sh (+ passwd, acl, data/)
#   mosquitto/mosquitto.log  broker log
#   mosquitto.pid
#   influxdb/              InfluxDB working directory: bolt, sqlite, engine/
#   influxd.log            InfluxDB log
#   influxd.pid
#
# Mosquitto is installed with apt-get if missing. influxd is $ARNG_INFLUXD, else
# what scripts/build-influxd.sh prints: the cached binary at once, or a build (10-20
# minutes the first time). Both come from scripts/lib/provision.sh, as in
# scripts/test.sh. scripts/run.sh uses this script with its own state directory.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
state="${ARNG_STATE_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/arng}"
mqtt_port="${ARNG_MQTT_PORT:-1883}"
influx_port="${ARNG_INFLUX_PORT:-8086}"
influx_url="http://127.0.0.1:$influx_port"

# Reference values of the stack (docs/broker.md, CONTRACT.md).
influx_org=ares
influx_bucket=entrepot
influx_token=dev-token
influx_user=admin
influx_password=admin-dev-password
influx_retention_seconds=2592000 # 30 days
mqtt_account=operator

mosquitto_pidfile="$state/mosquitto.pid"
mosquitto_dir="$state/mosquitto"
mosquitto_log="$mosquitto_dir/mosquitto.log"
influxd_pidfile="$state/influxd.pid"
influxd_dir="$state/influxdb"
influxd_log="$state/influxd.log"

die() { echo "services: $*" >&2; exit 1; }
say() { echo "services: $*" >&2; }
# provision_mosquitto, provision_influxd, port_open, check_port, live_pid, dev_password:
# shared with scripts/test.sh, scripts/run.sh and bench/lib.sh, so every way of
# running arng gets the same servers.
. "$root/scripts/lib/provision.sh"

check_port ARNG_MQTT_PORT "$mqtt_port"
check_port ARNG_INFLUX_PORT "$influx_port"

influx_healthy() {
  curl -fsS -m 2 "$influx_url/health" 2>/dev/null | grep -q '"status": *"pass"'
}

log_tail() {
  echo "--- last lines of $1 ---" >&2
  tail -n 30 "$1" >&2 2>/dev/null || echo "(no log)" >&2
}

up_mosquitto() {
  local pid
  if pid=$(live_pid "$mosquitto_pidfile" mosquitto); then
    say "mosquitto already running (pid $pid, 127.0.0.1:$mqtt_port)"
    return 0
  fi
  provision_mosquitto
  if port_open "$mqtt_port"; then
    die "127.0.0.1:$mqtt_port is already in use (a system broker? 'service mosquitto stop'), or pick another port with ARNG_MQTT_PORT"
  fi

  "$root/scripts/broker-config.sh" render "$root/mosquitto-conf/mosquitto.conf" "$mosquitto_dir" "$mqtt_port"
  # broker-config.sh drops pid_file (tests track their child directly); a
  # daemonized broker needs one so down/status can find it.
  rm -f "$mosquitto_pidfile"
  {
    echo ""
    echo "# Added by scripts/services.sh: the daemonized broker records its pid here."
    echo "pid_file $mosquitto_pidfile"
  } >>"$mosquitto_dir/mosquitto.conf"

  say "starting mosquitto on 127.0.0.1:$mqtt_port (log: $mosquitto_log)"
  (cd "$mosquitto_dir" && mosquitto -c "$mosquitto_dir/mosquitto.conf" -d) \
    || { log_tail "$mosquitto_log"; die "mosquitto failed to start"; }

  local waited=0
  until port_open "$mqtt_port"; do
    if [ $waited -ge 100 ]; then
      log_tail "$mosquitto_log"
      die "mosquitto did not open 127.0.0.1:$mqtt_port within 10 s"
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  pid=$(live_pid "$mosquitto_pidfile" mosquitto) \
    || { log_tail "$mosquitto_log"; die "mosquitto is not running after start"; }
  say "mosquitto running (pid $pid)"
}

up_influxd() {
  local pid started=0
  if pid=$(live_pid "$influxd_pidfile" influxd); then
    say "influxd already running (pid $pid, $influx_url)"
  else
    started=1
    provision_influxd
    if port_open "$influx_port"; then
      die "127.0.0.1:$influx_port is already in use (another InfluxDB?), or pick another port with ARNG_INFLUX_PORT"
    fi
    mkdir -p "$influxd_dir"
    rm -f "$influxd_pidfile"
    say "starting influxd on $influx_url (log: $influxd_log)"
    # Started from its own empty working directory, where it finds no stray
    # config.toml/yaml, with every path given explicitly so nothing lands in
    # ~/.influxdbv2. setsid puts it in its own session: a Ctrl-C in this
    # terminal must not reach it. The inner shell records its own pid, then
    # becomes influxd through exec, so the pid file names influxd itself.
    (
      cd "$influxd_dir"
      nohup setsid bash -c 'echo $$ >"$0"; exec "$@"' "$influxd_pidfile" \
        env -u INFLUXD_CONFIG_PATH "$ARNG_INFLUXD" \
        --bolt-path "$influxd_dir/influxd.bolt" \
        --engine-path "$influxd_dir/engine" \
        --sqlite-path "$influxd_dir/influxd.sqlite" \
        --http-bind-address "127.0.0.1:$influx_port" \
        --reporting-disabled \
        >>"$influxd_log" 2>&1 </dev/null &
    )
  fi

  local waited=0
  until influx_healthy; do
    if [ $waited -ge 120 ]; then
      log_tail "$influxd_log"
      die "influxd not healthy on $influx_url/health within 60 s"
    fi
    if [ $waited -ge 10 ] && ! live_pid "$influxd_pidfile" influxd >/dev/null; then
      log_tail "$influxd_log"
      die "influxd exited during startup"
    fi
    sleep 0.5
    waited=$((waited + 1))
  done
  setup_influxd
  # The downsampled bucket (entrepot_1m, 2 years) and its task (docs/retention.md).
  INFLUX_URL="$influx_url" INFLUX_ORG="$influx_org" INFLUX_TOKEN="$influx_token" \
    bash "$root/scripts/influx-setup.sh" >/dev/null \
    || die "scripts/influx-setup.sh failed (downsampled bucket and task)"
  if [ $started -eq 1 ]; then
    pid=$(live_pid "$influxd_pidfile" influxd) \
      || { log_tail "$influxd_log"; die "influxd is not running after start"; }
    say "influxd running (pid $pid)"
  fi
}

# First-time setup, idempotent: /api/v2/setup answers {"allowed": true} only
# until an initial user exists.
setup_influxd() {
  local allowed response
  allowed=$(curl -fsS -m 5 "$influx_url/api/v2/setup") \
    || die "GET $influx_url/api/v2/setup failed"
  if echo "$allowed" | grep -q '"allowed": *true'; then
    say "setting up InfluxDB: org $influx_org, bucket $influx_bucket (30 days), token $influx_token"
    response=$(curl -sS -m 10 -w '\n%{http_code}' -X POST "$influx_url/api/v2/setup" \
      -H 'Content-Type: application/json' \
      --data "{\"username\":\"$influx_user\",\"password\":\"$influx_password\",\"org\":\"$influx_org\",\"bucket\":\"$influx_bucket\",\"token\":\"$influx_token\",\"retentionPeriodSeconds\":$influx_retention_seconds}") \
      || die "POST $influx_url/api/v2/setup failed"
    case "${response##*$'\n'}" in
      2*) ;;
      *) die "InfluxDB setup refused: ${response%$'\n'*}" ;;
    esac
  fi
  # Already set up (now or earlier): the reference token must see the bucket,
  # otherwise this data directory belongs to another setup.
  response=$(curl -fsS -m 5 -H "Authorization: Token $influx_token" \
    "$influx_url/api/v2/buckets?org=$influx_org&name=$influx_bucket" 2>/dev/null) || response=
  echo "$response" | grep -q "\"name\": *\"$influx_bucket\"" \
    || die "InfluxDB at $influx_url is set up, but token $influx_token cannot see bucket $influx_bucket in org $influx_org; run 'scripts/services.sh down' and remove $influxd_dir to start over"
}

stop_service() {
  local pidfile=$1 name=$2 pid
  if ! pid=$(live_pid "$pidfile" "$name"); then
    say "$name not running"
    rm -f "$pidfile"
    return 0
  fi
  terminate "$name" "$pid" 20
  rm -f "$pidfile"
  say "$name stopped (pid $pid)"
}

cmd_status() {
  local pid ok=0
  if pid=$(live_pid "$mosquitto_pidfile" mosquitto); then
    if port_open "$mqtt_port"; then
      echo "mosquitto  up    pid $pid  mqtt://127.0.0.1:$mqtt_port  port open  log $mosquitto_log"
    else
      echo "mosquitto  DOWN  pid $pid  mqtt://127.0.0.1:$mqtt_port  port closed  log $mosquitto_log"
      ok=1
    fi
  else
    echo "mosquitto  DOWN  not running  mqtt://127.0.0.1:$mqtt_port  log $mosquitto_log"
    ok=1
  fi
  if pid=$(live_pid "$influxd_pidfile" influxd); then
    if influx_healthy; then
      echo "influxd    up    pid $pid  $influx_url  health pass  log $influxd_log"
    else
      echo "influxd    DOWN  pid $pid  $influx_url  health failing  log $influxd_log"
      ok=1
    fi
  else
    echo "influxd    DOWN  not running  $influx_url  log $influxd_log"
    ok=1
  fi
  return $ok
}

cmd_env() {
  q() { printf 'export %s=%q\n' "$1" "$2"; }
  q ARNG_MQTT_URL "mqtt://127.0.0.1:$mqtt_port"
  q ARNG_MQTT_USERNAME "$mqtt_account"
  q ARNG_MQTT_PASSWORD "$(dev_password "$mqtt_account")"
  q INFLUX_URL "$influx_url"
  q INFLUX_ORG "$influx_org"
  q INFLUX_BUCKET "$influx_bucket"
  q INFLUX_TOKEN "$influx_token"
  q ARNG_API_URL "http://127.0.0.1:8000"
}

[ $# -eq 1 ] || { echo "usage: $0 up|down|status|env" >&2; exit 2; }
case "$1" in
  up)
    mkdir -p "$state"
    command -v curl >/dev/null 2>&1 || die "curl not found: apt-get install curl"
    up_mosquitto
    up_influxd
    say "ready; load the environment with: eval \"\$($0 env)\""
    ;;
  down)
    stop_service "$mosquitto_pidfile" mosquitto
    stop_service "$influxd_pidfile" influxd
    ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
