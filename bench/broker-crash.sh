#!/usr/bin/env bash
# Usage: bench/broker-crash.sh
#
# What Mosquitto's persistence settings cost and what they save when the broker
# crashes (SIGKILL: no save at exit), for the choice of `autosave_interval` /
# `autosave_on_changes` in mosquitto-conf/ (docs/reliability.md, "A broker crash").
# For each setting, a fresh Mosquitto (mosquitto-conf/mosquitto.conf rendered by
# scripts/broker-config.sh, with the setting and max_queued_messages 0 so that nothing
# is dropped by the queue limit), `arng ingest` and one influxd for the whole run:
#
#   1. steady cost: `arng simulate --rate STEADY_RATE --duration 20s --qos 1` with
#      ingest keeping up; Mosquitto's CPU seconds per 10,000 readings and its saves;
#   2. backlog: ingest stopped (its persistent session kept), BACKLOG readings published
#      as fast as the broker takes them (`--rate max`): the publish rate, Mosquitto's
#      CPU and saves while its database grows; then the broker is killed (SIGKILL) at
#      once and restarted, ingest started: how many of the queued readings survive;
#   3. live crash: ingest running, LIVE_RATE readings/s for 60 s; the broker is killed
#      at 30 s and restarted at once (same port, same files); the publisher and ingest
#      reconnect on their own: readings the broker acknowledged to the publisher and
#      that never reached InfluxDB are lost.
# Prints one line per setting and phase, then a Markdown table.
#
# Environment (defaults in brackets): SETTINGS (name=option value;option value|...;
# default: the reference 300 s, 60 s, 10 s, every 1000 changes, every 100000 changes),
# STEADY_RATE [20000], BACKLOG [200000], LIVE_RATE [2000], ARNG_INFLUXD, BENCH_KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/.."

SETTINGS=${SETTINGS:-"300 s=autosave_interval 300;autosave_on_changes false|60 s=autosave_interval 60;autosave_on_changes false|10 s=autosave_interval 10;autosave_on_changes false|1000 changes=autosave_interval 1000;autosave_on_changes true|100000 changes=autosave_interval 100000;autosave_on_changes true"}
STEADY_RATE=${STEADY_RATE:-20000}
BACKLOG=${BACKLOG:-200000}
LIVE_RATE=${LIVE_RATE:-2000}

bench_name=broker-crash
. bench/lib.sh
for v in STEADY_RATE BACKLOG LIVE_RATE; do
  case "${!v}" in '' | *[!0-9]* | 0) echo "broker-crash: $v must be a positive integer, got '${!v}'" >&2; exit 2 ;; esac
done
[ $((BACKLOG % 2000)) -eq 0 ] || { echo "broker-crash: BACKLOG must be a multiple of 2000" >&2; exit 2; }

bench_tools
bench_arng
bench_influxd
bench_workdir arng-broker-crash
start_influxd
export INFLUX_URL=$influx INFLUX_ORG=ares INFLUX_BUCKET=entrepot INFLUX_TOKEN=dev-token
ingest_pw=$(account ingest)
sim_pw=$(account simulator)
results=$work/results.txt
: >"$results"

. bench/tools.sh # forget_pid
saves() { grep -c "Saving in-memory database" "$work/mqtt/mosquitto.log" || true; }
db_bytes() { stat -c %s "$work/mqtt/data/mosquitto.db" 2>/dev/null || echo 0; }

sim() {
  ARNG_MQTT_USERNAME=simulator ARNG_MQTT_PASSWORD=$sim_pw RUST_LOG=arng=warn \
    "$arng" simulate --qos 1 --no-alerts --json "$@"
}

ingest_pid=""
start_ingest() {
  local port
  port=$(free_port)
  ARNG_MQTT_USERNAME=ingest ARNG_MQTT_PASSWORD=$ingest_pw RUST_LOG=arng=info \
    "$arng" ingest --metrics-port "$port" --spool-dir "$work/spool" >>"$work/ingest.log" 2>&1 &
  ingest_pid=$!
  pids+=("$ingest_pid")
  wait_until 30 "ingest subscribed" bash -c "[ \$(grep -c 'subscribed: receiving readings' '$work/ingest.log') -ge $1 ]"
}
stop_ingest() {
  kill -TERM "$ingest_pid"
  wait "$ingest_pid" 2>/dev/null || true
  forget_pid "$ingest_pid"
}

# Mosquitto again on the same port and files after a SIGKILL.
crash_and_restart_broker() {
  kill -9 "$mosquitto_pid"
  wait "$mosquitto_pid" 2>/dev/null || true
  forget_pid "$mosquitto_pid"
  mosquitto -c "$work/mqtt/mosquitto.conf" >>"$work/mosquitto.out" 2>&1 &
  mosquitto_pid=$!
  pids+=("$mosquitto_pid")
  wait_until 10 "mosquitto back on $mqtt_port" bash -c "exec 3<>/dev/tcp/127.0.0.1/$mqtt_port"
}

# wait_stable PREFIX: the stored count of the zones PREFIX* once it stopped moving for 10 s.
wait_stable() {
  local last=-1 n same=0
  while [ "$same" -lt 10 ]; do
    n=$(flux_count "$1")
    if [ "$n" -eq "$last" ]; then same=$((same + 1)); else same=0; last=$n; fi
    sleep 1
  done
  echo "$last"
}

published() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["readings"])' "$1"; }

echo "Mosquitto persistence settings: cost and crash loss, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores"
echo "  $(mosquitto -h 2>/dev/null | head -n 1); steady $STEADY_RATE readings/s; backlog $BACKLOG; live crash at $LIVE_RATE readings/s"
echo "  load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
i=0
IFS='|' read -r -a settings <<<"$SETTINGS"
for entry in "${settings[@]}"; do
  i=$((i + 1))
  name=${entry%%=*}
  IFS=';' read -r -a mosquitto_settings <<<"${entry#*=}"
  mosquitto_settings+=("max_queued_messages 0" "max_queued_bytes 0")
  rm -rf "$work/mqtt" "$work/spool"
  : >"$work/ingest.log"
  start_mosquitto
  export ARNG_MQTT_URL=mqtt://127.0.0.1:$mqtt_port
  start_ingest 1

  # 1. steady cost
  b0=$(cpu_ticks "$mosquitto_pid"); s0=$(saves)
  sim --zones "c${i}s1,c${i}s2,c${i}s3,c${i}s4" --sensors-per-zone 500 --rate "$STEADY_RATE" --duration 20s \
    >"$work/steady-$i.json" 2>>"$work/sim.log"
  n=$(published "$work/steady-$i.json")
  b1=$(cpu_ticks "$mosquitto_pid"); s1=$(saves)
  rate=$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["readings_per_s"]))' "$work/steady-$i.json")
  steady_cpu=$(echo "($b1 - $b0) / $clk_tck / $n * 10000" | bc -l)
  printf 'setting %-15s steady: %s readings at %s/s, Mosquitto %.3f CPU s/10k, %d saves (load %s)\n' \
    "$name" "$n" "$rate" "$steady_cpu" "$((s1 - s0))" "$(cut -d' ' -f1 /proc/loadavg)"

  # 2. backlog, then a crash
  stop_ingest
  b0=$(cpu_ticks "$mosquitto_pid"); s0=$(saves); t0=$(date +%s.%N)
  sim --zones "c${i}b1,c${i}b2,c${i}b3,c${i}b4" --sensors-per-zone 500 --count $((BACKLOG / 2000)) --rate max \
    >"$work/backlog-$i.json" 2>>"$work/sim.log"
  t1=$(date +%s.%N)
  b1=$(cpu_ticks "$mosquitto_pid"); s1=$(saves)
  qn=$(published "$work/backlog-$i.json")
  q_rate=$(echo "$qn / ($t1 - $t0)" | bc -l)
  q_cpu=$(echo "($b1 - $b0) / $clk_tck / $qn * 10000" | bc -l)
  db=$(db_bytes)
  crash_and_restart_broker
  start_ingest 2
  kept=$(wait_stable "c${i}b")
  printf 'setting %-15s backlog: %s queued at %.0f/s, Mosquitto %.3f CPU s/10k, %d saves (last file %s bytes); after SIGKILL %s of %s kept (load %s)\n' \
    "$name" "$qn" "$q_rate" "$q_cpu" "$((s1 - s0))" "$db" "$kept" "$qn" "$(cut -d' ' -f1 /proc/loadavg)"

  # 3. live crash
  sim --zones "c${i}l1,c${i}l2" --sensors-per-zone 100 --rate "$LIVE_RATE" --duration 60s \
    >"$work/live-$i.json" 2>>"$work/sim.log" &
  simp=$!
  pids+=("$simp")
  sleep 30
  s_before=$(saves)
  crash_and_restart_broker
  wait "$simp" || die "arng simulate failed during the live crash (see sim.log)"
  forget_pid "$simp"
  ln=$(published "$work/live-$i.json")
  stored=$(wait_stable "c${i}l")
  printf 'setting %-15s live crash at 30 s: %s published and acknowledged, %s stored, %s lost (%s saves before the crash) (load %s)\n' \
    "$name" "$ln" "$stored" "$((ln - stored))" "$s_before" "$(cut -d' ' -f1 /proc/loadavg)"
  stop_ingest
  kill "$mosquitto_pid"; wait "$mosquitto_pid" 2>/dev/null || true
  forget_pid "$mosquitto_pid"
  echo "$name|$rate|$steady_cpu|$((s1 - s0))|$q_rate|$q_cpu|$kept|$qn|$((ln - stored))|$ln" >>"$results"
done

echo
echo "| setting | steady: Mosquitto CPU s/10k | backlog: publish rate/s | backlog: Mosquitto CPU s/10k | backlog kept after SIGKILL | live crash: lost of published |"
echo "|---|---|---|---|---|---|"
while IFS='|' read -r name rate steady_cpu saves q_rate q_cpu kept qn lost ln; do
  printf '| %s | %.3f | %.0f | %.3f | %s of %s | %s of %s |\n' "$name" "$steady_cpu" "$q_rate" "$q_cpu" "$kept" "$qn" "$lost" "$ln"
done <"$results"
echo
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
