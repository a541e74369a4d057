#!/usr/bin/env bash
# Usage: bench/vs-telegraf.sh [ROUNDS]
#
# `arng ingest` next to Telegraf (mqtt_consumer -> influxdb_v2, bench/telegraf.conf)
# on the same stream, against the same Mosquitto and the same influxd, in alternating
# rounds (arng, Telegraf, arng, Telegraf, ...; ROUNDS each, default 3). Prints one
# line per round, then the medians per tool and the ratios arng/Telegraf of: sustained
# readings/s with no loss, CPU seconds per 10,000 readings, peak resident memory and
# p99 publish -> queryable-in-InfluxDB lag. docs/performance.md ("arng vs Telegraf")
# holds a run's figures and the reasoning behind each choice below.
#
# One run, all on 127.0.0.1 ports it picks, in a temp dir, every process stopped by pid:
#   Mosquitto  mosquitto-conf/mosquitto.conf rendered by scripts/broker-config.sh
#   influxd    scripts/build-influxd.sh (or $ARNG_INFLUXD); org ares, bucket entrepot
#   Telegraf   scripts/build-telegraf.sh (or $ARNG_TELEGRAF), config bench/telegraf.conf
#   arng       release build: `arng ingest` (the tool under test), `arng simulate`
#
# One round of one tool, identical for both:
#   1. start the tool (a fresh process, so peak memory is this round's): MQTT account
#      `ingest`, QoS 1, persistent session, fixed client id (arng-ingest,
#      telegraf-ingest), batches of BATCH points;
#   2. warm-up: publish 10 readings in a throw-away zone until a set of them is all
#      queryable in InfluxDB (the tool is subscribed and writing), then wait until
#      influxd, Mosquitto and the tool are idle;
#   3. read the CPU time (/proc/<pid>/stat) of the tool, influxd and Mosquitto; start
#      polling the count of a sample of the round's sensors in InfluxDB every POLL
#      seconds (the lag curve);
#   4. `arng simulate --rate RATE --duration DURATION --qos 1 --seed ROUND` publishes
#      into 4 zones of its own (a<round>z1.. for arng, t<round>z1.. for Telegraf, so
#      every count is attributable). Same seed for both tools' round N, so the same
#      sensors on the same schedule with payloads of the same size (the values also
#      depend on the zone's name, so they differ);
#   5. the round ends when InfluxDB holds every published reading (a full count once a
#      second after the publisher ended), or when that count has not moved for STALL
#      seconds, or CATCHUP seconds after the publisher ended: then the round counts as
#      lost, and as 0 readings/s sustained;
#   6. CPU time again and VmHWM (/proc/<pid>/status) for peak memory, both read when
#      the count last changed (a stalled round is not charged the wait), the final count;
#      stop the tool (SIGTERM) and delete its broker session (a clean-session connect
#      with its client id), so the broker does not queue the other tool's round for
#      it; lag and throughput from the polls and the stored timestamps
#      (bench/vs_telegraf.py explains the computation).
#
# Environment (defaults in brackets):
#   RATE [20000] readings/s published      DURATION [20s] per round
#   SENSORS_PER_ZONE [500]  ZONES_PER_ROUND [4]   BATCH [5000] points per write (both)
#   POLL [0.2] seconds between sample counts  CATCHUP [120] STALL [30] seconds (step 5)
#   IDLE_MAX [60] longest wait for idle servers before a round
#   TELEGRAF_FLUSH [100ms] Telegraf's flush_interval (100ms: arng's --batch-timeout)
#   TELEGRAF_UNDELIVERED [10000] Telegraf's max_undelivered_messages
#   BROKER_SETTINGS  "option value;option value" changed in the broker's rendered copy
#                 (to try another in-flight window, e.g. "max_inflight_messages 1000")
#   ARNG_ARGS     extra options for arng ingest
#   ARNG_INFLUXD, ARNG_TELEGRAF   binaries to use instead of building them
#   BENCH_KEEP=1  keep the temp dir (logs, polls, per-round JSON) after the run
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${1:-3}
RATE=${RATE:-20000}
DURATION=${DURATION:-20s}
SENSORS=${SENSORS_PER_ZONE:-500}
NZONES=${ZONES_PER_ROUND:-4}
BATCH=${BATCH:-5000}
POLL=${POLL:-0.2}
CATCHUP=${CATCHUP:-120}
STALL=${STALL:-30}
IDLE_MAX=${IDLE_MAX:-60}
TELEGRAF_FLUSH=${TELEGRAF_FLUSH:-100ms}
TELEGRAF_UNDELIVERED=${TELEGRAF_UNDELIVERED:-10000}

bench_name=vs-telegraf
. bench/lib.sh

for v in ROUNDS RATE SENSORS NZONES BATCH CATCHUP STALL IDLE_MAX TELEGRAF_UNDELIVERED; do
  case "${!v}" in '' | *[!0-9]* | 0) echo "vs-telegraf: $v must be a positive integer, got '${!v}'" >&2; exit 2 ;; esac
done

bench_tools
bench_arng
bench_influxd

bench_workdir arng-vs-telegraf
IFS=';' read -r -a mosquitto_settings <<<"${BROKER_SETTINGS:-}"
read -r -a arng_args <<<"${ARNG_ARGS:-}"
start_mosquitto
start_influxd
. bench/tools.sh
tools_setup

# arng's own lag histogram (arng_ingest_lag_seconds, read with `prom`) is shown next
# to the external measure for the arng rounds as a cross-check; never used in the
# comparison.

results=$work/results.jsonl
: >"$results"

# broker_counters: Mosquitto's read and write system calls and voluntary context
# switches (its wake-ups from epoll_wait), and the machine's TCP segments received, for
# where the broker's CPU goes (docs/performance.md).
broker_counters() {
  echo "$(awk '/^syscr:/ {r=$2} /^syscw:/ {w=$2} END {print r, w}' "/proc/$mosquitto_pid/io")" \
    "$(awk '/^voluntary_ctxt_switches:/ {print $2}' "/proc/$mosquitto_pid/status")" \
    "$(awk '/^Tcp:/ {n++; if (n == 1) for (i = 1; i <= NF; i++) col[$i] = i; else print $col["InSegs"]}' /proc/net/snmp)"
}

# link_segments: TCP segments on the tool's own connection to the broker, from the
# broker's socket (`ss -ti`): "data segments broker -> tool" "segments tool -> broker".
link_segments() {
  local port
  port=$(ss -tnpH "( dport = :$mqtt_port )" | grep "pid=$tool_pid," | awk '{ n = split($4, a, ":"); print a[n] }' | head -n 1)
  [ -n "$port" ] || { echo "0 0"; return; }
  ss -tinH "( sport = :$mqtt_port and dport = :$port )" | tr ' ' '\n' \
    | awk -F: '$1 == "data_segs_out" { d = $2 } $1 == "segs_in" { i = $2 } END { print d + 0, i + 0 }'
}

run_round() {
  local tool=$1 round=$2 prefix zones since polls stop poller sim published last
  local counters_0 counters_1 link_0 link_1
  local started_at stalled_at last_count t_tool t_influxd t_broker hwm="" stored load own=()
  local end_tool end_influxd end_broker
  prefix="${tool:0:1}${round}z"
  zones=$(seq 1 "$NZONES" | sed "s/^/$prefix/" | paste -sd,)
  start_tool "$tool" "$round" --batch-size "$BATCH" "${arng_args[@]}"
  warm_up "$tool" "$round"
  wait_idle "$IDLE_MAX" "$influxd_pid" "$mosquitto_pid" "$tool_pid"
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  since=$(($(date +%s) - 5))
  polls=$work/polls-$tool-$round.txt
  stop=$work/stop-$tool-$round
  [ "$tool" != arng ] || prom >"$work/prom-before-$round.txt"
  t_tool=$(cpu_ticks "$tool_pid")
  t_influxd=$(cpu_ticks "$influxd_pid")
  t_broker=$(cpu_ticks "$mosquitto_pid")
  counters_0=$(broker_counters)
  link_0=$(link_segments)
  python3 bench/vs_telegraf.py poll --influx "$influx" --prefix "$prefix" --since "$since" \
    --interval "$POLL" --sensors-per-zone "$SENSORS" --out "$polls" --stop "$stop" 2>>"$work/poll.log" &
  poller=$!
  pids+=("$poller")
  simulate --zones "$zones" --sensors-per-zone "$SENSORS" --rate "$RATE" --duration "$DURATION" \
    --seed "$round" --json >"$work/sim-$tool-$round.json" 2>"$work/sim-$tool-$round.log" &
  sim=$!
  pids+=("$sim")
  wait "$sim" || die "arng simulate failed (round $round, $tool): $(tail -n 5 "$work/sim-$tool-$round.log")"
  forget_pid "$sim"
  published=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["readings"])' "$work/sim-$tool-$round.json")
  # Completion is checked with the full count, once a second (a full count costs
  # influxd far more than the sample polls: see bench/vs_telegraf.py).
  # The CPU times and peak memory are read at the last change of the count, so a
  # round that stalls is not charged the STALL seconds spent waiting for nothing.
  started_at=$SECONDS
  stalled_at=$SECONDS
  last_count=-1
  while :; do
    last=$(flux_count "$prefix")
    if [ "$last" -ne "$last_count" ]; then
      last_count=$last
      stalled_at=$SECONDS
      end_tool=$(cpu_ticks "$tool_pid" 2>/dev/null || echo "$t_tool")
      end_influxd=$(cpu_ticks "$influxd_pid")
      end_broker=$(cpu_ticks "$mosquitto_pid")
      counters_1=$(broker_counters)
      link_1=$(link_segments)
      hwm=$(peak_rss_kib "$tool_pid" 2>/dev/null || echo "${hwm:-0}")
    fi
    [ "$last" -lt "$published" ] || break
    if [ $((SECONDS - stalled_at)) -ge "$STALL" ] || [ $((SECONDS - started_at)) -ge "$CATCHUP" ]; then
      log "round $round ($tool): $last of $published readings stored; giving up"
      break
    fi
    kill -0 "$tool_pid" 2>/dev/null || { log "round $round: $tool exited (see $tool-$round.log)"; break; }
    sleep 1
  done
  t_tool=$((end_tool - t_tool))
  t_influxd=$((end_influxd - t_influxd))
  t_broker=$((end_broker - t_broker))
  : >"$stop"
  wait "$poller" || true
  forget_pid "$poller"
  if [ "$tool" = arng ]; then
    prom >"$work/prom-after-$round.txt"
    own=(--prom-before "$work/prom-before-$round.txt" --prom-after "$work/prom-after-$round.txt")
  fi
  stop_tool "$tool"
  # The count that decides loss: after the tool has flushed and stopped, so a reading
  # written late is still credited, and one never written is not.
  stored=$(flux_count "$prefix")
  python3 bench/vs_telegraf.py round --influx "$influx" --prefix "$prefix" --since "$since" \
    --tool "$tool" --round "$round" --sensors-per-zone "$SENSORS" --polls "$polls" --sim "$work/sim-$tool-$round.json" \
    --results "$results" --load "$load" --stored "$stored" --clk-tck "$clk_tck" \
    --tool-ticks "$t_tool" --influxd-ticks "$t_influxd" --broker-ticks "$t_broker" \
    --hwm-kib "$hwm" --broker-counters "$counters_0 $counters_1" --link-segments "$link_0 $link_1" "${own[@]}"
}

# ----- the run ------------------------------------------------------------------------
echo "arng ingest vs Telegraf, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
echo "  $("$arng" --version), $("$telegraf" --version), $(mosquitto -h 2>/dev/null | head -n 1), influxd $("$influxd_bin" version 2>/dev/null | awk '{ print $2 }')"
echo "  stream: $RATE readings/s for $DURATION, QoS 1, $NZONES zones x $SENSORS sensors per round, arng simulate --seed <round>"
echo "  arng ingest --client-id arng-ingest --batch-size $BATCH ${ARNG_ARGS:-}(other options at their defaults)"
[ -z "${BROKER_SETTINGS:-}" ] || echo "  broker settings changed: $BROKER_SETTINGS"
echo "  telegraf --config bench/telegraf.conf  (metric_batch_size $BATCH, flush_interval $TELEGRAF_FLUSH, max_undelivered_messages $TELEGRAF_UNDELIVERED)"
echo "  both: MQTT account ingest, QoS 1, persistent session; lag from a sample of sensors polled in InfluxDB every ${POLL}s"
echo "  load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (other processes share these cores: see the load of each round)"
echo
run_started=$(($(date +%s) - 60))
for round in $(seq "$ROUNDS"); do
  run_round arng "$round"
  run_round telegraf "$round"
done

echo
echo "the same reading as each tool stored it (round 1, same seed; the timestamps differ by the time between the rounds):"
python3 bench/vs_telegraf.py points --influx "$influx" --prefix a1z --since "$run_started" --tool arng
python3 bench/vs_telegraf.py points --influx "$influx" --prefix t1z --since "$run_started" --tool telegraf
echo
echo "broker log, connections with the tools' client ids (c0: persistent session, the tool;"
echo "c1: the clean-session connect that deletes it after each round):"
grep -Eo "New client connected from [^ ]+ as (arng|telegraf)-ingest \([^)]*\)" "$work/mqtt/mosquitto.log" \
  | sed 's/from [^ ]* //' | sort | uniq -c | sed 's/^/  /'
python3 bench/vs_telegraf.py summary --results "$results"
echo
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
