#!/usr/bin/env bash
# The one test command (README, CI): provisions the real servers the tests need, then
# runs formatting, clippy with warnings denied, and every test, integration tests
# against real Mosquitto and InfluxDB included.
#
# - Mosquitto: Debian's package, installed with apt-get when missing.
# - openssl: Debian's package, for the TLS tests' certificates (scripts/gen-certs.sh).
# - Chromium: Debian's package, for the headless browser test of the dashboard.
# - man-db: Debian's package, to render the pages of `arng man` (tests/cli.rs).
# - InfluxDB 2.7: influxd built from its Go module by scripts/build-influxd.sh and
#   cached in ~/.cache/arng (10-20 minutes the first time, instant afterwards).
# Tests start their own servers on free loopback ports in temp dirs; nothing here
# touches a developer's running services. If a server cannot be provisioned this
# script fails and says what is missing: tests are never skipped.
#
# Environment: ARNG_INFLUXD (use this influxd binary), ARNG_INFLUXD_VERSION,
# ARNG_CACHE_DIR (see scripts/build-influxd.sh), CARGO_TEST_ARGS (extra arguments
# for `cargo test`, e.g. a test name filter), ARNG_FUZZ_SECONDS (fuzzing budget per
# target, default 30).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
die() { echo "scripts/test.sh: $*" >&2; exit 1; }

have_mosquitto() { command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; }

apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "cannot install $* (no apt-get): install it by hand"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq >/dev/null || die "apt-get update failed while installing $*"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null \
    || die "apt-get install $* failed"
}

step "Provisioning Mosquitto"
if ! have_mosquitto || ! command -v mosquitto_passwd >/dev/null 2>&1; then
  apt_install mosquitto mosquitto-clients
fi
have_mosquitto || die "mosquitto is still missing after installing it"
export PATH="$PATH:/usr/sbin"
mosquitto -h 2>/dev/null | head -n 1 || true

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

step "Provisioning InfluxDB (influxd)"
if [ -z "${ARNG_INFLUXD:-}" ]; then
  ARNG_INFLUXD=$(scripts/build-influxd.sh) || die "could not build influxd (see the messages above)"
fi
[ -x "$ARNG_INFLUXD" ] || die "influxd binary $ARNG_INFLUXD is not executable"
"$ARNG_INFLUXD" version || die "$ARNG_INFLUXD does not run"
export ARNG_INFLUXD

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
