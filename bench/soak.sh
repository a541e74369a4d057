#!/usr/bin/env bash
# Soak run of the whole local chain (issue 9, "Hardening"): `arng simulate` → Mosquitto →
# `arng ingest` → InfluxDB ← `arng serve`, at a steady rate for a long time, with
# InfluxDB and broker restarts injected on a schedule. At the end it reports readings
# published (acknowledged by the broker) against readings stored in InfluxDB, lost and
# duplicated ones, the memory of each process over time, the alerts raised and
# cleared, the recovery time of every restart, and runs `arng check-e2e`.
# Exit 0 only when nothing was lost and every check passed.
#
# What it runs, all on 127.0.0.1 ports it picks, in a temp dir, stopped by pid at exit:
#   Mosquitto  mosquitto-conf/mosquitto.conf rendered by scripts/broker-config.sh
#              (persistence on, as in the reference stack); restarted with SIGTERM,
#              which saves its database (queued messages of ingest's session)
#   influxd    scripts/build-influxd.sh's binary (or $ARNG_INFLUXD), org ares, bucket
#              entrepot, token dev-token; restarted with SIGTERM on the same data
#   arng ingest (account ingest, spool in the temp dir), arng serve (account api),
#   arng simulate --rate RATE --duration DURATION --qos 1 --seed SEED (account
#              simulator) with a heatwave per restart period (alerts raised and
#              cleared, on the sensor side and by ingest's rules) and one sensor
#              dropout longer than the silence rule (a silence alert)
#
# Usage: bench/soak.sh [--json]      (--json: the summary as one JSON object on stdout)
#        bench/soak.sh --report DIR [--json]   report again on a kept run (SOAK_OUT)
# Environment (defaults in brackets; durations as 90s, 10m, 1h or seconds):
#   DURATION [30m]          how long simulate publishes
#   RATE [1000]             readings per second across the fleet
#   ZONES [nord,sud,est]    zones simulated
#   SENSORS_PER_ZONE [50]   sensors per zone
#   SEED [42]               simulate's seed
#   RESTART_EVERY [10m]     period of the schedule: InfluxDB restarts at EVERY/2,
#                           EVERY*1.5, ...; broker restarts at EVERY, 2*EVERY, ...;
#                           each only if it ends at least 30 s before DURATION.
#                           A heatwave in the second zone starts at 0.3*EVERY of each
#                           period and lasts 0.4*EVERY (so it spans the InfluxDB restart)
#   INFLUX_RESTARTS, BROKER_RESTARTS   explicit offsets instead (e.g. "5m,15m"; "" = none)
#   INFLUX_DOWN [25s]       how long influxd stays stopped
#   BROKER_DOWN [15s]       how long Mosquitto stays stopped
#   STOP_SIGNAL [TERM]      how both servers are stopped: TERM is a clean stop (Mosquitto
#                           saves its database first); KILL is a crash (Mosquitto loses
#                           what changed since its last autosave: expect losses)
#   SAMPLE_EVERY [10]       seconds between two memory samples (CSV)
#   CATCH_UP [300]          seconds allowed after simulate ends for ingest to store all
#   SOAK_OUT [temp dir]     where to keep memory.csv, events.csv, logs and summary.json
#                           (kept when set; otherwise removed unless SOAK_KEEP=1)
#   ARNG_INFLUXD            influxd binary to use
set -euo pipefail
cd "$(dirname "$0")/.."

json_out=0
report_dir=""
while [ $# -gt 0 ]; do
  a=$1; shift
  case "$a" in
    --json) json_out=1 ;;
    --report) [ $# -gt 0 ] || { echo "soak: --report needs a directory" >&2; exit 2; }; report_dir=$1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "soak: unknown argument '$a' (see --help)" >&2; exit 2 ;;
  esac
done

log() { printf '[soak %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "$*"; exit 1; }
usage_die() { echo "soak: $*" >&2; exit 2; }

# "90s" / "10m" / "1h" / "45" -> seconds (integer; a fraction of a unit is rounded down).
secs() {
  local v=$1 n u
  [[ $v =~ ^([0-9]+(\.[0-9]+)?)(s|m|h)?$ ]] || usage_die "bad duration '$v' (expected e.g. 90s, 10m, 1h)"
  n=${BASH_REMATCH[1]}; u=${BASH_REMATCH[3]:-s}
  case $u in s) awk -v n="$n" 'BEGIN{printf "%d", n}' ;; m) awk -v n="$n" 'BEGIN{printf "%d", n*60}' ;; h) awk -v n="$n" 'BEGIN{printf "%d", n*3600}' ;; esac
}
# "5m,15m" -> "300 900"
secs_list() { local out="" x; IFS=, read -ra xs <<<"$1"; for x in "${xs[@]}"; do [ -n "$x" ] && out+="$(secs "$x") "; done; echo "$out"; }

dur=$(secs "${DURATION:-30m}")
rate=${RATE:-1000}
zones=${ZONES:-nord,sud,est}
per_zone=${SENSORS_PER_ZONE:-50}
seed=${SEED:-42}
every=$(secs "${RESTART_EVERY:-10m}")
influx_down=$(secs "${INFLUX_DOWN:-25s}")
broker_down=$(secs "${BROKER_DOWN:-15s}")
sample_every=${SAMPLE_EVERY:-10}
catch_up=${CATCH_UP:-300}
stop_signal=${STOP_SIGNAL:-TERM}
[[ $stop_signal == TERM || $stop_signal == KILL ]] || usage_die "STOP_SIGNAL must be TERM or KILL"
[[ $rate =~ ^[0-9]+$ && $rate -gt 0 ]] || usage_die "RATE must be a positive integer"
[[ $per_zone =~ ^[0-9]+$ && $per_zone -gt 0 ]] || usage_die "SENSORS_PER_ZONE must be a positive integer"
[[ $sample_every =~ ^[0-9]+$ && $sample_every -gt 0 ]] || usage_die "SAMPLE_EVERY must be a positive integer"
[ "$dur" -ge 60 ] || usage_die "DURATION must be at least 60s"
[ "$every" -ge 60 ] || usage_die "RESTART_EVERY must be at least 60s"
IFS=, read -ra zone_list <<<"$zones"
heat_zone=${zone_list[1]:-${zone_list[0]}}
drop_zone=${zone_list[${#zone_list[@]}-1]}

# The schedule: offsets in seconds from simulate's start.
if [ -n "${INFLUX_RESTARTS+x}" ]; then influx_at=$(secs_list "$INFLUX_RESTARTS"); else
  influx_at=""; for ((t = every / 2; t + influx_down + 30 <= dur; t += every)); do influx_at+="$t "; done; fi
if [ -n "${BROKER_RESTARTS+x}" ]; then broker_at=$(secs_list "$BROKER_RESTARTS"); else
  broker_at=""; for ((t = every; t + broker_down + 30 <= dur; t += every)); do broker_at+="$t "; done; fi
scenario_args=()
heatwaves=0
for ((t = every * 3 / 10; t + every * 4 / 10 <= dur; t += every)); do
  scenario_args+=(--scenario "heatwave:$heat_zone@${t}s+$((every * 4 / 10))s"); heatwaves=$((heatwaves + 1))
done
# One sensor silent for longer than the silence rule (90 s): ingest raises and clears
# a silence alert. Readings it does not publish are `dropped` in simulate's summary.
drop_at=$((every * 3 / 10)); drop_len=120
[ $((drop_at + drop_len + 10)) -le "$dur" ] || drop_len=0
[ "$drop_len" -gt 0 ] && scenario_args+=(--fault "dropout:$drop_zone/s1@${drop_at}s+${drop_len}s")

# ----- the report: reads a run's files (all in one directory), so a kept run can be ------
# reported again with `--report DIR`. Exit status 0 only when nothing was lost.
report() {
  python3 - "$1" "$2" <<'PY'
import csv, json, sys, collections
work, json_out = sys.argv[1], sys.argv[2] == "1"
(sim_rc, e2e_rc, ingest_rc, serve_rc, load_start, load_end,
 rate, dur, zones, per_zone, seed, heatwaves, heat_zone, drop_zone, drop_len) = open(f"{work}/run.args").read().split("\n")[:15]

def rows(name):
    with open(f"{work}/{name}") as f:
        return [r for r in csv.DictReader(line for line in f if line.strip()) if r.get("_value") not in (None, "_value")]

sim = json.load(open(f"{work}/simulate.json"))
published = sim["readings"]
count = {(r["zone"], r["sensor"]): int(r["_value"]) for r in rows("per_sensor_count.csv")}
distinct = {(r["zone"], r["sensor"]): int(r["_value"]) for r in rows("per_sensor_distinct.csv")}
maxseq = {(r["zone"], r["sensor"]): int(r["_value"]) for r in rows("per_sensor_max.csv")}
stored = sum(count.values())
stored_distinct = sum(distinct.values())
duplicates = stored - stored_distinct
per_zone_pub = {z: v["readings"] for z, v in sim["zones"].items()}
per_zone_stored = collections.Counter()
for (z, _), n in distinct.items():
    per_zone_stored[z] += n
lost = max(0, published - stored_distinct)
# Sensors whose stored seqs do not cover 0..max (dropouts excluded: their seqs are skipped on purpose).
gappy = sorted(f"{z}/{s}" for (z, s), n in distinct.items() if n != maxseq[(z, s)] + 1 and not (z == drop_zone and s == "s1"))

alerts = collections.Counter()
for r in rows("alerts.csv"):
    alerts[(r["source"], r["metric"], r["severity"], r["state"])] += int(r["_value"])
def total(source, **kw):
    return sum(n for (so, m, sev, st), n in alerts.items() if so == source and all(
        {"metric": m, "severity": sev, "state": st}[k] == v for k, v in kw.items()))
sensor_alerts_stored = total("sensor")
heat_sensors = int(per_zone) * int(heatwaves)
# Per heatwave and sensor, ingest's rules raise and clear a warning and a critical alert.
expected_rule = {f"{sev} {st}": heat_sensors for sev in ("warning", "critical") for st in ("raised", "cleared")}
got_rule = {f"{sev} {st}": total("ingest", metric="temp", severity=sev, state=st) for sev in ("warning", "critical") for st in ("raised", "cleared")}
silence = {st: total("ingest", metric="silence", state=st) for st in ("raised", "cleared")}
api_alerts = len(json.load(open(f"{work}/api_alerts.json")).get("alerts", []))
metrics = {}
for line in open(f"{work}/ingest_metrics_end.prom"):
    if line.startswith("arng_ingest_alerts_total{"):
        metrics[line.split("{")[1].split("}")[0]] = float(line.split()[-1])

mem = list(csv.DictReader(open(f"{work}/memory.csv")))
def mib(v):
    return round(int(v) / 1024, 1) if v else None
procs = ["ingest", "serve", "simulate", "influxd", "mosquitto"]
memory = {}
for p in procs:
    vals = [int(r[f"{p}_rss_kb"]) for r in mem if r[f"{p}_rss_kb"]]
    if vals:
        memory[p] = {"first_mib": mib(vals[0]), "min_mib": mib(min(vals)), "max_mib": mib(max(vals)), "last_mib": mib(vals[-1])}
# Memory over time for the report: the largest sample of each process in each
# 5-minute window (a process being restarted has no sample for a few seconds).
table = []
for r in mem:
    w = int(r["t_s"]) // 300
    if not table or table[-1]["window"] != w:
        table.append({"window": w, "from_s": w * 300, **{p: None for p in procs}, "load1_max": 0.0})
    row = table[-1]
    for p in procs:
        v = mib(r[f"{p}_rss_kb"])
        if v is not None and (row[p] is None or v > row[p]):
            row[p] = v
    row["load1_max"] = max(row["load1_max"], float(r["load1"] or 0))
for row in table:
    del row["window"]
events = list(csv.DictReader(open(f"{work}/events.csv")))
cpu_last = {p: max((float(r[f"{p}_cpu_s"]) for r in mem if r[f"{p}_cpu_s"]), default=None) for p in ("ingest", "serve", "simulate")}
try:
    e2e = json.load(open(f"{work}/check-e2e.json"))
except Exception:
    e2e = {"ok": False, "hops": []}

sensor_alerts_ok = sensor_alerts_stored >= sim["alerts"]
rules_ok = got_rule == expected_rule and silence["raised"] >= 1
ok = (lost == 0 and duplicates == 0 and sim_rc == "0" and sim.get("unacked", 1) == 0 and e2e_rc == "0"
      and ingest_rc == "0" and sensor_alerts_ok and not gappy)
summary = {
    "ok": ok,
    "config": {"rate": int(rate), "duration_s": int(dur), "zones": zones, "sensors_per_zone": int(per_zone), "seed": int(seed),
               "heatwaves": int(heatwaves), "heatwave_zone": heat_zone, "dropout": f"{drop_zone}/s1 {drop_len}s"},
    "load": {"start": load_start, "end": load_end},
    "simulate": {"exit": int(sim_rc), "readings": published, "dropped_by_fault": sim.get("dropped"),
                 "messages_sent": sim.get("messages_sent"), "messages_acked": sim.get("messages_acked"),
                 "unacked": sim.get("unacked"), "alerts": sim.get("alerts"), "duration_s": sim.get("duration_s"),
                 "readings_per_s": sim.get("readings_per_s"), "schedule_slip_ms": sim.get("schedule_slip_ms"),
                 "reconnects": sum(c.get("reconnects", 0) for c in sim.get("connections", []))},
    "readings": {"published_acked": published, "stored": stored_distinct, "points": stored, "lost": lost,
                 "duplicates": duplicates, "per_zone": {z: {"published": per_zone_pub[z], "stored": per_zone_stored[z]} for z in per_zone_pub},
                 "sensors_with_gaps": gappy},
    "alerts": {"sensor_published": sim.get("alerts"), "sensor_stored": sensor_alerts_stored,
               "ingest_rules_expected": expected_rule, "ingest_rules_stored": got_rule, "ingest_rules_match": rules_ok,
               "ingest_silence": silence, "ingest_metrics": metrics, "api_listed": api_alerts},
    "memory_mib": memory, "memory_table": table, "cpu_s": cpu_last,
    "events": events,
    "check_e2e": {"exit": int(e2e_rc), "ok": e2e.get("ok"), "failed": [h["name"] for h in e2e.get("hops", []) if not h.get("ok")]},
    "exits": {"ingest": int(ingest_rc), "serve": int(serve_rc)},
}
json.dump(summary, open(f"{work}/summary.json", "w"), indent=2)
if json_out:
    print(json.dumps(summary))
    sys.exit(0 if ok else 1)
r = summary["readings"]
print(f"soak: {int(dur)} s at {rate} readings/s, {len(zones.split(','))} zones x {per_zone} sensors, seed {seed}; load {load_start} -> {load_end}")
print(f"readings: published (acknowledged) {published}, stored {r['stored']}, lost {lost}, duplicates {duplicates}"
      + (f"; {len(gappy)} sensor(s) with gaps: " + ", ".join(gappy[:8]) + (", ..." if len(gappy) > 8 else "") if gappy else ""))
print(f"simulate: exit {sim_rc}, unacked {sim.get('unacked')}, reconnects {summary['simulate']['reconnects']}, "
      f"schedule slip {sim.get('schedule_slip_ms')} ms, dropped by the dropout fault {sim.get('dropped')}")
print(f"alerts: sensor-side published {sim.get('alerts')} / stored {sensor_alerts_stored}; ingest rules (temp) stored "
      + ", ".join(f"{k} {v}/{expected_rule[k]}" for k, v in got_rule.items())
      + f"; silence raised {silence['raised']} cleared {silence['cleared']}; GET /alerts?limit=1000 lists {api_alerts}")
print("memory (MiB, first/min/max/last): " + "; ".join(f"{p} {m['first_mib']}/{m['min_mib']}/{m['max_mib']}/{m['last_mib']}" for p, m in memory.items()))
print("memory over time (MiB, largest sample per 5 minutes):")
print("  from_s " + " ".join(f"{p:>9}" for p in procs) + "  load1_max")
for row in table:
    print(f"  {row['from_s']:6d} " + " ".join(f"{row[p] if row[p] is not None else '-':>9}" for p in procs) + f"  {row['load1_max']:9.2f}")
print("cpu seconds: " + ", ".join(f"{p} {v}" for p, v in cpu_last.items()))
print("events:")
for e in events:
    print(f"  {float(e['t_s']):8.1f} s  {e['event']} {e['detail']}")
print(f"check-e2e: exit {e2e_rc}" + (f", failed hops {summary['check_e2e']['failed']}" if summary["check_e2e"]["failed"] else ""))
print(f"ingest exit {ingest_rc}, serve exit {serve_rc}")
print("RESULT: " + ("OK, nothing lost" if ok else "FAILED"))
sys.exit(0 if ok else 1)
PY
}

if [ -n "$report_dir" ]; then
  [ -f "$report_dir/run.args" ] || { echo "soak: $report_dir holds no finished run (run.args)" >&2; exit 2; }
  report "$report_dir" "$json_out"
  exit $?
fi

# ----- tools and working directory -----------------------------------------------------
export PATH="$PATH:/usr/sbin"
command -v mosquitto >/dev/null && command -v mosquitto_passwd >/dev/null \
  || die "mosquitto not found: apt-get install mosquitto (scripts/test.sh does it)"
if [ -n "${SOAK_OUT:-}" ]; then mkdir -p "$SOAK_OUT"; work=$(cd "$SOAK_OUT" && pwd); keep=1
else work=$(mktemp -d /tmp/arng-soak.XXXXXX); keep=${SOAK_KEEP:-0}; fi

declare -A pid=()
cleanup() {
  local rc=$?
  for name in simulate serve ingest influxd mosquitto sampler; do
    [ -n "${pid[$name]:-}" ] && kill "${pid[$name]}" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [ "$keep" = 1 ]; then log "files kept in $work"; else rm -rf "$work"; fi
  exit "$rc"
}
trap cleanup EXIT
trap "exit 130" INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pw() { sed -n "s/^$1://p" mosquitto-conf/dev-accounts; }
now_ms() { date +%s%3N; }

log "building arng (release)..."
cargo build --release --quiet
arng=$PWD/target/release/arng
influxd=${ARNG_INFLUXD:-$(scripts/build-influxd.sh)}
[ -x "$influxd" ] || die "no influxd binary at '$influxd'"

mport=$(free_port); iport=$(free_port); metrics_port=$(free_port); api_port=$(free_port)
scripts/broker-config.sh render mosquitto-conf/mosquitto.conf "$work/mosquitto" "$mport" >/dev/null
mkdir -p "$work/influxd"
: >"$work/events.csv"
echo "t_s,event,detail" >"$work/events.csv"
t0_ms=0 # simulate's start, set below; events before it have negative offsets
event() { # name detail
  local t; t=$(awk -v a="$(now_ms)" -v b="$t0_ms" 'BEGIN{printf "%.1f", (b ? a - b : 0) / 1000}')
  echo "$t,$1,$2" >>"$work/events.csv"; log "$1 ${2}"
}

start_mosquitto() {
  mosquitto -c "$work/mosquitto/mosquitto.conf" >>"$work/mosquitto.stdout" 2>&1 &
  pid[mosquitto]=$!
}
start_influxd() {
  (cd "$work/influxd" && exec "$influxd" --bolt-path "$work/influxd/b" --engine-path "$work/influxd/e" \
    --sqlite-path "$work/influxd/s.sqlite" --http-bind-address "127.0.0.1:$iport" \
    --reporting-disabled --log-level warn >>"$work/influxd.log" 2>&1) &
  pid[influxd]=$!
}
# Stops a server with STOP_SIGNAL (TERM: a clean stop, Mosquitto saves its database)
# and waits for it to exit.
stop_server() {
  local name=$1 p=${pid[$1]}
  kill "-$stop_signal" "$p" 2>/dev/null || true
  for _ in $(seq 1 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$p" 2>/dev/null && { log "$name did not stop in 30 s: SIGKILL"; kill -KILL "$p" 2>/dev/null || true; }
  wait "$p" 2>/dev/null || true
  pid[$name]=""
}
influx_health() { curl -sf -m 2 "http://127.0.0.1:$iport/health" >/dev/null; }
broker_up() { python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1",int(sys.argv[1])),1)' "$mport" 2>/dev/null; }
metric() { awk -v m="$1" '$1==m{print $2}' "$work/metrics.now" 2>/dev/null; }

start_mosquitto
for _ in $(seq 1 50); do broker_up && break; sleep 0.1; done
broker_up || { cat "$work/mosquitto/mosquitto.log" >&2; die "Mosquitto did not start"; }
start_influxd
for _ in $(seq 1 120); do influx_health && break; sleep 0.5; done
influx_health || { cat "$work/influxd.log" >&2; die "influxd did not start"; }
curl -sf -XPOST "http://127.0.0.1:$iport/api/v2/setup" \
  -d '{"username":"admin","password":"admin-dev-password","org":"ares","bucket":"entrepot","token":"dev-token"}' >/dev/null \
  || die "InfluxDB setup failed"

export ARNG_MQTT_URL="mqtt://127.0.0.1:$mport" INFLUX_URL="http://127.0.0.1:$iport" INFLUX_TOKEN=dev-token
export ARNG_API_URL="http://127.0.0.1:$api_port"
ARNG_MQTT_USERNAME=ingest ARNG_MQTT_PASSWORD=$(pw ingest) RUST_LOG=arng=info \
  "$arng" ingest --metrics-port "$metrics_port" --spool-dir "$work/spool" >"$work/ingest.log" 2>&1 &
pid[ingest]=$!
ARNG_MQTT_USERNAME=api ARNG_MQTT_PASSWORD=$(pw api) RUST_LOG=arng=info \
  "$arng" serve --port "$api_port" >"$work/serve.log" 2>&1 &
pid[serve]=$!
# The persistent session of ingest must exist before the first reading (the broker
# queues only for sessions it knows), and serve must be ready.
for _ in $(seq 1 150); do
  curl -sf "http://127.0.0.1:$metrics_port/metrics" 2>/dev/null | grep -q '^arng_ingest_mqtt_connected 1' \
    && curl -sf "$ARNG_API_URL/ready" >/dev/null && break
  sleep 0.2
done
curl -sf "$ARNG_API_URL/ready" >/dev/null || { tail -20 "$work/ingest.log" "$work/serve.log" >&2; die "ingest/serve not ready"; }

sensors=$((per_zone * ${#zone_list[@]}))
log "chain up: broker :$mport, influxd :$iport, ingest metrics :$metrics_port, API :$api_port; work dir $work"
log "simulate: $sensors sensors ($per_zone per zone in $zones) at $rate readings/s for ${dur}s, QoS 1, seed $seed"
log "servers stopped with SIG$stop_signal; InfluxDB restarts at [${influx_at% }] s (${influx_down}s down); broker restarts at [${broker_at% }] s (${broker_down}s down); $heatwaves heatwave(s) in $heat_zone"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

t0_ms=$(now_ms)
ARNG_MQTT_USERNAME=simulator ARNG_MQTT_PASSWORD=$(pw simulator) RUST_LOG=arng=info \
  "$arng" simulate --zones "$zones" --sensors-per-zone "$per_zone" --rate "$rate" --duration "${dur}s" \
  --qos 1 --seed "$seed" --ack-timeout 60s --json "${scenario_args[@]}" >"$work/simulate.json" 2>"$work/simulate.log" &
pid[simulate]=$!
event start "simulate pid ${pid[simulate]}"

# ----- the main loop: schedule, readiness probes, memory samples ------------------------
rss_kb() { [ -n "${1:-}" ] && awk '/^VmRSS/{print $2}' "/proc/$1/status" 2>/dev/null || true; }
cpu_s() { [ -n "${1:-}" ] && awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f", ($14+$15)/hz}' "/proc/$1/stat" 2>/dev/null || true; }
echo "t_s,ingest_rss_kb,serve_rss_kb,simulate_rss_kb,influxd_rss_kb,mosquitto_rss_kb,ingest_cpu_s,serve_cpu_s,simulate_cpu_s,ingest_written,spool_bytes,load1" >"$work/memory.csv"
sample() {
  local t; t=$(awk -v a="$(now_ms)" -v b="$t0_ms" 'BEGIN{printf "%.0f", (a - b) / 1000}')
  echo "$t,$(rss_kb "${pid[ingest]}"),$(rss_kb "${pid[serve]}"),$(rss_kb "${pid[simulate]:-}"),$(rss_kb "${pid[influxd]:-}"),$(rss_kb "${pid[mosquitto]:-}"),$(cpu_s "${pid[ingest]}"),$(cpu_s "${pid[serve]}"),$(cpu_s "${pid[simulate]:-}"),$(metric arng_ingest_readings_written_total),$(metric arng_ingest_spool_bytes),$(cut -d' ' -f1 /proc/loadavg)" >>"$work/memory.csv"
}

# Pending actions as "offset kind" lines, and what is being watched after a restart.
actions=$( { for t in $influx_at; do echo "$t influx_stop"; echo "$((t + influx_down)) influx_start"; done
             for t in $broker_at; do echo "$t broker_stop"; echo "$((t + broker_down)) broker_start"; done; } | sort -n)
declare -A watch=() # what we wait for -> since (ms)
next_sample=0
sim_rc=""
while :; do
  elapsed=$(( ($(now_ms) - t0_ms) / 1000 ))
  curl -sf -m 2 "http://127.0.0.1:$metrics_port/metrics" >"$work/metrics.now" 2>/dev/null || : >"$work/metrics.now"
  while [ -n "$actions" ]; do
    read -r at kind <<<"$(head -n1 <<<"$actions")"
    [ "$elapsed" -ge "$at" ] || break
    actions=$(tail -n +2 <<<"$actions")
    case $kind in
      influx_stop) stop_server influxd; event influx_stopped "SIG$stop_signal" ;;
      influx_start) start_influxd; event influx_started "pid ${pid[influxd]}"
        watch[influx_health]=$(now_ms); watch[ingest_influx]=$(now_ms); watch[spool_drained]=$(now_ms); watch[api_ready]=$(now_ms) ;;
      broker_stop) stop_server mosquitto; event broker_stopped "SIG$stop_signal" ;;
      broker_start) start_mosquitto; event broker_started "pid ${pid[mosquitto]}"
        watch[broker_port]=$(now_ms); watch[ingest_mqtt]=$(now_ms); watch[api_ready]=$(now_ms) ;;
    esac
  done
  for w in "${!watch[@]}"; do
    ok=1
    case $w in
      influx_health) influx_health || ok=0 ;;
      broker_port) broker_up || ok=0 ;;
      ingest_influx) [ "$(metric arng_ingest_influx_healthy)" = 1 ] || ok=0 ;;
      ingest_mqtt) [ "$(metric arng_ingest_mqtt_connected)" = 1 ] || ok=0 ;;
      spool_drained) [ "$(metric arng_ingest_influx_healthy)" = 1 ] && [ "$(metric arng_ingest_spool_bytes)" = 0 ] || ok=0 ;;
      api_ready) curl -sf -m 3 "$ARNG_API_URL/ready" >/dev/null || ok=0 ;;
    esac
    if [ "$ok" = 1 ]; then
      event "recovered_$w" "$(awk -v a="$(now_ms)" -v b="${watch[$w]}" 'BEGIN{printf "%.1f s after restart", (a - b) / 1000}')"
      unset "watch[$w]"
    fi
  done
  if [ "$elapsed" -ge "$next_sample" ]; then sample; next_sample=$((next_sample + sample_every)); fi
  if [ -n "${pid[simulate]}" ] && ! kill -0 "${pid[simulate]}" 2>/dev/null; then
    set +e; wait "${pid[simulate]}"; sim_rc=$?; set -e
    pid[simulate]=""
    event simulate_exited "exit code $sim_rc"
  fi
  # Done when simulate has exited, no restart is pending and every restart recovered.
  [ -n "$sim_rc" ] && [ -z "$actions" ] && [ ${#watch[@]} -eq 0 ] && break
  [ -n "$sim_rc" ] && [ $(( ($(now_ms) - t0_ms) / 1000 )) -gt $((dur + catch_up)) ] && { log "restarts did not recover: ${!watch[*]}"; break; }
  sleep 1
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# ----- end checks --------------------------------------------------------------------------
# check-e2e right away, while the last heartbeats (every 30 s) are still fresh. The
# probes go to the first zone; every simulated zone's heartbeat is checked.
set +e
ARNG_MQTT_USERNAME=operator ARNG_MQTT_PASSWORD=$(pw operator) \
  "$arng" check-e2e --zone "$zones" --json >"$work/check-e2e.json" 2>"$work/check-e2e.log"
e2e_rc=$?
set -e
event check_e2e "exit code $e2e_rc"

flux() { # query -> CSV without annotations
  curl -sf -XPOST "http://127.0.0.1:$iport/api/v2/query?org=ares" -H "Authorization: Token dev-token" \
    -H "Content-Type: application/json" -H "Accept: application/csv" \
    -d "$(python3 -c 'import json,sys; print(json.dumps({"query": sys.argv[1], "dialect": {"annotations": []}}))' "$1")"
}
readings_flux='from(bucket: "entrepot") |> range(start: -30d, stop: 1d)
  |> filter(fn: (r) => r._measurement == "readings" and r._field == "seq" and r.sensor != "e2e-probe")'
count_stored() { flux "$readings_flux |> group() |> count()" | awk -F, 'NR==2{print $NF}' | tr -d '\r'; }
published=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["readings"])' "$work/simulate.json" 2>/dev/null || echo "")
[ -n "$published" ] || { tail -30 "$work/simulate.log" >&2; die "simulate printed no summary (exit $sim_rc)"; }

# Wait until InfluxDB holds every published reading or the count stops moving.
stored=0; last=-1; still=0; deadline=$(( $(date +%s) + catch_up ))
while :; do
  stored=$(count_stored); stored=${stored:-0}
  [ "$stored" -ge "$published" ] && break
  if [ "$stored" = "$last" ]; then still=$((still + 1)); else still=0; fi
  [ "$still" -ge 6 ] && [ "$(metric arng_ingest_spool_bytes)" = 0 ] && break
  [ "$(date +%s)" -ge "$deadline" ] && break
  last=$stored; sleep 5
  curl -sf -m 2 "http://127.0.0.1:$metrics_port/metrics" >"$work/metrics.now" 2>/dev/null || true
done
event counted "stored $stored of $published"
sample

# Per sensor: points and distinct seq (a repeat of a seq under another timestamp would be a
# duplicate; a redelivered reading has the same timestamp and overwrites its first copy).
flux "$readings_flux |> count()" >"$work/per_sensor_count.csv"
flux "$readings_flux |> distinct() |> count()" >"$work/per_sensor_distinct.csv"
flux "$readings_flux |> max()" >"$work/per_sensor_max.csv"
flux 'from(bucket: "entrepot") |> range(start: -30d, stop: 1d)
  |> filter(fn: (r) => r._measurement == "alerts" and r._field == "id" and r.sensor != "e2e-probe")
  |> group(columns: ["source", "metric", "severity", "state"]) |> count()' >"$work/alerts.csv"
curl -sf "$ARNG_API_URL/alerts?since=24h&limit=1000" >"$work/api_alerts.json" || echo '{}' >"$work/api_alerts.json"
cp "$work/metrics.now" "$work/ingest_metrics_end.prom"

# Stop ingest cleanly and keep its exit code (0 = flushed everything).
kill -TERM "${pid[ingest]}"; set +e; wait "${pid[ingest]}"; ingest_rc=$?; set -e; pid[ingest]=""
kill -TERM "${pid[serve]}"; set +e; wait "${pid[serve]}"; serve_rc=$?; set -e; pid[serve]=""

printf '%s\n' "$sim_rc" "$e2e_rc" "$ingest_rc" "$serve_rc" "$load_start" "$load_end" \
  "$rate" "$dur" "$zones" "$per_zone" "$seed" "$heatwaves" "$heat_zone" "$drop_zone" "$drop_len" >"$work/run.args"
set +e
report "$work" "$json_out"
