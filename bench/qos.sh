#!/usr/bin/env bash
# Usage: bench/qos.sh [--runs N] [--publishers N] [--subscribers M] [--messages K]
#                     [--size BYTES] [--rate R] [--port PORT] [--out FILE.md]
#
# Measures `arng qos-bench` against each broker profile in turn, beside a peer
# benchmark run with the same parameters, and prints the medians (docs/qos.md holds
# the figures and what they mean):
#   mosquitto-conf/qos0.conf       QoS 0
#   mosquitto-conf/qos1.conf       QoS 1
#   mosquitto-conf/qos2.conf       QoS 2
#   mosquitto-conf/mosquitto.conf  QoS 0, 1 and 2 (the reference configuration)
# Each profile gets a fresh Mosquitto on 127.0.0.1:PORT (rendered with
# scripts/broker-config.sh, stopped by pid before the next one), account `operator`.
# Per profile and QoS level, RUNS times each (medians reported):
#   arng        as fast as it can (in-flight window 100): saturation throughput
#   arng -i1    the same with --inflight 1, i.e. one message in flight per publisher
#               as the peers publish, to tell pipelining apart from the client
#   arng @R     at --rate R msgs/s in all: latency with coordinated-omission correction
#   arng @R --nagle   the same with Nagle's algorithm left on in arng's clients
#   peer        the peer benchmark, same clients, count, size, QoS and account
#
# Peer: mqtt-benchmark v0.2.0 (github.com/krylovsk/mqtt-benchmark, Paho Go client),
# built with `go install`. When it cannot be had (no Go toolchain, or the module proxy
# refuses it), the peer is mosquitto_pub from mosquitto-clients (libmosquitto, C),
# which publishes the same way: one client per publisher, --repeat K messages, each
# waiting for its acknowledgement before the next. A mosquitto_sub counts the
# deliveries so the broker does the same fan-out work as for arng.
#
# Loopback only; every wait is bounded. Needs: bash, awk, cargo, mosquitto,
# mosquitto_pub/mosquitto_sub; go for mqtt-benchmark.
set -euo pipefail

runs=3
publishers=4
subscribers=1
messages=2000
size=200
rate=2000
port=${ARNG_BENCH_PORT:-18990}
out=""
usage() { echo "usage: $0 [--runs N] [--publishers N] [--subscribers M] [--messages K] [--size BYTES] [--rate R] [--port PORT] [--out FILE.md]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=${2:?}; shift 2 ;;
    --publishers) publishers=${2:?}; shift 2 ;;
    --subscribers) subscribers=${2:?}; shift 2 ;;
    --messages) messages=${2:?}; shift 2 ;;
    --size) size=${2:?}; shift 2 ;;
    --rate) rate=${2:?}; shift 2 ;;
    --port) port=${2:?}; shift 2 ;;
    --out) out=${2:?}; shift 2 ;;
    *) usage ;;
  esac
done
for n in "$runs" "$publishers" "$subscribers" "$messages" "$size" "$rate" "$port"; do
  case "$n" in ''|*[!0-9]*) usage ;; esac
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/arng-qos-bench.XXXXXX")"
broker_pid=""
log() { echo "[qos.sh] $*" >&2; }

stop_broker() {
  [ -n "$broker_pid" ] || return 0
  kill -TERM "$broker_pid" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$broker_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$broker_pid" 2>/dev/null || true
  wait "$broker_pid" 2>/dev/null || true
  broker_pid=""
}
cleanup() { stop_broker; rm -rf "$work"; }
trap cleanup EXIT

mosquitto_bin=$(command -v mosquitto || true)
[ -n "$mosquitto_bin" ] || [ ! -x /usr/sbin/mosquitto ] || mosquitto_bin=/usr/sbin/mosquitto
[ -n "$mosquitto_bin" ] || { log "mosquitto not found: apt-get install mosquitto"; exit 1; }
command -v mosquitto_pub >/dev/null || { log "mosquitto_pub not found: apt-get install mosquitto-clients"; exit 1; }

user=operator
pass=$(awk -F: '$1 == "operator" { print $2 }' "$root/mosquitto-conf/dev-accounts")

# Starts mosquitto-conf/$1 on 127.0.0.1:$port and waits until it serves.
start_broker() {
  local conf=$1 dir="$work/broker-${1%.conf}"
  rm -rf "$dir"
  bash "$root/scripts/broker-config.sh" render "$root/mosquitto-conf/$conf" "$dir" "$port" >/dev/null
  "$mosquitto_bin" -c "$dir/mosquitto.conf" >"$dir/mosquitto.out" 2>&1 &
  broker_pid=$!
  for _ in $(seq 100); do
    if grep -q " running$" "$dir/mosquitto.log" 2>/dev/null; then
      return 0
    fi
    kill -0 "$broker_pid" 2>/dev/null || break
    sleep 0.1
  done
  log "mosquitto ($conf) did not start on port $port:"
  cat "$dir/mosquitto.log" "$dir/mosquitto.out" >&2 2>/dev/null || true
  exit 1
}

log "building arng (release)"
(cd "$root" && cargo build --release --quiet)
arng="$root/target/release/arng"

# The peer.
peer=mosquitto_pub
peer_note=""
if command -v go >/dev/null; then
  log "building mqtt-benchmark v0.2.0"
  if GOFLAGS=-buildvcs=false timeout 300 go install github.com/krylovsk/mqtt-benchmark@v0.2.0 >"$work/go-install.log" 2>&1; then
    peer="$(go env GOPATH)/bin/mqtt-benchmark"
  else
    # The reason, without the URLs go prints.
    peer_note="mqtt-benchmark unavailable: go install failed: $(tr '\n' ' ' <"$work/go-install.log" \
      | sed -E 's#https?://[^ ]*##g; s/  +/ /g' | cut -c1-240)"
  fi
else
  peer_note="mqtt-benchmark unavailable (no Go toolchain)"
fi
if [ -n "$peer_note" ]; then
  log "$peer_note; peer: mosquitto_pub $(mosquitto_pub --help 2>/dev/null | awk '/ version / {print $3; exit}')"
fi
peer_name=$([ "$peer" = mosquitto_pub ] && echo "mosquitto_pub" || echo "mqtt-benchmark")

head -c "$size" /dev/zero | tr '\0' 'x' >"$work/payload"

# Column $2 of the first data row of CSV file $1, by header name.
csv_col() {
  awk -F, -v col="$2" -v row="${3:-1}" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i; next }
    NR == row + 1 { print (c ? $c : ""); exit }' "$1"
}
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# One arng run (QoS, extra options): prints "publish delivered p50 p90 p99 p999 max
# ack_p50 ack_p99 lost duplicates" ("-" for what was not measured).
run_arng() {
  local qos=$1 csv="$work/arng.csv" c v line=""
  shift
  if ! ARNG_MQTT_URL="mqtt://127.0.0.1:$port" ARNG_MQTT_USERNAME=$user ARNG_MQTT_PASSWORD=$pass \
      timeout 300 "$arng" -q qos-bench --qos "$qos" --publishers "$publishers" \
      --subscribers "$subscribers" --messages "$messages" --size "$size" --csv "$@" >"$csv"; then
    log "arng qos-bench failed at QoS $qos ($*)"; cat "$csv" >&2; return 1
  fi
  for c in publish_throughput_msgs_per_s throughput_msgs_per_s latency_p50_ms latency_p90_ms \
      latency_p99_ms latency_p999_ms latency_max_ms ack_p50_ms ack_p99_ms lost duplicates; do
    v=$(csv_col "$csv" "$c")
    line="$line ${v:--}"
  done
  echo "$line"
}

# One peer run: prints "publish delivered" in msgs/s ("-" when not measured).
run_peer() {
  local qos=$1 total=$((publishers * messages)) topic="entrepot/qosbench/peer-$RANDOM"
  local expect=$((total * subscribers)) sub_pids=() pids=() t0 t1 t2 i
  for i in $(seq "$subscribers"); do
    timeout 120 mosquitto_sub -h 127.0.0.1 -p "$port" -u "$user" -P "$pass" -q "$qos" \
      -t "$topic/#" -C "$total" -W 30 >/dev/null &
    sub_pids+=($!)
  done
  sleep 0.3 # let the subscriptions land before the first publish
  if [ "$peer_name" = mqtt-benchmark ]; then
    t0=$(date +%s%N)
    timeout 300 "$peer" -broker "tcp://127.0.0.1:$port" -clients "$publishers" -count "$messages" \
      -size "$size" -qos "$qos" -username "$user" -password "$pass" -topic "$topic/p" \
      -format json >"$work/peer.json" 2>"$work/peer.err" || true
    t1=$(date +%s%N)
    pub=$(tr -d ' \n' <"$work/peer.json" | sed -n 's/.*"total_msgs_per_sec":\([0-9.]*\).*/\1/p')
  else
    t0=$(date +%s%N)
    for i in $(seq "$publishers"); do
      timeout 120 mosquitto_pub -h 127.0.0.1 -p "$port" -u "$user" -P "$pass" -q "$qos" \
        -t "$topic/p$i" -i "peer-$$-$i" --repeat "$messages" -f "$work/payload" &
      pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || log "a mosquitto_pub failed"; done
    t1=$(date +%s%N)
    pub=$(awk -v n="$total" -v ns=$((t1 - t0)) 'BEGIN { printf "%.1f", n / (ns / 1e9) }')
  fi
  local ok=1
  for i in "${sub_pids[@]}"; do wait "$i" || ok=0; done
  t2=$(date +%s%N)
  if [ $ok = 1 ]; then
    awk -v p="${pub:--}" -v n="$expect" -v ns=$((t2 - t0)) 'BEGIN { printf "%s %.1f\n", p, n / (ns / 1e9) }'
  else
    echo "${pub:--} -"
  fi
}

results="$work/results.txt"
: >"$results"
# The machine may be shared: the load around the runs says how much to trust the tails.
load_before=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
bench_profile() {
  local conf=$1; shift
  log "broker profile $conf"
  start_broker "$conf"
  local qos r
  for qos in "$@"; do
    for r in $(seq "$runs"); do
      echo "$conf $qos arng $(run_arng "$qos")" >>"$results"
      [ "$qos" = 0 ] || echo "$conf $qos arng-i1 $(run_arng "$qos" --inflight 1)" >>"$results"
      echo "$conf $qos arng-rate $(run_arng "$qos" --rate "$rate")" >>"$results"
      echo "$conf $qos arng-nagle $(run_arng "$qos" --rate "$rate" --nagle)" >>"$results"
      echo "$conf $qos peer $(run_peer "$qos")" >>"$results"
    done
  done
  stop_broker
}

bench_profile qos0.conf 0
bench_profile qos1.conf 1
bench_profile qos2.conf 2
bench_profile mosquitto.conf 0 1 2

# Medians (losses and duplicates: the largest of the runs).
field() { awk -v c="$1" -v q="$2" -v w="$3" -v f="$4" '$1 == c && $2 == q && $3 == w { print $f }' "$results" | grep -v '^-$' | median; }
worst() { awk -v c="$1" -v q="$2" -v w="$3" -v f="$4" 'BEGIN { m = "-" } $1 == c && $2 == q && $3 == w && $f != "-" { if (m == "-" || $f + 0 > m) m = $f + 0 } END { print m }' "$results"; }
rows="qos0.conf 0|qos1.conf 1|qos2.conf 2|mosquitto.conf 0|mosquitto.conf 1|mosquitto.conf 2"
load_after=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")
{
  echo "Run $started on $(nproc 2>/dev/null || echo '?') cores, load average $load_before before and $load_after after; arng $("$arng" --version | awk '{print $2}'), $("$mosquitto_bin" -h 2>/dev/null | awk '/^mosquitto version/ {print "mosquitto " $3; exit}')"
  echo "arng qos-bench beside $peer_name: $publishers publishers x $messages messages, $subscribers subscriber(s), $size-byte payloads, median of $runs runs"
  [ -z "$peer_note" ] || echo "($peer_note; peer: mosquitto_pub)"
  echo
  echo "Throughput, publishing as fast as possible (msgs/s, all clients):"
  echo
  echo "| profile | QoS | arng publish | arng delivered | arng --inflight 1 publish | $peer_name publish | $peer_name delivered | arng p50 / p99 ms (saturated) | arng ack p50 ms | arng lost, dup (worst run) |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  IFS='|'
  for row in $rows; do
    IFS=' '
    set -- $row
    echo "| $1 | $2 | $(field "$1" "$2" arng 4) | $(field "$1" "$2" arng 5) | $(field "$1" "$2" arng-i1 4) | $(field "$1" "$2" peer 4) | $(field "$1" "$2" peer 5) | $(field "$1" "$2" arng 6) / $(field "$1" "$2" arng 8) | $(field "$1" "$2" arng 11) | $(worst "$1" "$2" arng 13), $(worst "$1" "$2" arng 14) |"
    IFS='|'
  done
  IFS=' '
  echo
  echo "End-to-end latency at --rate $rate msgs/s in all, from the scheduled send time (ms):"
  echo
  echo "| profile | QoS | delivered msg/s | p50 | p90 | p99 | p99.9 | max | ack p50 | ack p99 | lost, dup (worst run) | p90 / p99 with --nagle |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
  IFS='|'
  for row in $rows; do
    IFS=' '
    set -- $row
    echo "| $1 | $2 | $(field "$1" "$2" arng-rate 5) | $(field "$1" "$2" arng-rate 6) | $(field "$1" "$2" arng-rate 7) | $(field "$1" "$2" arng-rate 8) | $(field "$1" "$2" arng-rate 9) | $(field "$1" "$2" arng-rate 10) | $(field "$1" "$2" arng-rate 11) | $(field "$1" "$2" arng-rate 12) | $(worst "$1" "$2" arng-rate 13), $(worst "$1" "$2" arng-rate 14) | $(field "$1" "$2" arng-nagle 7) / $(field "$1" "$2" arng-nagle 8) |"
    IFS='|'
  done
  IFS=' '
  echo
  echo "Raw runs (profile QoS tool, then publish delivered p50 p90 p99 p999 max ack_p50 ack_p99 lost dup for arng, publish delivered for the peer):"
  echo
  sed 's/^/    /' "$results"
} | tee "${out:-/dev/null}"
