#!/bin/bash
# Runs once, inside the influxdb:2.7 container, when the image initialises an empty
# data volume (DOCKER_INFLUXDB_INIT_MODE=setup): the image's entrypoint runs every
# executable *.sh of /docker-entrypoint-initdb.d after creating the org, the bucket
# and the admin token, against a temporary influxd at $INFLUX_HOST (port 9999, not
# yet reachable by the other services, whose healthcheck-gated start waits for 8086).
#
# It creates the downsampled bucket and its task with the same script the local stack
# uses (scripts/influx-setup.sh, mounted at /arng). On a volume that was initialised
# before, re-run it by hand (idempotent):
#   docker compose exec influxdb bash /arng/influx-setup.sh
# (ARNG_SETUP_SCRIPT overrides the script's path: tests/dashboards.rs runs this file
# against a local influxd.)
set -euo pipefail
INFLUX_URL="${INFLUX_HOST:?INFLUX_HOST is set by the image entrypoint}" \
INFLUX_ORG="${DOCKER_INFLUXDB_INIT_ORG:?}" \
INFLUX_TOKEN="${DOCKER_INFLUXDB_INIT_ADMIN_TOKEN:?}" \
ARNG_DOWNSAMPLE_FLUX="${ARNG_DOWNSAMPLE_FLUX:-/arng/downsample-1m.flux}" \
  bash "${ARNG_SETUP_SCRIPT:-/arng/influx-setup.sh}" >/dev/null
