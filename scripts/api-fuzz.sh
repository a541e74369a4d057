#!/usr/bin/env bash
# API fuzz pass driven by the OpenAPI document (issue 9, "Hardening"): schemathesis
# (PyPI) generates requests for every operation of `GET /openapi.json` (valid, edge
# and invalid inputs) against a real `arng serve` with a real chain behind it, and
# checks every answer: no 5xx, status codes, content types, headers and bodies as
# the document declares, invalid input refused, valid input accepted, and write
# routes refusing requests without the token.
# Exit 0 only when schemathesis reports no failure and serve's own metrics counted no
# 5xx answer.
#
# What it runs, all on 127.0.0.1 ports it picks, in a temp dir, stopped by pid at exit:
#   Mosquitto  mosquitto-conf/mosquitto.conf rendered by scripts/broker-config.sh
#   influxd    scripts/build-influxd.sh's binary (or $ARNG_INFLUXD), org ares, bucket
#              entrepot, token dev-token
#   arng ingest, arng serve --api-token (write routes exercised with
#              `Authorization: Bearer`), and `arng simulate` feeding readings, a
#              heatwave (alerts) and heartbeats for zones nord, sud, est, so the read
#              routes answer with data, not only 404s
#   schemathesis from a virtualenv under ~/.cache/arng (pip install on first use,
#              version FUZZ_SCHEMATHESIS_VERSION)
#
# Usage: scripts/api-fuzz.sh
# Environment (defaults in brackets):
#   FUZZ_EXAMPLES [100]    maximum test cases per operation and phase (--max-examples)
#   FUZZ_SEED [1]          schemathesis seed (reproducible runs)
#   FUZZ_CHECKS [all]      schemathesis checks
#   FUZZ_SCHEMATHESIS_VERSION [4.32.5]
#   FUZZ_OUT [temp dir]    keep reports (JUnit, JSON, NDJSON) and logs there
#   ARNG_INFLUXD           influxd binary to use
set -euo pipefail
cd "$(dirname "$0")/.."

examples=${FUZZ_EXAMPLES:-100}
seed=${FUZZ_SEED:-1}
checks=${FUZZ_CHECKS:-all}
version=${FUZZ_SCHEMATHESIS_VERSION:-4.32.5}
token=fuzz-token-$RANDOM$RANDOM

bench_name=api-fuzz
. bench/lib.sh
[[ $examples =~ ^[0-9]+$ && $examples -gt 0 ]] || { echo "api-fuzz: FUZZ_EXAMPLES must be a positive integer" >&2; exit 2; }
[[ $seed =~ ^[0-9]+$ ]] || { echo "api-fuzz: FUZZ_SEED must be an integer" >&2; exit 2; }

bench_tools

# ----- schemathesis, in its own virtualenv ------------------------------------------------
venv=${XDG_CACHE_HOME:-$HOME/.cache}/arng/venv-schemathesis
st=$venv/bin/schemathesis
if ! "$st" --version 2>/dev/null | grep -q "$version"; then
  log "installing schemathesis $version into $venv"
  python3 -m venv "$venv" || die "python3 -m venv failed (apt-get install python3-venv)"
  "$venv/bin/pip" install --quiet "schemathesis==$version" || die "pip install schemathesis==$version failed"
fi

if [ -n "${FUZZ_OUT:-}" ]; then
  mkdir -p "$FUZZ_OUT"; work=$(cd "$FUZZ_OUT" && pwd); BENCH_KEEP=1
  trap bench_cleanup EXIT; trap 'exit 130' INT; trap 'exit 143' TERM
else
  bench_workdir arng-api-fuzz
fi
pw() { account "$1"; }

bench_arng
bench_influxd
start_mosquitto
start_influxd
metrics_port=$(free_port); api_port=$(free_port)

export ARNG_MQTT_URL="mqtt://127.0.0.1:$mqtt_port" INFLUX_URL="$influx" INFLUX_TOKEN=dev-token
api="http://127.0.0.1:$api_port"
ARNG_MQTT_USERNAME=ingest ARNG_MQTT_PASSWORD=$(pw ingest) RUST_LOG=arng=info \
  "$arng" ingest --metrics-port "$metrics_port" --spool-dir "$work/spool" >"$work/ingest.log" 2>&1 & pids+=($!)
ARNG_MQTT_USERNAME=api ARNG_MQTT_PASSWORD=$(pw api) ARNG_API_TOKEN=$token RUST_LOG=arng=info \
  "$arng" serve --port "$api_port" >"$work/serve.log" 2>&1 & pids+=($!)
for _ in $(seq 1 150); do
  curl -sf "http://127.0.0.1:$metrics_port/metrics" 2>/dev/null | grep -q '^arng_ingest_mqtt_connected 1' \
    && curl -sf "$api/ready" >/dev/null && break
  sleep 0.2
done
curl -sf "$api/ready" >/dev/null || { tail -20 "$work/ingest.log" "$work/serve.log" >&2; die "ingest/serve not ready"; }

# Data for the read routes: 20 readings per sensor with a heatwave in sud (alerts), then
# a slow stream that keeps heartbeats and readings arriving during the fuzzing.
ARNG_MQTT_USERNAME=simulator ARNG_MQTT_PASSWORD=$(pw simulator) RUST_LOG=arng=warn \
  "$arng" simulate --zones nord,sud,est --sensors-per-zone 3 --interval 100ms --count 20 --seed 7 \
  --scenario heatwave:sud@300ms+1s >/dev/null 2>"$work/simulate-prefill.log" \
  || { cat "$work/simulate-prefill.log" >&2; die "simulate (prefill) failed"; }
ARNG_MQTT_USERNAME=simulator ARNG_MQTT_PASSWORD=$(pw simulator) RUST_LOG=arng=warn \
  "$arng" simulate --zones nord,sud,est --sensors-per-zone 3 --interval 1s --seed 8 \
  >/dev/null 2>"$work/simulate.log" & pids+=($!)
for _ in $(seq 1 50); do
  curl -sf "$api/alerts?zone=sud" | grep -q '"severity"' && curl -sf "$api/zones/nord/latest" >/dev/null && break
  sleep 0.2
done

# Per-operation settings. positive_data_acceptance expects schema-valid requests to be
# accepted; four operations have constraints that JSON Schema cannot state (documented
# in their descriptions), so a 400 naming the field is also right for them there:
#   GET /zones/{zone}/history  range/every: 1s..31d, every <= range, <= 5000 windows
#   GET /alerts                since: 1s..31d when a duration
#   POST /alerts               value/threshold range depends on `metric`
#   PUT /thresholds            a band's bounds must nest, hysteresis < half the band
# Every other check (no 5xx, status codes, content types, schemas, negative data
# rejected, auth enforced...) applies to them unchanged. /events is a stream that never
# ends: each test reads at most 2 events of it.
cat >"$work/schemathesis.toml" <<'TOML'
[[operations]]
include-path = "/events"
max-stream-events = 2

[[operations]]
include-path = "/zones/{zone}/history"
checks.positive_data_acceptance.expected-statuses = ["2xx", 400, 404]

[[operations]]
include-path = "/alerts"
checks.positive_data_acceptance.expected-statuses = ["2xx", 400, 404]

[[operations]]
include-path = "/thresholds"
include-method = "PUT"
checks.positive_data_acceptance.expected-statuses = ["2xx", 400]
TOML

st_version=$("$st" --version 2>&1 | tr -d '\n')
log "$st_version against $api (checks $checks, at most $examples examples per operation, seed $seed)"
set +e
# Run from the work dir: schemathesis keeps a cache of failures (.schemathesis/) in
# its current directory, which must not land in the repository.
(cd "$work" && exec "$st" --config-file "$work/schemathesis.toml" run "$api/openapi.json" \
  --checks "$checks" \
  --max-examples "$examples" \
  --seed "$seed" \
  --workers 1 \
  --header "Authorization: Bearer $token" \
  --request-timeout 20 \
  --generation-database none \
  --no-color \
  --report junit,json,ndjson --report-dir "$work/report") \
  2>&1 | tee "$work/schemathesis.txt"
st_rc=${PIPESTATUS[0]}
set -e

# serve's own count of answers by status: an independent "no 5xx" check.
curl -sf "$api/metrics" >"$work/serve-metrics.prom" || die "cannot read serve's metrics"
server_errors=$(awk '/^arng_api_requests_total\{/ && /status="5/ {s += $NF} END {print s + 0}' "$work/serve-metrics.prom")
requests=$(awk '/^arng_api_requests_total\{/ {s += $NF} END {print s + 0}' "$work/serve-metrics.prom")
log "serve answered $requests requests, $server_errors of them 5xx"
if [ "$server_errors" -gt 0 ]; then
  grep '^arng_api_requests_total{' "$work/serve-metrics.prom" | grep 'status="5' >&2
  grep -iE 'error|panic' "$work/serve.log" | tail -20 >&2
fi
if [ "$st_rc" -ne 0 ] || [ "$server_errors" -gt 0 ]; then
  BENCH_KEEP=1
  die "FAILED: schemathesis exit $st_rc, $server_errors server error(s) (reports in $work)"
fi
log "OK: no failure, no 5xx"
