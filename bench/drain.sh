#!/usr/bin/env bash
# Usage: bench/drain.sh [ROUNDS]
#
# The restart after an outage: N readings wait in the tool's persistent session on the
# broker, queued while the tool was down; then the tool starts and drains them into
# InfluxDB. `arng ingest` (default settings) and Telegraf (bench/telegraf.conf, the
# configuration of bench/vs-telegraf.sh) in alternating rounds against the same
# Mosquitto and influxd, plus in each round the floor: the same number of points
# posted straight to influxd as plain 5,000-line gzip bodies. Prints per round and as
# medians: drain readings/s, CPU seconds per 10,000 readings of the tool, influxd and
# Mosquitto, the tool's peak resident memory (VmHWM), and the ratios that
# docs/performance.md ("Draining a backlog") quotes.
#
# One round of one tool:
#   1. start the tool (it subscribes: its persistent session exists), store a warm-up
#      reading, stop it with SIGTERM, keeping the session;
#   2. `arng simulate --count N/2000 --rate max --qos 1` publishes N readings into the
#      round's 4 zones x 500 sensors (d<round>a.. for arng, d<round>t.. for Telegraf);
#      the broker queues them for the stopped tool;
#   3. wait until the broker and influxd are idle, read their CPU times, start the tool;
#   4. the drain ends when InfluxDB holds all N readings: the count of one sensor per
#      zone is polled every POLL seconds (cheap), then confirmed by a full count;
#   5. CPU times of the tool (its whole life), influxd and Mosquitto (from its start to
#      the end of the drain), the tool's VmHWM; stop it and delete its broker session.
# The floor: N points of the same shape (4 zones x 500 sensors, same fields, one
# timestamp per reading) pre-encoded as gzip bodies of 5,000 lines, then posted one
# after the other on one keep-alive connection while influxd's CPU time is read.
#
# The broker is mosquitto-conf/mosquitto.conf (scripts/broker-config.sh) with
# max_queued_messages and max_queued_bytes lifted (0: no limit), so the whole backlog
# is kept, and autosave_interval 0 (persistence on, saved only at exit), so that no
# save of a database holding millions of messages lands in one tool's round and not
# the other's (docs/reliability.md measures autosave on its own).
#
# Environment (defaults in brackets): N [2000000] readings per round (a multiple of
# 2000), POLL [0.5] seconds, STALL [60] seconds without progress before a round gives
# up, IDLE_MAX [120], TELEGRAF_FLUSH [100ms], TELEGRAF_UNDELIVERED [10000], BATCH [5000]
# (Telegraf's metric_batch_size; arng runs with its defaults), ARNG_ARGS (extra
# options for arng ingest, to try other settings), TOOLS ["arng telegraf floor"] (what
# each round runs, in order), ARNG_INFLUXD, ARNG_TELEGRAF, BENCH_KEEP=1 (keep the temp
# dir and logs).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-3}
N=${N:-2000000}
POLL=${POLL:-0.5}
STALL=${STALL:-60}
IDLE_MAX=${IDLE_MAX:-120}
BATCH=${BATCH:-5000}
TOOLS=${TOOLS:-arng telegraf floor}
ZONES=4
SENSORS=500
read -r -a arng_args <<<"${ARNG_ARGS:-}"

bench_name=drain
. bench/lib.sh

for v in ROUNDS N STALL IDLE_MAX BATCH; do
  case "${!v}" in '' | *[!0-9]* | 0) echo "drain: $v must be a positive integer, got '${!v}'" >&2; exit 2 ;; esac
done
[ $((N % (ZONES * SENSORS))) -eq 0 ] || { echo "drain: N must be a multiple of $((ZONES * SENSORS))" >&2; exit 2; }
PER_SENSOR=$((N / (ZONES * SENSORS)))

bench_tools
bench_arng
bench_influxd
bench_workdir arng-drain
mosquitto_settings=("max_queued_messages 0" "max_queued_bytes 0" "autosave_interval 0")
start_mosquitto
start_influxd
. bench/tools.sh
tools_setup

results=$work/results.jsonl
: >"$results"

# sample_count PREFIX: readings of sensor s1 in the round's zones (ZONES x PER_SENSOR
# when complete). The broker delivers a session's queue in order, so the sample
# completes with the last batches.
sample_count() {
  curl -sf -m 30 -XPOST "$influx/api/v2/query?org=ares" -H "Authorization: Token dev-token" \
    -H "Content-Type: application/vnd.flux" \
    -d "from(bucket:\"entrepot\") |> range(start: -1d, stop: 1d) |> filter(fn:(r) => r._measurement == \"readings\" and r._field == \"temp\" and r.sensor == \"s1\" and r.zone =~ /^$1/) |> group() |> count()" \
    | awk -F, 'NR==2{v=$NF} END{gsub(/\r/, "", v); print v + 0}'
}

now() { date +%s.%N; }

# record KEY=VALUE...: one JSON line of results.
record() {
  python3 -c 'import json,sys; print(json.dumps({k: v for k, v in (a.split("=", 1) for a in sys.argv[1:])}))' "$@" >>"$results"
}

# wait_stored PREFIX PID: returns once InfluxDB holds N readings of the round's zones,
# or STALL seconds pass without progress; PID (the tool or the floor's poster) must
# stay alive until then. The count of one sensor per zone is polled every POLL seconds
# (cheap); once complete, a full count confirms it (the last readings of other
# sensors may still be in the last write). Sets stored, t1, and the CPU times
# influxd_t, broker_t (since influxd_0, broker_0), tool_t and hwm of PID.
wait_stored() {
  local prefix=$1 pid=$2 n last=-1 stalled_at=$SECONDS sample_total=$((ZONES * PER_SENSOR))
  while :; do
    n=$(sample_count "$prefix")
    if [ "$n" -ne "$last" ]; then last=$n; stalled_at=$SECONDS; fi
    [ "$n" -lt "$sample_total" ] || break
    if [ $((SECONDS - stalled_at)) -ge "$STALL" ]; then
      log "$prefix: the sample stopped at $n of $sample_total; giving up"
      break
    fi
    kill -0 "$pid" 2>/dev/null || die "$prefix: process $pid exited before the end (see the logs)"
    sleep "$POLL"
  done
  while :; do
    t1=$(now)
    tool_t=$(cpu_ticks "$pid" 2>/dev/null || echo 0)
    hwm=$(peak_rss_kib "$pid" 2>/dev/null || echo 0)
    influxd_t=$(($(cpu_ticks "$influxd_pid") - influxd_0))
    broker_t=$(($(cpu_ticks "$mosquitto_pid") - broker_0))
    stored=$(flux_count "$prefix")
    [ "$stored" -lt "$N" ] || break
    [ $((SECONDS - stalled_at)) -lt "$STALL" ] || { log "$prefix: $stored of $N stored; giving up"; break; }
    sleep "$POLL"
  done
}

run_drain() {
  local tool=$1 round=$2 prefix zones load t0
  prefix="d${round}${tool:0:1}"
  zones=$(seq 1 "$ZONES" | sed "s/^/${prefix}z/" | paste -sd,)
  start_tool "$tool" "$round" "${arng_args[@]}"
  warm_up "$tool" "$round"
  stop_tool "$tool" keep
  log "round $round ($tool): publishing $N readings while $tool is down"
  simulate --zones "$zones" --sensors-per-zone "$SENSORS" --count "$PER_SENSOR" --rate max \
    --seed "$round" --json >"$work/sim-$tool-$round.json" 2>"$work/sim-$tool-$round.log" \
    || die "arng simulate failed: $(tail -n 5 "$work/sim-$tool-$round.log")"
  wait_idle "$IDLE_MAX" "$influxd_pid" "$mosquitto_pid"
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  influxd_0=$(cpu_ticks "$influxd_pid")
  broker_0=$(cpu_ticks "$mosquitto_pid")
  t0=$(now)
  start_tool "$tool" "$round" "${arng_args[@]}"
  wait_stored "$prefix" "$tool_pid"
  local batch=""
  if [ "$tool" = arng ]; then
    prom >"$work/prom-$round.txt"
    batch=$(awk '$1=="arng_ingest_batch_points_sum"{s=$2} $1=="arng_ingest_batch_points_count"{c=$2} END{if (c > 0) printf "%.0f", s / c}' "$work/prom-$round.txt")
  fi
  stop_tool "$tool"
  record kind=drain batch_points="$batch" tool="$tool" round="$round" n="$N" stored="$stored" seconds="$(echo "$t1 - $t0" | bc -l)" \
    tool_ticks="$tool_t" influxd_ticks="$influxd_t" broker_ticks="$broker_t" hwm_kib="$hwm" \
    clk_tck="$clk_tck" load="$load" published="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["readings"])' "$work/sim-$tool-$round.json")"
  python3 bench/drain.py line --results "$results"
}

# The floor is measured like a tool: the same polls and final count run while the
# bodies are posted, so influxd's CPU includes the same queries.
run_floor() {
  local round=$1 prefix load t0 poster
  prefix="d${round}f"
  python3 bench/drain.py make-floor --dir "$work/floor-$round" --prefix "${prefix}z" --zones "$ZONES" \
    --sensors "$SENSORS" --per-sensor "$PER_SENSOR" --batch 5000
  wait_idle "$IDLE_MAX" "$influxd_pid" "$mosquitto_pid"
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  influxd_0=$(cpu_ticks "$influxd_pid")
  broker_0=$(cpu_ticks "$mosquitto_pid")
  t0=$(now)
  python3 bench/drain.py post-floor --dir "$work/floor-$round" --influx "$influx" &
  poster=$!
  pids+=("$poster")
  # The poster may finish before the last poll: keep a process to watch.
  wait_stored "$prefix" "$mosquitto_pid"
  wait "$poster" || die "posting the floor's bodies failed"
  forget_pid "$poster"
  rm -rf "$work/floor-$round"
  record kind=floor tool=floor round="$round" n="$N" stored="$stored" seconds="$(echo "$t1 - $t0" | bc -l)" \
    influxd_ticks="$influxd_t" clk_tck="$clk_tck" load="$load"
  python3 bench/drain.py line --results "$results"
}

command -v bc >/dev/null 2>&1 || apt_install bc
echo "drain of a persistent session's backlog, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
echo "  $("$arng" --version), $("$telegraf" --version), $(mosquitto -h 2>/dev/null | head -n 1), influxd $("$influxd_bin" version 2>/dev/null | awk '{ print $2 }')"
echo "  backlog: $N readings per round ($ZONES zones x $SENSORS sensors x $PER_SENSOR), QoS 1, queued while the tool is down"
echo "  arng ingest ${ARNG_ARGS:-(default settings)}; telegraf --config bench/telegraf.conf (metric_batch_size $BATCH, flush_interval ${TELEGRAF_FLUSH:-100ms}, max_undelivered_messages ${TELEGRAF_UNDELIVERED:-10000})"
echo "  broker: mosquitto-conf/mosquitto.conf with ${mosquitto_settings[*]}"
echo "  load average at start: $(cut -d' ' -f1-3 /proc/loadavg); uptime: $(uptime)"
echo
for round in $(seq "$ROUNDS"); do
  for tool in $TOOLS; do
    case "$tool" in
      arng | telegraf) run_drain "$tool" "$round" ;;
      floor) run_floor "$round" ;;
      *) die "TOOLS: unknown '$tool' (arng, telegraf, floor)" ;;
    esac
  done
done
python3 bench/drain.py summary --results "$results"
echo
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg); uptime: $(uptime)"
