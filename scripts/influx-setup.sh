#!/usr/bin/env bash
# Usage: scripts/influx-setup.sh
#
# Creates, or brings up to date, what arng needs in an InfluxDB 2 that is already set
# up (org, raw bucket and token exist): the downsampled bucket and the task that
# fills it. Idempotent: run it after every setup, as often as you like.
#
#   bucket  entrepot_1m (ARNG_DOWNSAMPLE_BUCKET), retention 2 years
#           (ARNG_DOWNSAMPLE_RETENTION_SECONDS); an existing bucket gets its retention
#           corrected if it differs.
#   task    arng-downsample-1m, Flux from deploy/influxdb/downsample-1m.flux (1-minute
#           mean/min/max per sensor, entrepot -> entrepot_1m); an existing task of that
#           name gets the file's Flux and is (re)activated.
#
# docs/retention.md explains the periods. Called by scripts/services.sh (local stack)
# and by the influxdb container's init script (deploy/influxdb/initdb/, compose).
# Tests: tests/dashboards.rs runs it against a real influxd, twice.
#
# Environment (the names arng itself reads, see docs/configuration.md):
#   INFLUX_URL     default http://localhost:8086
#   INFLUX_ORG     default ares
#   INFLUX_TOKEN   default dev-token (needs rights on buckets and tasks: an all-access
#                  or operator token, such as the setup token)
#   ARNG_DOWNSAMPLE_BUCKET             default entrepot_1m
#   ARNG_DOWNSAMPLE_RETENTION_SECONDS  default 63072000 (730 days)
#   ARNG_DOWNSAMPLE_FLUX               default deploy/influxdb/downsample-1m.flux next
#                                      to this script's repository (or /arng/... in
#                                      the container, see below)
#
# Prints the task id on stdout; progress goes to stderr.
#
# Needs bash, curl, sed and awk only (no jq, no influx CLI): it runs on this machine,
# in CI and inside the influxdb:2.7 image.
set -euo pipefail

die() { echo "influx-setup: $*" >&2; exit 1; }
say() { echo "influx-setup: $*" >&2; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
url="${INFLUX_URL:-http://localhost:8086}"
url="${url%/}"
org="${INFLUX_ORG:-ares}"
token="${INFLUX_TOKEN:-dev-token}"
bucket="${ARNG_DOWNSAMPLE_BUCKET:-entrepot_1m}"
retention="${ARNG_DOWNSAMPLE_RETENTION_SECONDS:-63072000}"
task_name=arng-downsample-1m
flux_file="${ARNG_DOWNSAMPLE_FLUX:-$here/../deploy/influxdb/downsample-1m.flux}"

case "$retention" in ''|*[!0-9]*) die "ARNG_DOWNSAMPLE_RETENTION_SECONDS must be a number of seconds, got '$retention'" ;; esac
case "$bucket" in ''|*[!a-zA-Z0-9_-]*) die "ARNG_DOWNSAMPLE_BUCKET must be letters, digits, _ and -, got '$bucket'" ;; esac
[ -r "$flux_file" ] || die "cannot read the task's Flux at $flux_file"
command -v curl >/dev/null 2>&1 || die "curl not found"
grep -q "name: \"$task_name\"" "$flux_file" \
  || die "$flux_file does not declare option task name \"$task_name\""

# api METHOD PATH [BODY]: prints the body; fails with the server's message on a
# non-2xx status. A lookup (GET) answered 404 prints nothing: InfluxDB answers 404 to
# a name filter that matches no bucket.
api() {
  local method=$1 path=$2 body=${3:-} response status
  response=$(curl -sS -m 15 -w '\n%{http_code}' -X "$method" "$url$path" \
    -H "Authorization: Token $token" -H 'Content-Type: application/json' \
    ${body:+--data-binary "$body"}) || die "$method $url$path: cannot reach InfluxDB"
  status=${response##*$'\n'}
  response=${response%$'\n'*}
  case "$status" in
    2*) printf '%s' "$response" ;;
    404) [ "$method" = GET ] || die "$method $path answered HTTP 404: $response" ;;
    *) die "$method $path answered HTTP $status: $response" ;;
  esac
}

# resource_id KIND: the id of the first KIND (orgs, buckets, tasks) in a JSON answer,
# read from its own `links` (/api/v2/KIND/<id>...), which InfluxDB lists before any
# nested object (a label also has an "id"). Prints nothing when there is none.
resource_id() {
  { grep -o "\"/api/v2/$1/[0-9a-f]\{16\}" || true; } | head -n1 | sed 's|.*/||'
}

# A file's text as a JSON string literal.
json_string() {
  awk 'BEGIN { ORS = "" ; print "\"" }
       { gsub(/\\/, "\\\\"); gsub(/"/, "\\\""); gsub(/\t/, "\\t"); gsub(/\r/, "");
         if (NR > 1) print "\\n"; print }
       END { print "\"" }' "$1"
}

org_id=$(api GET "/api/v2/orgs?org=$org" | resource_id orgs)
[ -n "$org_id" ] || die "org $org not found at $url (is InfluxDB set up, and does the token see it?)"

# --- bucket -----------------------------------------------------------------------
buckets=$(api GET "/api/v2/buckets?orgID=$org_id&name=$bucket")
if echo "$buckets" | grep -q "\"name\": *\"$bucket\""; then
  bucket_id=$(echo "$buckets" | resource_id buckets)
  current=$(echo "$buckets" | grep -o '"everySeconds": *[0-9]*' | head -n1 | grep -o '[0-9]*$' || true)
  if [ "${current:-0}" != "$retention" ]; then
    # InfluxDB refuses a retention shorter than the shard-group duration, so both
    # change together, to InfluxDB's own default for that retention.
    if [ "$retention" -eq 0 ] || [ "$retention" -gt 15552000 ]; then shard=604800
    elif [ "$retention" -ge 172800 ]; then shard=86400
    else shard=3600
    fi
    api PATCH "/api/v2/buckets/$bucket_id" \
      "{\"retentionRules\":[{\"type\":\"expire\",\"everySeconds\":$retention,\"shardGroupDurationSeconds\":$shard}]}" >/dev/null
    say "bucket $bucket: retention ${current:-0} s -> $retention s"
  else
    say "bucket $bucket exists (retention $retention s)"
  fi
else
  api POST /api/v2/buckets \
    "{\"orgID\":\"$org_id\",\"name\":\"$bucket\",\"description\":\"arng: 1-minute mean/min/max per sensor, filled by task $task_name\",\"retentionRules\":[{\"type\":\"expire\",\"everySeconds\":$retention}]}" >/dev/null
  say "bucket $bucket created (retention $retention s)"
fi

# --- task -------------------------------------------------------------------------
# The downsampled bucket's name lives in the Flux file; a different bucket name is
# substituted into the `to(bucket: ...)` call.
flux_tmp=$(mktemp)
trap 'rm -f "$flux_tmp"' EXIT
sed "s/to(bucket: \"entrepot_1m\")/to(bucket: \"$bucket\")/" "$flux_file" >"$flux_tmp"
flux_json=$(json_string "$flux_tmp")

task_id=$(api GET "/api/v2/tasks?orgID=$org_id&name=$task_name" | resource_id tasks)
if [ -n "$task_id" ]; then
  api PATCH "/api/v2/tasks/$task_id" "{\"flux\":$flux_json,\"status\":\"active\"}" >/dev/null
  say "task $task_name ($task_id) updated from $(basename "$flux_file")"
else
  task_id=$(api POST /api/v2/tasks "{\"orgID\":\"$org_id\",\"flux\":$flux_json,\"status\":\"active\"}" | resource_id tasks)
  [ -n "$task_id" ] || die "task $task_name: InfluxDB did not return an id"
  say "task $task_name ($task_id) created: every 1m, $bucket <- entrepot"
fi
echo "$task_id"
