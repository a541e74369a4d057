// arng: 1-minute downsampling of raw readings, entrepot -> entrepot_1m.
// Created (and kept up to date) by scripts/influx-setup.sh; docs/retention.md explains
// the periods. Every minute it recomputes the last 10 complete minutes, so readings
// that reach InfluxDB late (ingest's spool, broker queue) are still folded in; a
// recomputed minute overwrites the previous result (same series, same timestamp).
// Output, per sensor and minute (time = start of the minute), measurement `readings`,
// tags `zone`, `sensor`: temp_mean/min/max, hum_mean/min/max (float),
// alert_level_max and count (int).
import "date"

option task = {name: "arng-downsample-1m", every: 1m, offset: 15s}

// [10 minutes ago, start of the current minute): complete minutes only, even when the
// task is run by hand at an arbitrary time (a scheduled run's now() is already a
// minute boundary).
stop = date.truncate(t: now(), unit: 1m)
start = date.sub(d: 10m, from: stop)

raw = from(bucket: "entrepot")
    |> range(start: start, stop: stop)
    |> filter(fn: (r) => r._measurement == "readings")
    |> filter(fn: (r) => r._field == "temp" or r._field == "hum" or r._field == "alert_level")
    |> drop(columns: ["_start", "_stop"])

values = raw |> filter(fn: (r) => r._field == "temp" or r._field == "hum")

minute = (tables=<-, fn, suffix) =>
    tables
        |> aggregateWindow(every: 1m, fn: fn, timeSrc: "_start", createEmpty: false)
        |> map(fn: (r) => ({r with _field: r._field + "_" + suffix}))

union(
    tables: [
        values |> minute(fn: mean, suffix: "mean"),
        values |> minute(fn: min, suffix: "min"),
        values |> minute(fn: max, suffix: "max"),
        raw |> filter(fn: (r) => r._field == "alert_level") |> minute(fn: max, suffix: "max"),
        raw
            |> filter(fn: (r) => r._field == "temp")
            |> aggregateWindow(every: 1m, fn: count, timeSrc: "_start", createEmpty: false)
            |> map(fn: (r) => ({r with _field: "count"})),
    ],
)
    |> to(bucket: "entrepot_1m")
