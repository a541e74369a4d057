#!/usr/bin/env bash
# Usage: bench/api.sh
#
# Benchmark of `GET /zones/{zone}/latest` (issue 5, "Speed"): the route answered from
# arng serve's in-memory state (the default) next to the same route answered by a
# direct Flux query (`?source=influx`), under the same load, alternating, so that both
# see the same machine. Target for the in-memory route: >= 10,000 requests/s with
# p99 < 10 ms. Results go in docs/performance.md.
#
# With BASELINE=<another arng binary> (e.g. a release build of an older commit), a
# second `arng serve` from that binary runs on its own port next to this tree's, fed by
# the same Mosquitto, influxd and ingest, and every round measures each route on both,
# one right after the other (this tree first in odd rounds, the baseline first in even
# ones, so neither always gets the warmer or the quieter slot). The medians of each and
# the ratios this tree / baseline are printed, with each median's min-max over the
# rounds as the noise to judge them by.
#
# What it runs, all on 127.0.0.1 ports it picks, in a temp dir, stopped by pid at exit:
#   Mosquitto  rendered from mosquitto-conf/mosquitto.conf by scripts/broker-config.sh
#   influxd    from scripts/build-influxd.sh (or $ARNG_INFLUXD), set up with org ares,
#              bucket entrepot, token dev-token
#   arng ingest, arng serve (release build), and `arng simulate`: a prefill of
#              BENCH_PREFILL readings per sensor, then a slow background stream so the
#              cache is being written while it is read
#   wrk        (Debian's package, installed with apt-get when missing) with --latency
#
# Environment (defaults in brackets):
#   BENCH_DURATION [10s]  length of one round     BENCH_ROUNDS [3]   rounds per route
#   BENCH_THREADS [2]     wrk threads             BENCH_CONNECTIONS [50]
#   BENCH_ZONE [nord]     zone queried            BENCH_ZONES [nord,sud,est]
#   BENCH_SENSORS [4]     sensors per zone        BENCH_PREFILL [20]
#   BENCH_WARMUP [10s]    unmeasured load on each route before the rounds
#   BENCH_PAUSE [2]       seconds of rest before each round, after which it also waits
#                         until influxd and serve are idle (the previous round's
#                         queries are finished)
#   ARNG_INFLUXD          influxd binary to use instead of scripts/build-influxd.sh's
#   BENCH_KEEP=1          keep the temp dir (logs, raw wrk output) after the run
#   BASELINE              another arng binary to compare with, side by side (above)
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${BENCH_DURATION:-10s}
rounds=${BENCH_ROUNDS:-3}
threads=${BENCH_THREADS:-2}
connections=${BENCH_CONNECTIONS:-50}
zone=${BENCH_ZONE:-nord}
zones=${BENCH_ZONES:-nord,sud,est}
sensors=${BENCH_SENSORS:-4}
prefill=${BENCH_PREFILL:-20}
pause=${BENCH_PAUSE:-2}
warmup=${BENCH_WARMUP:-10s}

bench_name=bench-api
. bench/lib.sh
bench_tools
command -v wrk >/dev/null 2>&1 || apt_install wrk
bench_influxd
bench_arng
bench_baseline
bench_workdir arng-bench

start_mosquitto
start_influxd

export ARNG_MQTT_URL=mqtt://127.0.0.1:$mqtt_port
export INFLUX_URL=$influx INFLUX_ORG=ares INFLUX_BUCKET=entrepot INFLUX_TOKEN=dev-token
export RUST_LOG=${RUST_LOG:-warn}
unset ARNG_API_TOKEN

metrics_port=$(free_port)
ARNG_MQTT_USERNAME=ingest ARNG_MQTT_PASSWORD=$(account ingest) \
  "$arng" ingest --metrics-port "$metrics_port" --spool-dir "$work/spool" >"$work/ingest.log" 2>&1 &
pids+=($!)
wait_until 20 "arng ingest" curl -sf -m 2 "http://127.0.0.1:$metrics_port/metrics"

# builds: "current" (this tree) and, with BASELINE, "baseline"; each has its own serve.
builds=(current)
declare -A bin=([current]=$arng) api=() serve_pid=()
if [ -n "$baseline" ]; then
  builds+=(baseline)
  bin[baseline]=$baseline
fi
for b in "${builds[@]}"; do
  port=$(free_port)
  api[$b]=http://127.0.0.1:$port
  ARNG_MQTT_USERNAME=api ARNG_MQTT_PASSWORD=$(account api) \
    "${bin[$b]}" serve --port "$port" >"$work/serve-$b.log" 2>&1 &
  pids+=($!)
  serve_pid[$b]=$!
  wait_until 30 "arng serve ($b) /ready" bash -c "curl -sf -m 3 ${api[$b]}/ready | grep -q '\"ready\":true'"
done

# ----- data -----------------------------------------------------------------------------------
export ARNG_MQTT_USERNAME=simulator ARNG_MQTT_PASSWORD
ARNG_MQTT_PASSWORD=$(account simulator)
log "publishing $prefill readings per sensor ($zones x $sensors sensors)"
timeout 120 "$arng" simulate --zones "$zones" --sensors-per-zone "$sensors" --count "$prefill" \
  --interval 50ms --seed 1 --quiet >"$work/prefill.log" 2>&1 || die "arng simulate (prefill) failed"
"$arng" simulate --zones "$zones" --sensors-per-zone "$sensors" --interval 5s --seed 2 \
  --client-id bench-background --quiet >"$work/simulate.log" 2>&1 &
pids+=($!)
# in_sync BASE_URL
in_sync() {
  [ "$(curl -sf -m 3 "$1/zones/$zone/latest" | grep -o '"in_sync":true' | wc -l)" -ge "$sensors" ]
}
# url BUILD SOURCE
url() {
  if [ "$2" = cache ]; then echo "${api[$1]}/zones/$zone/latest"; else echo "${api[$1]}/zones/$zone/latest?source=influx"; fi
}
for b in "${builds[@]}"; do
  wait_until 60 "$zone's $sensors sensors in sync between MQTT and InfluxDB ($b)" in_sync "${api[$b]}"
  for source in cache influx; do
    u=$(url "$b" "$source")
    size=$(curl -sf -m 10 -o /dev/null -w '%{size_download}' "$u") || die "GET $u failed"
    log "GET $u ($b): 200, $size bytes"
  done
done

# ----- load ---------------------------------------------------------------------------------------
# wrk's units to milliseconds (us, ms, s).
to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
    else { sub(/s$/, "", v); printf "%.3f", v * 1000 }
  }'
}

# run_wrk URL OUT SERVE_PID: one round, in this shell (so that an interrupted run stops
# wrk too); sets rps, p99 (ms), errors and cpu_us (that serve's CPU per request, in
# microseconds).
run_wrk() {
  local out=$2 pid=$3 secs
  secs=$(awk -v d="$duration" 'BEGIN { n = d + 0; if (d ~ /m$/) n *= 60; print int(n) + 30 }')
  local cpu_before cpu_after
  cpu_before=$(cpu_ticks "$pid")
  # In the background and waited for: a signal then interrupts the wait at once, and
  # cleanup stops wrk by its pid.
  timeout "$secs" wrk -t "$threads" -c "$connections" -d "$duration" --timeout 5s --latency "$1" \
    >"$out" 2>&1 &
  local wrk_pid=$!
  pids+=("$wrk_pid")
  wait "$wrk_pid" || die "wrk failed on $1: $(cat "$out")"
  unset 'pids[-1]'
  cpu_after=$(cpu_ticks "$pid")
  local requests
  rps=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
  requests=$(awk '/ requests in / { print $1 }' "$out")
  cpu_us=$(awk -v t=$((cpu_after - cpu_before)) -v hz="$clk_tck" -v n="${requests:-0}" \
    'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "nan" }')
  p99=$(awk '$1 == "99%" { print $2 }' "$out")
  errors=$(awk '/Non-2xx or 3xx responses:/ { n += $NF } /Socket errors:/ {
      for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) { v = $i; sub(",", "", v); n += v } }
      END { print n + 0 }' "$out")
  [ -n "$rps" ] && [ -n "$p99" ] || die "cannot read wrk's output: $(cat "$out")"
  p99=$(to_ms "$p99")
}

log "warm-up ($warmup per route and build)"
duration_saved=$duration
duration=$warmup
for b in "${builds[@]}"; do
  for source in cache influx; do
    run_wrk "$(url "$b" "$source")" "$work/warmup-$b-$source.txt" "${serve_pid[$b]}"
  done
done
duration=$duration_saved

echo
echo "GET /zones/$zone/latest on $(nproc) cores: wrk -t$threads -c$connections -d$duration --latency, $rounds rounds, alternating"
echo "current:  $arng ($("$arng" --version | head -n 1))"
[ -z "$baseline" ] || echo "baseline: $baseline ($("$baseline" --version | head -n 1))"
echo "load average before the rounds: $(cut -d' ' -f1-3 /proc/loadavg) (other processes share these cores)"
printf '%-6s %-7s %-9s %14s %12s %8s %18s\n' round source build 'requests/s' 'p99 (ms)' errors 'serve CPU/request'
for b in "${builds[@]}"; do : >"$work/$b-cache.dat"; : >"$work/$b-influx.dat"; done
for r in $(seq "$rounds"); do
  order=("${builds[@]}")
  if [ $((r % 2)) -eq 0 ] && [ "${#builds[@]}" -eq 2 ]; then order=(baseline current); fi
  for source in cache influx; do
    for b in "${order[@]}"; do
      sleep "$pause"
      wait_idle 30 "$influxd_pid" "${serve_pid[@]}"
      run_wrk "$(url "$b" "$source")" "$work/wrk-$b-$source-$r.txt" "${serve_pid[$b]}"
      printf '%-6s %-7s %-9s %14.0f %12.2f %8s %15s us\n' "$r" "$source" "$b" "$rps" "$p99" "$errors" "$cpu_us"
      echo "$rps $p99 $errors $cpu_us" >>"$work/$b-$source.dat"
    done
  done
done

# col_stat BUILD SOURCE COLUMN [min|max]: the median (or extreme) of one column over the rounds.
col_stat() {
  case ${4:-median} in
    median) awk -v c="$3" '{ print $c }' "$work/$1-$2.dat" | median ;;
    min) awk -v c="$3" '{ print $c }' "$work/$1-$2.dat" | sort -g | head -n 1 ;;
    max) awk -v c="$3" '{ print $c }' "$work/$1-$2.dat" | sort -g | tail -n 1 ;;
  esac
}
ratio() { awk -v a="$1" -v b="$2" -v f="$3" 'BEGIN { if (b > 0) printf f, a / b; else print "inf" }'; }
errors=$(cat "$work"/*.dat | awk '{ n += $3 } END { print n + 0 }')

echo
echo "medians over $rounds rounds (min-max in brackets):"
for b in "${builds[@]}"; do
  for source in cache influx; do
    if [ "$source" = cache ]; then what='cache  (in-memory) '; else what='influx (Flux query)'; fi
    printf '  %-9s %s %8.0f requests/s [%.0f-%.0f]   p99 %7.2f ms [%.2f-%.2f]   serve CPU %6.1f us/request [%.1f-%.1f]\n' \
      "$b" "$what" "$(col_stat "$b" "$source" 1)" "$(col_stat "$b" "$source" 1 min)" "$(col_stat "$b" "$source" 1 max)" \
      "$(col_stat "$b" "$source" 2)" "$(col_stat "$b" "$source" 2 min)" "$(col_stat "$b" "$source" 2 max)" \
      "$(col_stat "$b" "$source" 4)" "$(col_stat "$b" "$source" 4 min)" "$(col_stat "$b" "$source" 4 max)"
  done
  echo "  $b: ratio cache/influx $(ratio "$(col_stat "$b" cache 1)" "$(col_stat "$b" influx 1)" '%.0f')x (requests/s)"
done
if [ -n "$baseline" ]; then
  echo "ratios current / baseline (medians; requests/s above 1 is better, p99 and CPU below 1 are):"
  for source in cache influx; do
    printf '  %-7s requests/s %sx   p99 %sx   serve CPU/request %sx\n' "$source" \
      "$(ratio "$(col_stat current "$source" 1)" "$(col_stat baseline "$source" 1)" '%.3f')" \
      "$(ratio "$(col_stat current "$source" 2)" "$(col_stat baseline "$source" 2)" '%.3f')" \
      "$(ratio "$(col_stat current "$source" 4)" "$(col_stat baseline "$source" 4)" '%.3f')"
  done
fi
echo "non-2xx or socket errors: $errors"
cache_rps=$(col_stat current cache 1)
cache_p99=$(col_stat current cache 2)
if awk -v r="$cache_rps" -v p="$cache_p99" 'BEGIN { exit !(r >= 10000 && p < 10) }'; then
  echo "target (>= 10,000 requests/s, p99 < 10 ms, in-memory, current build): met"
else
  echo "target (>= 10,000 requests/s, p99 < 10 ms, in-memory, current build): NOT met"
fi
[ "$errors" -eq 0 ] || die "$errors requests failed: see the raw wrk output (BENCH_KEEP=1)"
