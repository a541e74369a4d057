#!/usr/bin/env bash
# Usage: bench/scale-out.sh [ROUNDS]
#
# `arng ingest` scaled out over 1, 2 and 3 workers of one shared-subscription group
# (`--share-group`, docs/scaling.md), against one Mosquitto and one influxd on this
# machine. Per worker count, in interleaved rounds (1, 2, 3, 1, 2, 3, ...; ROUNDS each,
# default 3), two measurements:
#
#   stream   the workers are subscribed and idle; `arng simulate` publishes RATE
#            readings/s at QoS 1 for DURATION; the phase ends when the workers have
#            written every reading (their arng_ingest_readings_written_total). CPU
#            seconds per 10,000 readings of the workers (together), Mosquitto and
#            influxd over the phase: the steady-state cost the capacity model of
#            docs/scaling.md is built on (bench/capacity.sh).
#   drain    the workers are frozen (SIGSTOP) while BACKLOG readings are published
#            (--rate max) and queued by the broker in their sessions, then released
#            (SIGCONT): readings/s from the release to the last write, and the same
#            CPU figures (Mosquitto's include receiving the backlog).
#
# Each round uses its own zones (s<round>w<workers>z1.. and b<round>w<workers>z1..), so
# InfluxDB's count of each phase is checked: a round that lost a reading fails the run.
# Its workers are fresh processes with their own group and client ids; after the round
# they stop (SIGTERM) and their broker sessions are deleted (a clean-session connect
# per client id), so no later round is queued for them.
#
# Holds /tmp/arng-bench.lock for the whole run (no two benchmarks at once on the shared
# machine) and prints `uptime` before and after. The last lines are the medians of
# the 1-worker stream phase in the format of bench/capacity.txt.
#
# Environment (defaults in brackets): RATE [5000] readings/s of the stream phase,
# DURATION [10s], BACKLOG [60000] readings of the drain phase (at most
# max_queued_messages of mosquitto.conf per worker), SENSORS_PER_ZONE [1250],
# ZONES_PER_ROUND [4], WORKERS ["1 2 3"], BENCH_KEEP=1 keeps the temp dir; servers
# and helpers: bench/lib.sh. Many sensors, so that no sensor publishes twice within one
# millisecond even with `--rate max` (InfluxDB would keep one point of the two, which
# the check of the count would report as a loss).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${ARNG_BENCH_LOCKED:-}" ]; then
  echo "bench-scale-out: waiting for /tmp/arng-bench.lock" >&2
  exec env ARNG_BENCH_LOCKED=1 flock /tmp/arng-bench.lock "$0" "$@"
fi

ROUNDS=${1:-3}
RATE=${RATE:-5000}
DURATION=${DURATION:-10s}
BACKLOG=${BACKLOG:-60000}
SENSORS=${SENSORS_PER_ZONE:-1250}
NZONES=${ZONES_PER_ROUND:-4}
WORKERS=${WORKERS:-1 2 3}

bench_name=bench-scale-out
. bench/lib.sh
bench_tools
bench_arng
bench_influxd
bench_workdir arng-bench-scale-out

per_sensor=$((BACKLOG / (SENSORS * NZONES)))
[ "$per_sensor" -ge 1 ] || die "BACKLOG must be at least SENSORS_PER_ZONE x ZONES_PER_ROUND"
backlog=$((per_sensor * SENSORS * NZONES))

echo "start: $(date -u '+%Y-%m-%d %H:%M UTC'), $(uptime)"
echo "  $(nproc) cores; $("$arng" --version); $(mosquitto -h 2>/dev/null | head -n 1); influxd $("$influxd_bin" version 2>/dev/null | awk '{ print $2 }')"
echo "  stream: $RATE readings/s for $DURATION; drain: $backlog readings queued; $SENSORS sensors x $NZONES zones"

start_mosquitto
start_influxd
export ARNG_MQTT_URL="mqtt://127.0.0.1:$mqtt_port" INFLUX_URL="$influx" INFLUX_TOKEN=dev-token
ingest_pw=$(account ingest)
sim_pw=$(account simulator)

# Workers of the current round: pids, metrics ports, client ids.
wpids=()
wports=()
wids=()

start_workers() {
  local n=$1 group=$2 i port id
  wpids=()
  wports=()
  wids=()
  for i in $(seq 1 "$n"); do
    port=$(free_port)
    id="$group-$i"
    ARNG_MQTT_USERNAME=ingest ARNG_MQTT_PASSWORD=$ingest_pw RUST_LOG=arng=info \
      "$arng" ingest --share-group "$group" --client-id "$id" --metrics-port "$port" \
      --spool-dir "$work/spool-$id" >"$work/$id.log" 2>&1 &
    wpids+=($!)
    pids+=($!)
    wports+=("$port")
    wids+=("$id")
  done
  for i in "${!wids[@]}"; do
    wait_until 20 "worker ${wids[i]} subscribed" grep -q "subscribed: receiving readings" "$work/${wids[i]}.log"
  done
}

stop_workers() {
  local i
  for pid in "${wpids[@]}"; do kill -CONT "$pid" 2>/dev/null || true; kill "$pid" 2>/dev/null || true; done
  for pid in "${wpids[@]}"; do wait "$pid" 2>/dev/null || true; done
  # A clean-session connect with each client id deletes its persistent session and
  # its shared subscription: no later round is queued for it.
  for i in "${!wids[@]}"; do
    timeout 10 mosquitto_sub -h 127.0.0.1 -p "$mqtt_port" -u ingest -P "$ingest_pw" \
      -i "${wids[i]}" -t 'entrepot/bench-session-reset/x/v0' -E \
      || die "could not delete the broker session of ${wids[i]}"
  done
}

# Readings written by the round's workers so far.
written() {
  local port
  for port in "${wports[@]}"; do curl -sf -m 5 "http://127.0.0.1:$port/metrics"; done \
    | awk '$1 == "arng_ingest_readings_written_total" { s += $2 } END { printf "%d\n", s }'
}

workers_ticks() {
  local t=0 pid
  for pid in "${wpids[@]}"; do t=$((t + $(cpu_ticks "$pid"))); done
  echo "$t"
}

# wait_written N SECS: until the workers wrote N readings; fails the run after SECS.
wait_written() {
  local deadline=$((SECONDS + $2))
  until [ "$(written)" -ge "$1" ]; do
    [ "$SECONDS" -lt "$deadline" ] || die "workers wrote $(written) of $1 readings after $2 s"
    sleep 0.1
  done
}

simulate() {
  ARNG_MQTT_USERNAME=simulator ARNG_MQTT_PASSWORD=$sim_pw RUST_LOG=arng=warn \
    "$arng" simulate --qos 1 --no-alerts --sensors-per-zone "$SENSORS" --seed "$round" "$@" \
    >"$work/sim.json" 2>"$work/sim.log" || { cat "$work/sim.log" >&2; die "simulate failed"; }
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["readings"])' "$work/sim.json"
}

zones() { seq 1 "$NZONES" | sed "s/^/$1z/" | paste -sd,; }

results="$work/results.txt"
: >"$results"
for round in $(seq 1 "$ROUNDS"); do
  for n in $WORKERS; do
    start_workers "$n" "g${round}w$n"
    wait_idle 30 "$mosquitto_pid" "$influxd_pid" "${wpids[@]}"

    # Stream: live workers, a steady rate.
    m0=$(cpu_ticks "$mosquitto_pid"); i0=$(cpu_ticks "$influxd_pid"); w0=$(workers_ticks)
    t0=$(date +%s.%N)
    published=$(simulate --zones "$(zones "s${round}w$n")" --rate "$RATE" --duration "$DURATION" --json)
    wait_written "$published" 120
    t1=$(date +%s.%N)
    m1=$(cpu_ticks "$mosquitto_pid"); i1=$(cpu_ticks "$influxd_pid"); w1=$(workers_ticks)
    stored=$(flux_count "s${round}w${n}z")
    [ "$stored" -eq "$published" ] || die "stream round $round, $n workers: $stored of $published readings in InfluxDB"
    echo "stream $n $published $t0 $t1 $((m1 - m0)) $((i1 - i0)) $((w1 - w0))" >>"$results"

    # Drain: frozen workers, a backlog queued by the broker, then released.
    wait_idle 30 "$mosquitto_pid" "$influxd_pid" "${wpids[@]}"
    before=$(written)
    m0=$(cpu_ticks "$mosquitto_pid")
    for pid in "${wpids[@]}"; do kill -STOP "$pid"; done
    queued=$(simulate --zones "$(zones "b${round}w$n")" --count "$per_sensor" --rate max --json)
    i0=$(cpu_ticks "$influxd_pid"); w0=$(workers_ticks)
    t0=$(date +%s.%N)
    for pid in "${wpids[@]}"; do kill -CONT "$pid"; done
    wait_written $((before + queued)) 120
    t1=$(date +%s.%N)
    m1=$(cpu_ticks "$mosquitto_pid"); i1=$(cpu_ticks "$influxd_pid"); w1=$(workers_ticks)
    stored=$(flux_count "b${round}w${n}z")
    [ "$stored" -eq "$queued" ] || die "drain round $round, $n workers: $stored of $queued readings in InfluxDB"
    echo "drain $n $queued $t0 $t1 $((m1 - m0)) $((i1 - i0)) $((w1 - w0))" >>"$results"
    if grep -q "exceeded timeout" "$work/mqtt/mosquitto.log" 2>/dev/null; then
      log "warning: the broker dropped a frozen worker for its keepalive; lower BACKLOG"
    fi

    stop_workers
    tail -n 2 "$results" | python3 -c '
import sys
tck = int(sys.argv[1])
for line in sys.stdin:
    phase, n, count, t0, t1, m, i, w = line.split()
    count, secs = int(count), float(t1) - float(t0)
    per10k = lambda ticks: int(ticks) / tck / count * 10000
    print(f"round {sys.argv[2]}, {n} worker(s), {phase}: {count} readings in {secs:.2f} s = {count / secs:.0f}/s; "
          f"CPU s per 10k: workers {per10k(w):.3f}, mosquitto {per10k(m):.3f}, influxd {per10k(i):.3f}")
' "$clk_tck" "$round"
  done
done

echo "end: $(date -u '+%Y-%m-%d %H:%M UTC'), $(uptime)"
python3 - "$results" "$clk_tck" <<'PY'
import sys, statistics
tck = int(sys.argv[2])
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
def figures(phase, n):
    out = []
    for p, w, count, t0, t1, m, i, wt in rows:
        if p != phase or w != n:
            continue
        count = int(count)
        out.append((count / (float(t1) - float(t0)),
                    int(wt) / tck / count * 1e4, int(m) / tck / count * 1e4, int(i) / tck / count * 1e4))
    return [statistics.median(col) for col in zip(*out)], len(out)
ns = sorted({r[1] for r in rows}, key=int)
print()
print("| phase | workers | rounds | readings/s | workers' CPU s / 10k | per worker | Mosquitto CPU s / 10k | influxd CPU s / 10k |")
print("|---|---|---|---|---|---|---|---|")
for phase in ("stream", "drain"):
    for n in ns:
        (rate, w, m, i), k = figures(phase, n)
        print(f"| {phase} | {n} | {k} | {rate:,.0f} | {w:.3f} | {w / int(n):.3f} | {m:.3f} | {i:.3f} |")
(rate, w, m, i), k = figures("stream", ns[0])
print()
print("# capacity figures (bench/capacity.txt format), medians of the stream phase with", ns[0], "worker(s):")
print(f"broker_cpu_s_per_10k {m:.3f}")
print(f"ingest_cpu_s_per_10k {w:.3f}")
print(f"influxd_cpu_s_per_10k {i:.3f}")
PY
