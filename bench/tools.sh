# The two ingest tools the benchmarks compare, `arng ingest` and Telegraf
# (mqtt_consumer -> influxdb_v2, bench/telegraf.conf), started and stopped the same way
# by bench/vs-telegraf.sh and bench/drain.sh. Sourced after bench/lib.sh, once
# start_mosquitto and start_influxd have run (it uses $mqtt_port, $influx, $work, $arng).
#
# What it provides:
#   tools_setup                  finds Telegraf ($ARNG_TELEGRAF or scripts/build-telegraf.sh)
#                                and fills in bench/telegraf.conf: batch $BATCH, flush
#                                $TELEGRAF_FLUSH, max_undelivered $TELEGRAF_UNDELIVERED
#   client_id TOOL               arng-ingest or telegraf-ingest (persistent sessions)
#   start_tool TOOL ROUND [ARG]  a fresh process (sets $tool_pid, and $metrics_port for
#                                arng); arng gets ARGs after its own options
#   stop_tool TOOL [keep]        SIGTERM and wait; then its broker session is deleted by a
#                                clean-session connect with its client id, unless `keep`
#   warm_up TOOL ROUND           10 readings in a throw-away zone until all are stored
#   simulate ARGS...             `arng simulate --qos 1 --no-alerts` as the simulator account
#   forget_pid PID               a process waited for is no longer stopped at exit
#   prom                         arng's /metrics text

tools_setup() {
  ingest_pw=$(account ingest)
  sim_pw=$(account simulator)
  [ -n "$ingest_pw" ] && [ -n "$sim_pw" ] || die "accounts ingest/simulator missing from mosquitto-conf/dev-accounts"
  telegraf=${ARNG_TELEGRAF:-}
  if [ -z "$telegraf" ]; then
    telegraf=$(scripts/build-telegraf.sh) || die "could not build Telegraf (see above)"
  fi
  [ -x "$telegraf" ] || die "Telegraf binary $telegraf is not executable"
  # bench/telegraf.conf is a template: its @...@ placeholders are filled in here.
  telegraf_conf=$work/telegraf.conf
  sed -e "s|@MQTT_PORT@|$mqtt_port|g" -e "s|@MQTT_PASSWORD@|$ingest_pw|g" \
    -e "s|@INFLUX_URL@|$influx|g" -e "s|@BATCH@|${BATCH:-5000}|g" \
    -e "s|@FLUSH_INTERVAL@|${TELEGRAF_FLUSH:-100ms}|g" -e "s|@MAX_UNDELIVERED@|${TELEGRAF_UNDELIVERED:-10000}|g" \
    bench/telegraf.conf >"$telegraf_conf"
  ! grep -n '@[A-Z_]*@' "$telegraf_conf" || die "unfilled placeholder in bench/telegraf.conf"
  export INFLUX_URL=$influx INFLUX_ORG=ares INFLUX_BUCKET=entrepot INFLUX_TOKEN=dev-token
  export ARNG_MQTT_URL=mqtt://127.0.0.1:$mqtt_port
  unset ARNG_API_TOKEN
}

tool_pid=""
metrics_port=""
client_id() { if [ "$1" = arng ]; then echo arng-ingest; else echo telegraf-ingest; fi; }

forget_pid() {
  local i
  for i in "${!pids[@]}"; do [ "${pids[i]}" != "$1" ] || unset 'pids[i]'; done
  pids=("${pids[@]}")
}

start_tool() {
  local tool=$1 round=$2 attempt
  shift 2
  if [ "$tool" = telegraf ]; then
    "$telegraf" --config "$telegraf_conf" >>"$work/telegraf-$round.log" 2>&1 &
    tool_pid=$!
    pids+=("$tool_pid")
    return
  fi
  # The metrics port is free when picked but may be taken before arng binds it (other
  # jobs share the machine): then arng exits at once and another port is tried.
  for attempt in 1 2 3 4 5; do
    metrics_port=$(free_port)
    ARNG_MQTT_USERNAME=ingest ARNG_MQTT_PASSWORD=$ingest_pw RUST_LOG=arng=warn \
      "$arng" ingest --client-id "$(client_id arng)" --metrics-port "$metrics_port" \
      --spool-dir "$work/spool-$round" "$@" >>"$work/arng-$round.log" 2>&1 &
    tool_pid=$!
    pids+=("$tool_pid")
    for _ in $(seq 100); do
      curl -sf -m 2 -o /dev/null "http://127.0.0.1:$metrics_port/metrics" && return 0
      kill -0 "$tool_pid" 2>/dev/null || break
      sleep 0.1
    done
    wait "$tool_pid" 2>/dev/null || true
    forget_pid "$tool_pid"
    grep -q "cannot listen" "$work/arng-$round.log" \
      || die "arng ingest did not start (see arng-$round.log): $(tail -n 3 "$work/arng-$round.log")"
    log "metrics port $metrics_port taken meanwhile (attempt $attempt); trying another"
  done
  die "arng ingest could not bind a metrics port"
}

stop_tool() {
  local tool=$1 keep=${2:-}
  kill -TERM "$tool_pid" 2>/dev/null || true
  for _ in $(seq 150); do kill -0 "$tool_pid" 2>/dev/null || break; sleep 0.2; done
  kill -9 "$tool_pid" 2>/dev/null || true
  wait "$tool_pid" 2>/dev/null || true
  forget_pid "$tool_pid"
  tool_pid=""
  [ "$keep" = keep ] && return 0
  timeout 10 mosquitto_sub -h 127.0.0.1 -p "$mqtt_port" -u ingest -P "$ingest_pw" \
    -i "$(client_id "$tool")" -t 'entrepot/bench-session-reset/x/v0' -E \
    || die "could not reset the broker session of $(client_id "$tool")"
}

simulate() {
  ARNG_MQTT_USERNAME=simulator ARNG_MQTT_PASSWORD=$sim_pw RUST_LOG=arng=warn \
    "$arng" simulate --qos 1 --no-alerts "$@"
}

# A fresh persistent session does not exist before the tool's SUBSCRIBE, so readings
# published earlier are not for it: new zones are tried until one arrives whole.
warm_up() {
  local tool=$1 round=$2 attempt zone n
  for attempt in $(seq 20); do
    kill -0 "$tool_pid" 2>/dev/null || die "$tool exited during warm-up (see $tool-$round.log)"
    zone="w${tool:0:1}${round}x${attempt}"
    simulate --zones "$zone" --sensors-per-zone 10 --count 1 --interval 100ms --quiet \
      >>"$work/warmup.log" 2>&1 || die "arng simulate (warm-up) failed"
    for _ in $(seq 25); do
      n=$(flux_count "$zone\$")
      [ "$n" -lt 10 ] || return 0
      sleep 0.2
    done
  done
  die "$tool never stored a warm-up reading (see $tool-$round.log)"
}

prom() { curl -sf -m 5 "http://127.0.0.1:$metrics_port/metrics" || true; }
