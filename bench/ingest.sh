#!/usr/bin/env bash
# Benchmark of `arng ingest`: sustained QoS 1 readings/s from a local Mosquitto into a
# local InfluxDB (all on this machine), p99 MQTT→InfluxDB lag, peak resident memory.
#
# Each round publishes RATE readings/s for DURATION with `arng simulate` (QoS 1, its
# own zones so rounds are counted apart), then waits for ingest to write them all and
# checks the count in InfluxDB, so no round is credited for readings it lost.
# "Sustained" = readings / (the publisher's publishing time + ingest's catch-up after
# the publisher stopped), i.e. from the first reading published to the last written.
# Prints one line per round and the medians.
#
# Usage: bench/ingest.sh [ROUNDS] ; environment: RATE (20000), DURATION (20s),
# SENSORS_PER_ZONE (500), ZONES_PER_ROUND (4), BATCH (5000), ARNG_ARGS (more options
# for arng ingest, to try other settings), BASELINE (another arng binary, e.g. a
# release build of main: each round then runs it too, right after this build, on the
# same servers, and the medians of both are printed side by side). Servers and
# helpers: bench/lib.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
RATE=${RATE:-20000}
DURATION=${DURATION:-20s}
SENSORS=${SENSORS_PER_ZONE:-500}
NZONES=${ZONES_PER_ROUND:-4}
BATCH=${BATCH:-5000}
read -r -a arng_args <<<"${ARNG_ARGS:-}"

bench_name=bench-ingest
. bench/lib.sh
bench_tools
bench_arng
bench_influxd
bench_workdir arng-bench-ingest
pw() { account "$1"; }

start_mosquitto
mport=$mqtt_port
start_influxd
iport=${influx##*:}

export ARNG_MQTT_URL="mqtt://127.0.0.1:$mport" INFLUX_URL="http://127.0.0.1:$iport" INFLUX_TOKEN=dev-token
labels=(this)
bench_baseline
[ -z "$baseline" ] || labels+=(baseline)
ingest_pid=""
# start_ingest BINARY: a fresh ingest (its own spool, same client id and session).
start_ingest() {
  metrics_port=$(free_port)
  ARNG_MQTT_USERNAME=ingest ARNG_MQTT_PASSWORD=$(pw ingest) RUST_LOG=arng=warn \
    "$1" ingest --metrics-port "$metrics_port" --spool-dir "$work/spool-$2" --batch-size "$BATCH" "${arng_args[@]}" >>"$work/ingest.log" 2>&1 &
  ingest_pid=$!
  pids+=("$ingest_pid")
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$metrics_port/metrics" >/dev/null && break; sleep 0.1; done
  # Subscribed (a fresh broker has no session before the first SUBSCRIBE).
  for _ in $(seq 1 100); do [ "$(metrics | awk '$1=="arng_ingest_mqtt_connected"{print $2}')" = 1 ] && break; sleep 0.1; done
  sleep 0.5
}
stop_ingest() {
  kill -TERM "$ingest_pid" 2>/dev/null || true
  wait "$ingest_pid" 2>/dev/null || true
  local i
  for i in "${!pids[@]}"; do [ "${pids[i]}" != "$ingest_pid" ] || unset 'pids[i]'; done
  pids=("${pids[@]}")
}

metrics() { curl -sf "http://127.0.0.1:$metrics_port/metrics"; }
written() { metrics | awk '$1=="arng_ingest_readings_written_total"{print $2}'; }

results="$work/results.txt"
: >"$results"
for round in $(seq 1 "$ROUNDS"); do
for label in "${labels[@]}"; do
  if [ "$label" = this ]; then bin=$arng; else bin=$baseline; fi
  start_ingest "$bin" "$label"
  zones=$(seq 1 "$NZONES" | sed "s/^/r${round}${label:0:1}z/" | paste -sd,)
  before=$(written)
  metrics >"$work/before.prom"
  peak=0
  start=$(date +%s.%N)
  ARNG_MQTT_USERNAME=simulator ARNG_MQTT_PASSWORD=$(pw simulator) RUST_LOG=arng=warn \
    "$arng" simulate --zones "$zones" --sensors-per-zone "$SENSORS" --rate "$RATE" --duration "$DURATION" \
    --qos 1 --no-alerts --json >"$work/sim.json" 2>"$work/sim.log" & sim=$!
  published=""
  while :; do
    rss=$(awk '/VmRSS/{print $2}' "/proc/$ingest_pid/status")
    [ "$rss" -gt "$peak" ] && peak=$rss
    if ! kill -0 "$sim" 2>/dev/null; then
      wait "$sim" || { echo "simulate failed:"; cat "$work/sim.log"; exit 1; }
      sim_end=$(date +%s.%N)
      published=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["readings"])' "$work/sim.json")
    fi
    if [ -n "$published" ]; then
      now_written=$(written)
      if python3 -c "import sys; sys.exit(0 if float('$now_written') - float('$before') >= $published else 1)"; then break; fi
      elapsed=$(python3 -c "print($(date +%s.%N) - $start)")
      python3 -c "import sys; sys.exit(0 if $elapsed < 120 else 1)" || { echo "round $round: ingest did not catch up within 120 s"; break; }
    fi
    sleep 0.2
  done
  end=$(date +%s.%N)
  metrics >"$work/after.prom"
  stored=$(flux_count "r${round}${label:0:1}z")
  python3 - "$work/before.prom" "$work/after.prom" "$published" "$stored" "$sim_end" "$end" "$peak" "$work/sim.json" >>"$results" <<'PY'
import sys, json
def hist(path):
    b = {}
    for line in open(path):
        if line.startswith('arng_ingest_lag_seconds_bucket'):
            le = line.split('le="')[1].split('"')[0]
            b[le] = float(line.split()[-1])
    return b
before, after = hist(sys.argv[1]), hist(sys.argv[2])
published, stored = int(sys.argv[3]), int(sys.argv[4] or 0)
sim_end, end, peak_kb = float(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
sim = json.load(open(sys.argv[8]))
bounds = sorted((float('inf') if k == '+Inf' else float(k), k) for k in after)
total = after['+Inf'] - before.get('+Inf', 0)
p99 = None
for v, k in bounds:
    if after[k] - before.get(k, 0) >= 0.99 * total:
        p99 = v
        break
# From the publisher's first reading to ingest's last write: the publisher's own
# publishing time plus the catch-up after it stopped (0 when ingest kept up).
tail = max(0.0, end - sim_end)
rate = published / (sim["duration_s"] + tail)
pub_rate = round(sim.get("readings_per_s", 0))
print(f"{published} {stored} {rate:.0f} {p99} {peak_kb/1024:.1f} {pub_rate} {tail:.1f}")
PY
  sed -i '$ s/$/ '"$label"'/' "$results"
  read -r pub st rate p99 rss prate tail _ < <(tail -n 1 "$results")
  stop_ingest
  echo "round $round ($label, load $(cut -d' ' -f1 /proc/loadavg)): published $pub, in InfluxDB $st, sustained $rate readings/s (publisher $prate/s, catch-up ${tail}s after it stopped), p99 lag <= ${p99}s, peak RSS ${rss} MiB"
done
done

python3 - "$results" <<'PY'
import sys, statistics
all_rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
for label in dict.fromkeys(r[7] for r in all_rows):
    rows = [r for r in all_rows if r[7] == label]
    med = lambda i: statistics.median(float(r[i]) for r in rows)
    lost = sum(int(r[0]) - int(r[1]) for r in rows)
    print(f"\n{label}: medians over {len(rows)} rounds: sustained {med(2):.0f} readings/s, p99 lag <= {med(3)} s, peak RSS {med(4):.1f} MiB; readings missing in InfluxDB: {lost}")
PY
