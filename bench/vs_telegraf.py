#!/usr/bin/env python3
"""Measurements of bench/vs-telegraf.sh that are the same for both tools.

Nothing here asks arng or Telegraf anything: every figure comes from InfluxDB, from
/proc (read by the shell script) or from the publisher's summary, so both tools are
measured by one yardstick.

  poll     counts a round's sample readings (below) in InfluxDB every INTERVAL seconds
           until a stop file appears; one line per poll: "<time> <count> <query s>",
           the time being the middle of the query (the count is the state at some
           moment during it).
  round    turns one round's polls, the stored readings' own timestamps and the CPU and
           memory figures into one JSON line (appended to the results) and prints a
           human line.
  summary  medians per tool and the ratios arng/Telegraf, as text and as a Markdown
           table.

Lag ("publish -> queryable in InfluxDB"), computed identically for both tools on a
fixed sample of the sensors (every SENSORS/10-th sensor of every zone of the round,
so 2 % at 500 sensors per zone). A sample, because counting all of a round's readings
costs influxd about 50 ms of CPU per query on the development machine, a quarter of a
core at 5 polls/s, which would slow both tools down; the sample's count costs about a
third of that. The sensors' readings are interleaved in the stream, so the sample's
lags are a fair draw of all lags.
- each reading's timestamp is its publish time (arng simulate stamps it when it
  publishes); the cumulative count of stored sample readings by timestamp, P(t), is
  read back from InfluxDB after the round (counts per 100 ms window);
- the polls give S(t), how many sample readings were queryable at time t;
- the k-th sample reading to be published is taken to be the k-th to become
  queryable (both tools read one MQTT connection and write batches in order), so its
  lag is the horizontal distance between the curves, S^-1(k) - P^-1(k), both linearly
  interpolated. p50, p99 and max are over k (every reading weighs the same).
The resolution is about the poll interval plus the query time; both are printed.

Throughput: the round's stored readings divided by the time from the first publish
(the earliest stored timestamp) to the moment the last sample reading became
queryable (the tools write in order: the last batch holds the newest readings).
Sustained readings/s is that throughput for a round that stored every published
reading, and 0 for a round that lost one.
"""

import argparse
import calendar
import csv
import io
import json
import os
import statistics
import sys
import time
import urllib.request

WINDOW_S = 0.1


def flux(influx, query, timeout=60):
    req = urllib.request.Request(
        f"{influx}/api/v2/query?org=ares",
        data=query.encode(),
        headers={
            "Authorization": "Token dev-token",
            "Content-Type": "application/vnd.flux",
            "Accept": "application/csv",
        },
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        body = resp.read().decode()
    rows, header = [], None
    for row in csv.reader(io.StringIO(body)):
        if not row or (len(row) == 1 and not row[0].strip()):
            header = None
            continue
        if header is None:
            header = row
            if "error" in header and "_value" not in header:
                raise RuntimeError(f"Flux error: {body.strip()[:300]}")
            continue
        rows.append(dict(zip(header, row)))
    return rows


def readings_filter(prefix, sample=None):
    """Flux filter: the round's readings (zones starting with prefix), or only the sample
    sensors' when sample is a list of sensor names."""
    f = f'r._measurement == "readings" and r._field == "temp" and r.zone =~ /^{prefix}/'
    if sample:
        f += " and (" + " or ".join(f'r.sensor == "{x}"' for x in sample) + ")"
    return f"filter(fn: (r) => {f})"


def sample_sensors(per_zone):
    """Every per_zone/10-th sensor (s50, s100, ... s500 at 500 per zone)."""
    step = max(1, per_zone // 10)
    return [f"s{i}" for i in range(step, per_zone + 1, step)]


def flux_typed(influx, query):
    """Rows of a query with their column types (the #datatype annotation)."""
    body = json.dumps({"query": query, "type": "flux",
                       "dialect": {"annotations": ["datatype"], "header": True}}).encode()
    req = urllib.request.Request(
        f"{influx}/api/v2/query?org=ares", data=body,
        headers={"Authorization": "Token dev-token", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        text = resp.read().decode()
    rows, types, header = [], None, None
    for row in csv.reader(io.StringIO(text)):
        if not row or (len(row) == 1 and not row[0].strip()):
            types = header = None
        elif row[0] == "#datatype":
            types = row
        elif header is None:
            header = row
        else:
            rows.append({h: (v, t) for h, v, t in zip(header, row, types or [""] * len(row))})
    return rows


def rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def cmd_poll(a):
    start = rfc3339(a.since)
    sample = sample_sensors(a.sensors_per_zone)
    q = f'from(bucket: "entrepot") |> range(start: {start}) |> {readings_filter(a.prefix, sample)} |> group() |> count()'
    with open(a.out, "a") as out:
        while True:
            t0 = time.time()
            try:
                rows = flux(a.influx, q, timeout=30)
                count = int(rows[0]["_value"]) if rows else 0
            except Exception as e:  # a slow or failed poll is skipped, not fatal
                print(f"poll failed: {e}", file=sys.stderr)
                count = None
            t1 = time.time()
            if count is not None:
                out.write(f"{(t0 + t1) / 2:.4f} {count} {t1 - t0:.4f}\n")
                out.flush()
            if os.path.exists(a.stop):
                return
            time.sleep(max(0.0, a.interval - (t1 - t0)))


def parse_time(text):
    # RFC 3339 with up to 9 fractional digits, always UTC ("Z") from InfluxDB.
    secs, _, frac = text.rstrip("Z").partition(".")
    t = calendar.timegm(time.strptime(secs, "%Y-%m-%dT%H:%M:%S"))
    return t + (float("0." + frac) if frac else 0.0)


def first_publish(influx, prefix, since):
    """Earliest timestamp among the round's stored readings (first() per series)."""
    q = (f'from(bucket: "entrepot") |> range(start: {rfc3339(since)}, stop: {rfc3339(time.time() + 60)})'
         f" |> {readings_filter(prefix)} |> first()")
    times = [parse_time(r["_time"]) for r in flux(influx, q, timeout=300)]
    return min(times) if times else float("nan")


def published_curve(influx, prefix, since, sample):
    """Cumulative (time, count) of the stored sample readings by their own timestamp."""
    q = (
        f'from(bucket: "entrepot") |> range(start: {rfc3339(since)}, stop: {rfc3339(time.time() + 60)})'
        f" |> {readings_filter(prefix, sample)} |> group()"
        f' |> aggregateWindow(every: {int(WINDOW_S * 1000)}ms, fn: count, createEmpty: false)'
    )
    windows = []
    for r in flux(influx, q, timeout=300):
        windows.append((parse_time(r["_time"]), int(r["_value"])))
    windows.sort()
    pts, cum = [], 0
    for stop, c in windows:
        pts.append((stop - WINDOW_S, cum))
        cum += c
        pts.append((stop, cum))
    return pts


def inverse(pts, k):
    """First time the piecewise-linear, non-decreasing curve pts reaches k."""
    lo, hi = 0, len(pts) - 1
    if pts[0][1] >= k:
        return pts[0][0]
    while lo < hi:  # first index with count >= k
        mid = (lo + hi) // 2
        if pts[mid][1] >= k:
            hi = mid
        else:
            lo = mid + 1
    (t0, c0), (t1, c1) = pts[lo - 1], pts[lo]
    return t0 + (t1 - t0) * (k - c0) / (c1 - c0)


def quantile(sorted_vals, q):
    if not sorted_vals:
        return float("nan")
    i = min(len(sorted_vals) - 1, max(0, int(round(q * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[i]


def own_p99(before_path, after_path):
    """p99 bucket bound of arng's arng_ingest_lag_seconds over the round (a cross-check)."""

    def hist(path):
        b = {}
        for line in open(path):
            if line.startswith("arng_ingest_lag_seconds_bucket"):
                le = line.split('le="')[1].split('"')[0]
                b[le] = float(line.split()[-1])
        return b

    before, after = hist(before_path), hist(after_path)
    if "+Inf" not in after:
        return None
    total = after["+Inf"] - before.get("+Inf", 0)
    for v, k in sorted((float("inf") if k == "+Inf" else float(k), k) for k in after):
        if total > 0 and after[k] - before.get(k, 0) >= 0.99 * total:
            return v
    return None


def cmd_round(a):
    a.own_p99 = own_p99(a.prom_before, a.prom_after) if a.prom_before and a.prom_after else None
    sim = json.load(open(a.sim))
    published = int(sim["readings"])
    polls = []
    for line in open(a.polls):
        t, c, d = line.split()
        polls.append((float(t), int(c), float(d)))
    stored_final = a.stored
    sample = sample_sensors(a.sensors_per_zone)
    pub = published_curve(a.influx, a.prefix, a.since, sample)
    in_curve = pub[-1][1] if pub else 0
    # S(t): the polls, made non-decreasing (a count never goes down; a poll answered
    # from a slightly older state must not make a reading "un-arrive").
    s_pts, best = [], 0
    for t, c, _ in polls:
        best = max(best, c)
        s_pts.append((t, best))
    lags = []
    reached = s_pts[-1][1] if s_pts else 0
    n = min(in_curve, reached)
    for k in range(1, n + 1):
        lags.append(inverse(s_pts, k) - inverse(pub, k))
    lags.sort()
    complete = stored_final >= published
    if n > 0 and reached >= in_curve:
        done_at = inverse(s_pts, in_curve)
        throughput = stored_final / (done_at - first_publish(a.influx, a.prefix, a.since))
    else:
        throughput = float("nan")
    sustained = throughput if complete else 0.0
    hz = a.clk_tck
    per10k = lambda ticks: ticks / hz / max(stored_final, 1) * 10000
    row = {
        "tool": a.tool,
        "round": a.round,
        "published": published,
        "stored": stored_final,
        "lost": published - stored_final,
        "complete": complete,
        "sustained_per_s": round(sustained, 1),
        "throughput_per_s": round(throughput, 1),
        "publisher_per_s": round(float(sim.get("readings_per_s", 0)), 1),
        "cpu_s_per_10k": round(per10k(a.tool_ticks), 4),
        "cpu_s": round(a.tool_ticks / hz, 2),
        "influxd_cpu_s_per_10k": round(per10k(a.influxd_ticks), 4),
        "broker_cpu_s_per_10k": round(per10k(a.broker_ticks), 4),
        "peak_rss_mib": round(a.hwm_kib / 1024, 1),
        "lag_p50_s": round(quantile(lags, 0.50), 3),
        "lag_p99_s": round(quantile(lags, 0.99), 3),
        "lag_max_s": round(lags[-1], 3) if lags else float("nan"),
        "lag_samples": len(lags),
        "polls": len(polls),
        "poll_query_s_median": round(statistics.median(d for _, _, d in polls), 3) if polls else None,
        "poll_gap_s_median": round(statistics.median(b[0] - a_[0] for a_, b in zip(polls, polls[1:])), 3)
        if len(polls) > 1
        else None,
        "load": a.load,
    }
    row["chain_cpu_s_per_10k"] = round(
        row["cpu_s_per_10k"] + row["influxd_cpu_s_per_10k"] + row["broker_cpu_s_per_10k"], 4)
    if a.broker_counters:
        c = [int(x) for x in a.broker_counters.split()]
        per = lambda i: round((c[i + 4] - c[i]) / max(stored_final, 1), 3)
        row["broker_reads_per_reading"] = per(0)
        row["broker_writes_per_reading"] = per(1)
        row["broker_wakeups_per_reading"] = per(2)
        row["tcp_segments_per_reading"] = per(3)
    if a.link_segments:
        c = [int(x) for x in a.link_segments.split()]
        row["broker_to_tool_segments_per_reading"] = round((c[2] - c[0]) / max(stored_final, 1), 3)
        row["tool_to_broker_segments_per_reading"] = round((c[3] - c[1]) / max(stored_final, 1), 3)
    if a.own_p99 is not None:
        row["own_metric_p99_le_s"] = a.own_p99
    with open(a.results, "a") as f:
        f.write(json.dumps(row) + "\n")
    status = "all stored" if complete else f"LOST {published - stored_final}"
    own = f" (arng's own histogram: p99 <= {a.own_p99} s)" if a.own_p99 is not None else ""
    print(
        f"round {a.round} {a.tool:<8} published {published:>9,} stored {stored_final:>9,} {status:<12}"
        f" sustained {sustained:>8,.0f}/s (stored {throughput:,.0f}/s, publisher {row['publisher_per_s']:,.0f}/s)"
        f" CPU {row['cpu_s_per_10k']:.3f} s/10k  peak RSS {row['peak_rss_mib']:.1f} MiB"
        f"  lag p50 {row['lag_p50_s']:.2f} s p99 {row['lag_p99_s']:.2f} s max {row['lag_max_s']:.2f} s{own}"
        f"  [influxd {row['influxd_cpu_s_per_10k']:.3f}, broker {row['broker_cpu_s_per_10k']:.3f} CPU s/10k;"
        + (f" broker per reading: {row['broker_reads_per_reading']} reads, {row['broker_writes_per_reading']} writes,"
           f" {row['broker_wakeups_per_reading']} wake-ups; {row['tcp_segments_per_reading']} TCP segments;"
           if a.broker_counters else "")
        + (f" segments broker->tool {row['broker_to_tool_segments_per_reading']}, tool->broker {row['tool_to_broker_segments_per_reading']};"
           if a.link_segments else "")
        + f" lag over {len(lags):,} sample readings, {row['polls']} polls every {row['poll_gap_s_median']} s, query {row['poll_query_s_median']} s; load {a.load}]",
        flush=True,
    )


def cmd_points(a):
    """The first reading of sensor s1 in the round's first zone, as line protocol with
    InfluxDB's own column types: shows that both tools store the same point."""
    q = (f'from(bucket: "entrepot") |> range(start: {rfc3339(a.since)})'
         f' |> filter(fn: (r) => r._measurement == "readings" and r.zone == "{a.prefix}1" and r.sensor == "s1")'
         f' |> first()')
    rows = flux_typed(a.influx, q)
    if not rows:
        print(f"  {a.tool}: no point for {a.prefix}1/s1")
        return
    meta = {"", "result", "table", "_start", "_stop", "_time", "_value", "_field", "_measurement"}
    tags = sorted(k for k in rows[0] if k not in meta)
    fields = []
    for r in sorted(rows, key=lambda r: r["_field"][0]):
        v, t = r["_value"]
        suffix = {"long": "i", "unsignedLong": "u"}.get(t, "")
        fields.append(f'{r["_field"][0]}={v}{suffix}' + ("" if t != "string" else " (string!)"))
    print(f"  {a.tool:<8} {rows[0]['_measurement'][0]},"
          + ",".join(f"{k}={rows[0][k][0]}" for k in tags)
          + " " + ",".join(fields) + f" {rows[0]['_time'][0]}")


ROWS = [
    # key, label, better, format
    ("sustained_per_s", "sustained readings/s with no loss", "higher", "{:,.0f}"),
    ("cpu_s_per_10k", "CPU seconds per 10,000 readings", "lower", "{:.3f}"),
    ("peak_rss_mib", "peak resident memory (MiB)", "lower", "{:.1f}"),
    ("lag_p99_s", "p99 publish -> queryable lag (s)", "lower", "{:.2f}"),
]
EXTRA = [
    ("throughput_per_s", "readings stored per second, loss or not", "higher", "{:,.0f}"),
    ("lag_p50_s", "p50 publish -> queryable lag (s)", "lower", "{:.2f}"),
    ("influxd_cpu_s_per_10k", "influxd CPU seconds per 10,000 readings", "lower", "{:.3f}"),
    ("broker_cpu_s_per_10k", "Mosquitto CPU seconds per 10,000 readings", "lower", "{:.3f}"),
    ("chain_cpu_s_per_10k", "whole chain (tool + influxd + Mosquitto) CPU s / 10k", "lower", "{:.3f}"),
]
# Where Mosquitto's CPU goes; older result files lack them.
COUNTERS = [
    ("broker_reads_per_reading", "Mosquitto read() calls per reading", "lower", "{:.2f}"),
    ("broker_writes_per_reading", "Mosquitto write() calls per reading", "lower", "{:.2f}"),
    ("broker_wakeups_per_reading", "Mosquitto wake-ups (voluntary switches) per reading", "lower", "{:.3f}"),
    ("tcp_segments_per_reading", "TCP segments per reading (whole machine)", "lower", "{:.2f}"),
    ("broker_to_tool_segments_per_reading", "data segments broker -> tool per reading", "lower", "{:.3f}"),
    ("tool_to_broker_segments_per_reading", "segments tool -> broker per reading", "lower", "{:.3f}"),
]


def cmd_summary(a):
    rows = [json.loads(l) for l in open(a.results) if l.strip()]
    by = {t: [r for r in rows if r["tool"] == t] for t in ("arng", "telegraf")}
    lost = {t: sum(r["lost"] for r in by[t]) for t in by}
    incomplete = {t: sum(1 for r in by[t] if not r["complete"]) for t in by}
    extra = EXTRA + [c for c in COUNTERS if all(c[0] in r for r in rows)]
    med = {t: {k: statistics.median(r[k] for r in by[t]) for k, *_ in ROWS + extra} for t in by if by[t]}
    if len(med) < 2:
        print("not enough rounds for a comparison")
        return
    print()
    print(f"medians over {len(by['arng'])} arng and {len(by['telegraf'])} Telegraf rounds"
          " (a round with a reading missing in InfluxDB counts as 0 readings/s sustained):")
    print(f"  {'':44} {'arng':>10} {'Telegraf':>10} {'arng/Telegraf':>14}  better")
    table = ["| | arng | Telegraf | arng / Telegraf |", "|---|---|---|---|"]
    for key, label, better, fmt in ROWS + extra:
        x, y = med["arng"][key], med["telegraf"][key]
        if x == 0 and y == 0:
            ratio_txt, verdict = "n/a", "neither"
        elif y == 0 or x == 0:
            ratio_txt = "inf" if y == 0 else "0"
            verdict = "arng" if (y == 0) == (better == "higher") else "Telegraf"
        else:
            ratio = x / y
            ratio_txt = f"{ratio:.2f}"
            wins = (ratio > 1) if better == "higher" else (ratio < 1)
            verdict = "arng" if wins else ("tie" if ratio == 1 else "Telegraf")
        shown = ratio_txt + ("x" if ratio_txt[0].isdigit() else "")
        print(f"  {label:44} {fmt.format(x):>10} {fmt.format(y):>10} {shown:>14}  {verdict} ({better} is better)")
        table.append(f"| {label} | {fmt.format(x)} | {fmt.format(y)} | **{ratio_txt}** |")
    print(f"  readings missing in InfluxDB: arng {lost['arng']} ({incomplete['arng']} rounds),"
          f" Telegraf {lost['telegraf']} ({incomplete['telegraf']} rounds)")
    print()
    print("Markdown:")
    print("\n".join(table))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("poll")
    s.add_argument("--influx", required=True)
    s.add_argument("--prefix", required=True)
    s.add_argument("--since", type=float, required=True)
    s.add_argument("--interval", type=float, default=0.2)
    s.add_argument("--sensors-per-zone", type=int, required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--stop", required=True)
    s = sub.add_parser("round")
    for name in ("influx", "prefix", "tool", "polls", "sim", "results", "load"):
        s.add_argument("--" + name, required=True)
    s.add_argument("--since", type=float, required=True)
    for name in ("round", "sensors-per-zone", "stored", "clk-tck", "tool-ticks", "influxd-ticks", "broker-ticks", "hwm-kib"):
        s.add_argument("--" + name, type=int, required=True)
    s.add_argument("--broker-counters")
    s.add_argument("--link-segments")
    s.add_argument("--prom-before")
    s.add_argument("--prom-after")
    s = sub.add_parser("points")
    for name in ("influx", "prefix", "tool"):
        s.add_argument("--" + name, required=True)
    s.add_argument("--since", type=float, required=True)
    s = sub.add_parser("summary")
    s.add_argument("--results", required=True)
    a = p.parse_args()
    {"poll": cmd_poll, "round": cmd_round, "points": cmd_points, "summary": cmd_summary}[a.cmd](a)


if __name__ == "__main__":
    main()
