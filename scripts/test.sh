#!/usr/bin/env bash
# The one test command (README, CI): provisions the real servers the tests need, then
# runs formatting, clippy with warnings denied, and every test, integration tests
# against real Mosquitto and InfluxDB included.
#
# - Mosquitto: Debian's package, installed with apt-get when missing (scripts/lib/
#   provision.sh, shared with scripts/services.sh, scripts/run.sh and bench/lib.sh).
# - curl: Debian's package, for scripts/run.sh, whose test runs the whole chain.
# - openssl: Debian's package, for the TLS tests' certificates (scripts/gen-certs.sh).
# - Chromium: Debian's package, for the headless browser test of the dashboard.
# - man-db: Debian's package, to render the pages of `arng man` (tests/cli.rs).
# - Python with paho-mqtt: Debian's python3-paho-mqtt, else a venv in target/ with
#   paho-mqtt from PyPI, for the interoperability test (tests/interop.rs) that runs
#   the lab's Python sensor (examples/python/).
# - InfluxDB 2.7: influxd built from its Go module by scripts/build-influxd.sh and
#   cached in ~/.cache/arng (10-20 minutes the first time, instant afterwards).
# Tests start their own servers on free loopback ports in temp dirs; nothing here
# touches a developer's running services. If a server cannot be provisioned this
# script fails and says what is missing: tests are never skipped.
#
# Environment: ARNG_INFLUXD (use this influxd binary), ARNG_PYTHON (a python with
# paho-mqtt), ARNG_INFLUXD_VERSION,
# ARNG_CACHE_DIR (see scripts/build-influxd.sh), CARGO_TEST_ARGS (extra arguments
# for `cargo test`, e.g. a test name filter), ARNG_FUZZ_SECONDS (fuzzing budget per
# target, default 30).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
die() { echo "scripts/test.sh: $*" >&2; exit 1; }
# apt_install, provision_mosquitto, provision_influxd: shared with scripts/services.sh
# (and so scripts/run.sh) and bench/lib.sh.
. scripts/lib/provision.sh

step "Provisioning Mosquitto"
provision_mosquitto
mosquitto -h 2>/dev/null | head -n 1 || true

step "Provisioning curl (scripts/run.sh and scripts/services.sh, run by tests/run_script.rs)"
command -v curl >/dev/null 2>&1 || apt_install curl
curl --version | head -n 1

step "Provisioning openssl (certificates of the TLS tests)"
command -v openssl >/dev/null 2>&1 || apt_install openssl
openssl version || die "openssl is still missing after installing it"

step "Provisioning Chromium (headless browser test of the dashboard)"
if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; then
  apt_install chromium
fi
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || die "chromium is still missing after installing it"

step "Provisioning man-db (rendering of arng's manual pages)"
command -v man >/dev/null 2>&1 || apt_install man-db
command -v man >/dev/null 2>&1 || die "man is still missing after installing man-db"

step "Provisioning Python with paho-mqtt (the lab's sensor, tests/interop.rs)"
py_has_paho() { "$1" -c 'import paho.mqtt.client' >/dev/null 2>&1; }
find_python() {
  local py
  for py in python3 /usr/bin/python3 target/py-venv/bin/python; do
    if command -v "$py" >/dev/null 2>&1 && py_has_paho "$py"; then command -v "$py"; return 0; fi
  done
  return 1
}
if [ -n "${ARNG_PYTHON:-}" ]; then
  py_has_paho "$ARNG_PYTHON" || die "ARNG_PYTHON=$ARNG_PYTHON cannot import paho.mqtt"
else
  if ! ARNG_PYTHON=$(find_python); then
    # Debian's package first (no network but the Debian mirror needed), else PyPI.
    (apt_install python3 python3-paho-mqtt) || echo "apt-get could not install python3-paho-mqtt; trying a venv" >&2
    if ! ARNG_PYTHON=$(find_python); then
      command -v python3 >/dev/null 2>&1 || die "no python3 to build a venv with"
      python3 -m venv target/py-venv || die "python3 -m venv failed (install python3-venv)"
      target/py-venv/bin/pip install -q paho-mqtt || die "pip install paho-mqtt failed"
      ARNG_PYTHON=$(find_python) || die "paho-mqtt is still not importable after installing it"
    fi
  fi
fi
"$ARNG_PYTHON" -c 'import paho.mqtt, sys; print(sys.executable, "paho-mqtt", paho.mqtt.__version__)'
export ARNG_PYTHON

step "Provisioning InfluxDB (influxd)"
provision_influxd
"$ARNG_INFLUXD" version || die "$ARNG_INFLUXD does not run"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --all-targets --locked -- -D warnings

step "cargo test (unit, property and integration tests)"
# shellcheck disable=SC2086
cargo test --all-targets --locked ${CARGO_TEST_ARGS:-}
cargo test --doc --locked

# The payload, topic and annotated-CSV parsers, fuzzed for a bounded time on stable
# Rust with the checks of the libFuzzer targets in fuzz/ (docs/reliability.md). It
# prints executions and failures per target and fails on any failure; it needs no
# nightly toolchain, so it always runs. ARNG_FUZZ_SECONDS is the budget per target
# (the three run two at a time); ARNG_FUZZ_SEED replays a printed run.
step "Bounded fuzzing: payload, topic, annotated CSV (${ARNG_FUZZ_SECONDS:-30} s per target)"
rustfmt --check --edition 2021 fuzz/fuzz_targets/*.rs
ARNG_FUZZ_SECONDS=${ARNG_FUZZ_SECONDS:-30} cargo test --locked --test fuzz -- --nocapture

step "All checks passed"
