# Shared pieces of the benchmarks that run their own servers (bench/ingest.sh, bench/api.sh, scripts/api-fuzz.sh,
# bench/vs-telegraf.sh). Sourced, not executed: `. bench/lib.sh` from the repository
# root, after `set -euo pipefail`.
#
# What it provides:
#   log, die                     messages on stderr, prefixed with $bench_name
#   bench_tools                  mosquitto, mosquitto_passwd/_sub, curl, python3
#                                (apt-get installs what is missing, scripts/lib/provision.sh)
#   bench_influxd                sets $influxd_bin: $ARNG_INFLUXD or scripts/build-influxd.sh
#   bench_arng                   release build; sets $arng
#   bench_baseline               $BASELINE (another arng binary) checked; sets $baseline,
#                                empty without it
#   bench_workdir PREFIX         temp dir $work, removed at exit (kept with BENCH_KEEP=1),
#                                every pid in $pids stopped at exit, newest first
#   free_port, wait_until, account
#   start_mosquitto              Mosquitto rendered from mosquitto-conf/mosquitto.conf by
#                                scripts/broker-config.sh; sets $mqtt_port, $mosquitto_pid.
#                                Each "option value" of the array $mosquitto_settings
#                                replaces that option's line in the rendered copy
#   start_influxd                influxd set up with org ares, bucket entrepot, token
#                                dev-token; sets $influx (URL), $influxd_pid
#   flux_count PREFIX            readings in InfluxDB whose zone starts with PREFIX
#   cpu_ticks PID, clk_tck       user + system CPU time of a process, in clock ticks
#   peak_rss_kib PID             VmHWM of a process (its peak resident memory), in KiB
#   wait_idle SECS PID...        until the processes use < 5 % of a core (or SECS pass)
#   median                       median of the numbers on stdin, one a line

bench_name=${bench_name:-bench}
log() { printf '%s: %s\n' "$bench_name" "$*" >&2; }
die() { log "$*"; exit 1; }

# apt_install, provision_mosquitto, provision_influxd: the same provisioning as
# scripts/test.sh and scripts/services.sh.
. scripts/lib/provision.sh

bench_tools() {
  provision_mosquitto
  command -v curl >/dev/null 2>&1 || apt_install curl
  command -v python3 >/dev/null 2>&1 || apt_install python3
}

bench_influxd() {
  provision_influxd
  influxd_bin=$ARNG_INFLUXD
}

bench_arng() {
  log "building arng (release)"
  timeout 1800 cargo build --release --quiet || die "cargo build --release failed"
  arng=$PWD/target/release/arng
}

# BASELINE: another arng binary (e.g. a release build of an older commit) that a
# benchmark runs side by side with this tree's, on the same servers.
bench_baseline() {
  baseline=${BASELINE:-}
  [ -z "$baseline" ] && return 0
  [ -x "$baseline" ] || die "BASELINE=$baseline is not an executable"
  "$baseline" --version >/dev/null 2>&1 || die "BASELINE=$baseline does not run (--version fails)"
  baseline=$(realpath "$baseline")
}

pids=()
work=""
bench_cleanup() {
  local status=$?
  trap - EXIT INT TERM
  # Newest first: clients before the servers they use.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "$work" ]; then
    if [ "$status" -ne 0 ]; then
      for f in "$work"/*.log; do
        [ -f "$f" ] && { log "--- tail of $f"; tail -n 20 "$f" >&2; }
      done
    fi
    if [ -n "${BENCH_KEEP:-}" ]; then log "kept $work"; else rm -rf "$work"; fi
  fi
  exit "$status"
}

bench_workdir() {
  work=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
  trap bench_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# A loopback port nothing listens on right now.
free_port() {
  local p
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  die "no free port found"
}

# wait_until SECONDS WHAT COMMAND...: polls COMMAND every 0.2 s.
wait_until() {
  local secs=$1 what=$2
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || die "timed out after ${secs}s waiting for $what"
    sleep 0.2
  done
}

account() { dev_password "$1"; }

mosquitto_settings=()
start_mosquitto() {
  local setting key
  mqtt_port=$(free_port)
  scripts/broker-config.sh render mosquitto-conf/mosquitto.conf "$work/mqtt" "$mqtt_port"
  for setting in "${mosquitto_settings[@]}"; do
    key=${setting%% *}
    grep -q "^$key " "$work/mqtt/mosquitto.conf" || die "mosquitto.conf has no $key line to change"
    sed -i "s|^$key .*|$setting|" "$work/mqtt/mosquitto.conf"
  done
  mosquitto -c "$work/mqtt/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
  mosquitto_pid=$!
  pids+=("$mosquitto_pid")
  wait_until 10 "mosquitto on $mqtt_port" bash -c "exec 3<>/dev/tcp/127.0.0.1/$mqtt_port"
}

start_influxd() {
  local port
  port=$(free_port)
  mkdir -p "$work/influxd"
  (
    cd "$work/influxd"
    INFLUXD_CONFIG_PATH="$work/influxd/no-config" exec "$influxd_bin" \
      --bolt-path "$work/influxd/influxd.bolt" --engine-path "$work/influxd/engine" \
      --sqlite-path "$work/influxd/influxd.sqlite" \
      --http-bind-address "127.0.0.1:$port" --reporting-disabled --log-level warn
  ) >"$work/influxd.log" 2>&1 &
  influxd_pid=$!
  pids+=("$influxd_pid")
  influx=http://127.0.0.1:$port
  wait_until 60 "influxd on $port" bash -c "curl -sf -m 2 $influx/health | grep -q '\"pass\"'"
  curl -sf -m 10 -X POST "$influx/api/v2/setup" -H 'Content-Type: application/json' \
    -d '{"username":"admin","password":"admin-dev-password","org":"ares","bucket":"entrepot","token":"dev-token","retentionPeriodSeconds":0}' \
    >/dev/null || die "influxd setup failed"
}

# flux_count PREFIX: readings (field temp) stored in zones whose name starts with
# PREFIX. `group() |> count()` is pushed down to the storage engine: one row back.
flux_count() {
  curl -sf -m 30 -XPOST "$influx/api/v2/query?org=ares" -H "Authorization: Token dev-token" \
    -H "Content-Type: application/vnd.flux" \
    -d "from(bucket:\"entrepot\") |> range(start: -1d, stop: 1d) |> filter(fn:(r) => r._measurement == \"readings\" and r._field == \"temp\" and r.zone =~ /^$1/) |> group() |> count()" \
    | awk -F, 'NR==2{v=$NF} END{gsub(/\r/, "", v); print v + 0}'
}

clk_tck=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
peak_rss_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }

# wait_idle SECS PID...: returns once the processes together used less than 5 % of a
# core over one second (the previous round's writes, compactions and queries are
# done), or after SECS seconds, saying so.
wait_idle() {
  local secs=$1 before after p
  shift
  for _ in $(seq "$secs"); do
    before=0
    for p in "$@"; do before=$((before + $(cpu_ticks "$p"))); done
    sleep 1
    after=0
    for p in "$@"; do after=$((after + $(cpu_ticks "$p"))); done
    [ $((after - before)) -gt $((clk_tck / 20)) ] || return 0
  done
  log "still busy after ${secs}s; going on"
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
