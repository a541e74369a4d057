#!/usr/bin/env bash
# Usage: bench/simulate.sh
#
# Benchmarks `arng simulate` against its own local Mosquitto (loopback only, a free
# port, a temp dir; nothing else is touched) and prints medians:
#   fleet    10,000 sensors (4 zones x 2,500) at 1 Hz, QoS 1, for FLEET_SECS:
#            does one process keep up (every reading published on schedule)?
#   max-q0   QoS 0 as fast as the broker accepts (--rate max), 3,000 sensors (a
#            sensor publishes at most once a millisecond, docs/simulate.md), for
#            MAX_SECS, with 1 and with 2 connections;
#   rate60k  QoS 0 paced at --rate 60000 (3,000 sensors, 20 Hz each), 1 connection;
#   max-q1   QoS 1 as fast as acknowledgements allow, 1 connection (for reference).
# Every run has a subscriber (mosquitto_sub, account operator) on the readings that
# counts what the broker delivered, so a rate is only reported with its delivery.
# Each measurement is repeated RUNS times; loops are bounded in time.
#
# Environment: RUNS (default 3), FLEET_SECS (20), MAX_SECS (10),
# CONF (broker config, default mosquitto-conf/mosquitto.conf; try qos0.conf),
# BASELINE (another arng binary, e.g. a release build of an older commit: every
# measurement is then also made with it, alternating, and the table adds its rows
# and the ratio of readings/s, this tree / baseline).
# Needs mosquitto, mosquitto_sub, python3 (to read the JSON summaries) and cargo.
# The numbers depend on the machine and on what else runs on it: report medians
# with the date and the machine (docs/simulate.md, "Performance").
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
FLEET_SECS=${FLEET_SECS:-20}
MAX_SECS=${MAX_SECS:-10}
CONF=${CONF:-mosquitto-conf/mosquitto.conf}

die() { echo "bench/simulate.sh: $*" >&2; exit 1; }
export PATH="$PATH:/usr/sbin"
for tool in mosquitto mosquitto_sub python3 cargo; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found (apt-get install mosquitto mosquitto-clients python3)"
done

creds() { grep "^$1:" mosquitto-conf/dev-accounts | head -n 1 | cut -d: -f2-; }
SIM_PASS=$(creds simulator)
OP_PASS=$(creds operator)
[ -n "$SIM_PASS" ] && [ -n "$OP_PASS" ] || die "accounts simulator/operator missing from mosquitto-conf/dev-accounts"

dir=$(mktemp -d /tmp/arng-bench-XXXXXX)
broker_pid=""
sub_pid=""
cleanup() {
  [ -n "$sub_pid" ] && kill "$sub_pid" 2>/dev/null || true
  [ -n "$broker_pid" ] && kill "$broker_pid" 2>/dev/null && wait "$broker_pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

echo "==> building arng (release)"
cargo build --release --locked -q
# A private copy: a rebuild in the work tree during the benchmark must not change it.
cp target/release/arng "$dir/arng"
if [ -n "${BASELINE:-}" ]; then
  [ -x "$BASELINE" ] || die "BASELINE=$BASELINE is not an executable"
  cp "$BASELINE" "$dir/arng-base"
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
echo "==> starting mosquitto ($CONF) on 127.0.0.1:$port"
scripts/broker-config.sh render "$CONF" "$dir/broker" "$port"
mosquitto -c "$dir/broker/mosquitto.conf" >"$dir/broker/out" 2>&1 &
broker_pid=$!
for _ in $(seq 100); do
  grep -q "running" "$dir/broker/mosquitto.log" 2>/dev/null && break
  sleep 0.1
done
grep -q "running" "$dir/broker/mosquitto.log" || { cat "$dir/broker/out" "$dir/broker/mosquitto.log" >&2; die "mosquitto did not start"; }
grep -E "^(max_inflight_messages|max_queued_messages|max_queued_bytes|max_packet_size|queue_qos0_messages)" \
  "$dir/broker/mosquitto.conf" | sed 's/^/    broker: /'

# run NAME SUB_QOS ARNG_ARGS... : one measurement with this tree's arng, and one
# with BASELINE's (as NAME-base) when it is set; appends a JSON line to $dir/NAME.
run() {
  measure "$dir/arng" "$@"
  if [ -n "${BASELINE:-}" ]; then
    local name=$1
    shift
    measure "$dir/arng-base" "$name-base" "$@"
  fi
}

measure() {
  local bin=$1 name=$2 sub_qos=$3
  shift 3
  : >"$dir/sub.out"
  mosquitto_sub -h 127.0.0.1 -p "$port" -u operator -P "$OP_PASS" -q "$sub_qos" \
    -t 'entrepot/+/+/v1' -F '%t' >"$dir/sub.out" 2>/dev/null &
  sub_pid=$!
  sleep 0.5
  local cpu_file="$dir/cpu"
  /usr/bin/env time -f "%U %S %e" -o "$cpu_file" \
    "$bin" -q simulate --mqtt-url "mqtt://127.0.0.1:$port" \
    --mqtt-username simulator --mqtt-password "$SIM_PASS" --json "$@" >"$dir/summary.json" \
    || die "arng simulate $* failed"
  # Wait until the subscriber's count stops growing (at most 15 s), then stop it.
  local last=-1 now
  for _ in $(seq 30); do
    now=$(wc -l <"$dir/sub.out")
    [ "$now" = "$last" ] && break
    last=$now
    sleep 0.5
  done
  kill "$sub_pid" 2>/dev/null || true
  wait "$sub_pid" 2>/dev/null || true
  sub_pid=""
  python3 - "$dir/summary.json" "$(wc -l <"$dir/sub.out")" "$(cat "$cpu_file")" >>"$dir/$name" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
user, system, wall = (float(x) for x in sys.argv[3].split())
print(json.dumps({
    "readings": s["readings"], "delivered": int(sys.argv[2]),
    "duration_s": s["duration_s"], "rate": s["readings"] / s["duration_s"],
    "slip_ms": s["schedule_slip_ms"], "unacked": s["unacked"],
    "cpu_pct": 100.0 * (user + system) / max(wall, 1e-9),
}))
EOF
  tail -n 1 "$dir/$name" | sed "s/^/    $name: /"
}

echo "==> fleet: 10,000 sensors at 1 Hz, QoS 1, ${FLEET_SECS}s x $RUNS"
for _ in $(seq "$RUNS"); do
  run fleet 1 --zones nord,sud,est,ouest --sensors-per-zone 2500 --interval 1s --qos 1 --duration "${FLEET_SECS}s"
done
echo "==> max-q0: QoS 0, --rate max, ${MAX_SECS}s x $RUNS, 1 and 2 connections"
for _ in $(seq "$RUNS"); do
  run max-q0-c1 0 --zones nord,sud,est --sensors-per-zone 1000 --qos 0 --rate max --connections 1 --duration "${MAX_SECS}s"
  run max-q0-c2 0 --zones nord,sud,est --sensors-per-zone 1000 --qos 0 --rate max --connections 2 --duration "${MAX_SECS}s"
done
echo "==> rate60k: QoS 0 paced at 60,000/s, ${MAX_SECS}s x $RUNS"
for _ in $(seq "$RUNS"); do
  run rate60k 0 --zones nord,sud,est --sensors-per-zone 1000 --qos 0 --rate 60000 --connections 1 --duration "${MAX_SECS}s"
done
echo "==> max-q1: QoS 1, --rate max, ${MAX_SECS}s x $RUNS"
for _ in $(seq "$RUNS"); do
  run max-q1 1 --zones nord,sud,est --sensors-per-zone 1000 --qos 1 --rate max --connections 1 --duration "${MAX_SECS}s"
done

echo
echo "==> medians of $RUNS runs ($(date -u +%Y-%m-%d), $(nproc) cores, $(mosquitto -h 2>/dev/null | head -n 1 | sed 's/ is an MQTT.*//'), $CONF)"
python3 - "$dir" fleet max-q0-c1 max-q0-c2 rate60k max-q1 <<'EOF'
import json, statistics, sys, os
d = sys.argv[1]
print(f"{'scenario':<16} {'published':>10} {'delivered':>10} {'duration s':>10} {'readings/s':>10} {'slip ms':>8} {'unacked':>7} {'arng cpu %':>10}")
medians = {}
for scenario in sys.argv[2:]:
    for name in (scenario, scenario + "-base"):
        path = os.path.join(d, name)
        if not os.path.exists(path):
            continue
        rows = [json.loads(l) for l in open(path)]
        med = lambda k: statistics.median(r[k] for r in rows)
        medians[name] = med("rate")
        lost = sum(r["readings"] - r["delivered"] for r in rows)
        print(f"{name:<16} {med('readings'):>10.0f} {med('delivered'):>10.0f} {med('duration_s'):>10.2f} "
              f"{med('rate'):>10.0f} {med('slip_ms'):>8.0f} {med('unacked'):>7.0f} {med('cpu_pct'):>10.0f}"
              + ("" if lost == 0 else f"   ({lost} not delivered over {len(rows)} runs)"))
    if scenario + "-base" in medians:
        print(f"{'':<16} readings/s ratio, this tree / baseline: {medians[scenario] / medians[scenario + '-base']:.2f}")
EOF
