#!/usr/bin/env bash
# Usage: bench/capacity.sh [FIGURES]
#
# The capacity model of docs/scaling.md, computed from measured figures: how many
# cores the broker, arng ingest and influxd need for fleets of sensors publishing one
# reading every `reading_interval_s` seconds, and where one Mosquitto (one thread)
# runs out. Prints Markdown on stdout; docs/scaling.md holds the output for the
# checked-in figures between its `capacity.sh` markers, and tests/scaling_model.rs
# fails when the two differ, so a change of the figures means rerunning this script
# and pasting its output.
#
# FIGURES (default bench/capacity.txt): `key value` lines, `#` comments. Keys:
#   broker_cpu_s_per_10k   CPU seconds of Mosquitto per 10,000 readings (in + out, QoS 1)
#   ingest_cpu_s_per_10k   CPU seconds of arng ingest per 10,000 readings
#   influxd_cpu_s_per_10k  CPU seconds of influxd per 10,000 readings written
#   reading_interval_s     seconds between two readings of one sensor
#   utilisation            share of a core planned busy (0.5: half kept for bursts,
#                          catch-up after an outage, queries)
#   fleets                 fleet sizes (sensors), space-separated, one table row each
# bench/scale-out.sh measures the three CPU figures and prints them in this format.
set -euo pipefail
cd "$(dirname "$0")/.."
figures=${1:-bench/capacity.txt}
[ -r "$figures" ] || { echo "capacity: cannot read $figures" >&2; exit 2; }

awk '
  function fail(msg) { printf "capacity: %s: %s\n", FILENAME, msg > "/dev/stderr"; failed = 1; exit 2 }
  # 1234567.8 -> "1,234,568"
  function thousands(x,   s, out) {
    s = sprintf("%.0f", x)
    out = ""
    while (length(s) > 3) { out = "," substr(s, length(s) - 2) out; s = substr(s, 1, length(s) - 3) }
    return s out
  }
  function cores(x) { return x < 10 ? sprintf("%.2f", x) : sprintf("%.1f", x) }
  function ceil(x) { return (x == int(x)) ? x : int(x) + 1 }
  /^[[:space:]]*(#|$)/ { next }
  {
    key = $1
    if (key == "fleets") {
      if (NF < 2) fail("fleets needs at least one size")
      nfleets = 0
      for (i = 2; i <= NF; i++) {
        if ($i !~ /^[0-9]+$/ || $i == 0) fail("fleet size must be a positive integer, got " $i)
        fleet[++nfleets] = $i
      }
      next
    }
    if (NF != 2) fail("expected `key value`, got: " $0)
    if ($2 !~ /^[0-9]*\.?[0-9]+$/ || $2 + 0 <= 0) fail(key " must be a positive number, got " $2)
    v[key] = $2 + 0
  }
  END {
    if (failed) exit 2
    n = split("broker_cpu_s_per_10k ingest_cpu_s_per_10k influxd_cpu_s_per_10k reading_interval_s utilisation", need, " ")
    for (i = 1; i <= n; i++) if (!(need[i] in v)) fail("missing " need[i])
    if (!nfleets) fail("missing fleets")
    if (v["utilisation"] > 1) fail("utilisation is a share of a core, at most 1")
    b = v["broker_cpu_s_per_10k"] / 1e4
    g = v["ingest_cpu_s_per_10k"] / 1e4
    d = v["influxd_cpu_s_per_10k"] / 1e4
    u = v["utilisation"]
    iv = v["reading_interval_s"]

    printf "Cores needed at %d %% utilisation, one reading per sensor every %g s; CPU seconds per 10,000 readings: Mosquitto %g, arng ingest %g, influxd %g (writes only).\n\n", u * 100, iv, v["broker_cpu_s_per_10k"], v["ingest_cpu_s_per_10k"], v["influxd_cpu_s_per_10k"]
    print "| sensors | readings/s | Mosquitto cores | arng ingest cores (workers) | influxd cores | total cores | one Mosquitto? |"
    print "|---|---|---|---|---|---|---|"
    for (i = 1; i <= nfleets; i++) {
      rate = fleet[i] / iv
      cb = rate * b / u; cg = rate * g / u; cd = rate * d / u
      one = (cb <= 1) ? "yes" : sprintf("no: %d brokers or a cluster", ceil(cb))
      printf "| %s | %s | %s | %s (%d) | %s | %s | %s |\n", thousands(fleet[i]), thousands(rate), cores(cb), cores(cg), ceil(cg), cores(cd), cores(cb + cg + cd), one
    }
    printf "\n"
    printf "One Mosquitto uses one core at most: it saturates near %s readings/s (%s sensors at one reading every %g s) and reaches the planned %d %% at %s readings/s (%s sensors).\n", thousands(1 / b), thousands(iv / b), iv, u * 100, thousands(u / b), thousands(u * iv / b)
  }
' "$figures"
