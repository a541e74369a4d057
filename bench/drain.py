#!/usr/bin/env python3
"""Pieces of bench/drain.sh that are easier in Python.

  make-floor  writes N readings of the benchmark's shape as gzip bodies of BATCH lines
              (one file each), the way a client that batches perfectly would send them
  post-floor  posts those bodies to influxd one after the other on one keep-alive
              connection (the script reads influxd's CPU time around it)
  line        prints the last result line in words
  summary     medians per tool, the ratios the issue's targets are about, and a
              Markdown table for docs/performance.md
"""

import argparse
import gzip
import http.client
import json
import os
import random
import statistics
import sys
import time
import urllib.parse


def cmd_make_floor(a):
    os.makedirs(a.dir, exist_ok=True)
    rnd = random.Random(1)
    base = int(time.time() * 1000) - 120_000
    zones = [f"{a.prefix}{z}" for z in range(1, a.zones + 1)]
    per_round = a.zones * a.sensors
    lines, files = [], 0

    def flush():
        nonlocal lines, files
        if lines:
            body = ("\n".join(lines) + "\n").encode()
            with open(os.path.join(a.dir, f"{files:06d}.lp.gz"), "wb") as f:
                f.write(gzip.compress(body, compresslevel=1))
            files += 1
            lines = []

    # The order a publisher at full speed gives: every sensor once, then again; each
    # series' timestamps increase with its sequence number.
    for seq in range(a.per_sensor):
        for zi, zone in enumerate(zones):
            for s in range(1, a.sensors + 1):
                k = zi * a.sensors + s
                ts = base + seq * 30 + (k * 30) // per_round
                temp = round(15 + rnd.random() * 10, 2)
                hum = round(40 + rnd.random() * 20, 2)
                lines.append(
                    f"readings,sensor=s{s},zone={zone} alert_level=0i,hum={hum},seq={seq}i,temp={temp} {ts}"
                )
                if len(lines) == a.batch:
                    flush()
    flush()


def cmd_post_floor(a):
    url = urllib.parse.urlparse(a.influx)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    path = "/api/v2/write?" + urllib.parse.urlencode(
        {"org": "ares", "bucket": "entrepot", "precision": "ms"})
    headers = {"Authorization": "Token dev-token", "Content-Encoding": "gzip",
               "Content-Type": "text/plain; charset=utf-8"}
    for name in sorted(os.listdir(a.dir)):
        with open(os.path.join(a.dir, name), "rb") as f:
            body = f.read()
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        text = resp.read()
        if resp.status != 204:
            sys.exit(f"drain.py: influxd answered {resp.status} to {name}: {text[:300]!r}")


def load(path):
    return [json.loads(line) for line in open(path) if line.strip()]


def figures(r):
    """Derived figures of one result line."""
    clk = float(r["clk_tck"])
    stored = max(1, int(r["stored"]))
    per10k = lambda key: float(r[key]) / clk / stored * 10_000 if key in r else None
    return {
        "tool": r["tool"],
        "round": int(r["round"]),
        "complete": int(r["stored"]) >= int(r["n"]),
        "rate": int(r["stored"]) / float(r["seconds"]),
        "seconds": float(r["seconds"]),
        "tool_cpu": per10k("tool_ticks"),
        "influxd_cpu": per10k("influxd_ticks"),
        "broker_cpu": per10k("broker_ticks"),
        "rss_mib": int(r["hwm_kib"]) / 1024 if "hwm_kib" in r else None,
        "load": r["load"].split()[0],
        "stored": int(r["stored"]),
        "n": int(r["n"]),
        "batch": r.get("batch_points") or None,
    }


def fmt(v, digits=3):
    return "-" if v is None else f"{v:.{digits}f}"


def cmd_line(a):
    f = figures(load(a.results)[-1])
    if f["tool"] == "floor":
        print(f"round {f['round']} floor    : {f['n']:,} points posted in {f['seconds']:.1f} s "
              f"({f['rate']:,.0f}/s), influxd {fmt(f['influxd_cpu'])} CPU s/10k (load {f['load']})")
    else:
        lost = "" if f["complete"] else f"  INCOMPLETE: {f['stored']:,} of {f['n']:,}"
        print(f"round {f['round']} {f['tool']:<9}: drained {f['stored']:,} in {f['seconds']:.1f} s = "
              f"{f['rate']:,.0f} readings/s; CPU s/10k: tool {fmt(f['tool_cpu'])}, influxd "
              f"{fmt(f['influxd_cpu'])}, mosquitto {fmt(f['broker_cpu'])}; peak RSS "
              f"{f['rss_mib']:.1f} MiB (load {f['load']})"
              + (f"; {f['batch']} points per write" if f["batch"] else "") + lost)
    sys.stdout.flush()


def median(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def cmd_summary(a):
    rows = [figures(r) for r in load(a.results)]
    by = {}
    for r in rows:
        by.setdefault(r["tool"], []).append(r)
    med = {t: {k: median([r[k] for r in rs]) for k in
               ("rate", "tool_cpu", "influxd_cpu", "broker_cpu", "rss_mib")}
           for t, rs in by.items()}
    arng, tg, floor = med.get("arng"), med.get("telegraf"), med.get("floor")
    ratio = lambda x, y: (x / y) if x is not None and y else None
    print()
    print(f"medians over {len(by.get('arng', []))} rounds")
    print("| | arng ingest | Telegraf | arng / Telegraf |")
    print("|---|---|---|---|")
    for label, key, digits in [("drain readings/s", "rate", 0),
                               ("CPU s / 10k readings, the tool", "tool_cpu", 3),
                               ("CPU s / 10k readings, influxd", "influxd_cpu", 3),
                               ("CPU s / 10k readings, Mosquitto", "broker_cpu", 3),
                               ("peak RSS, MiB", "rss_mib", 1)]:
        x, y = (arng or {}).get(key), (tg or {}).get(key)
        print(f"| {label} | {fmt(x, digits)} | {fmt(y, digits)} | {fmt(ratio(x, y), 2)} |")
    if arng and tg:
        chain = lambda m: sum(m[k] for k in ("tool_cpu", "influxd_cpu", "broker_cpu"))
        print(f"| whole chain CPU s / 10k | {chain(arng):.3f} | {chain(tg):.3f} | {chain(arng) / chain(tg):.2f} |")
    if floor:
        print(f"| influxd CPU s / 10k, raw 5,000-line gzip batches (floor) | {fmt(floor['influxd_cpu'])} | | |")
        print()
        print(f"influxd CPU per reading / floor: arng {fmt(ratio(arng['influxd_cpu'], floor['influxd_cpu']) if arng else None, 2)}, "
              f"Telegraf {fmt(ratio(tg['influxd_cpu'], floor['influxd_cpu']) if tg else None, 2)}")
    incomplete = [r for r in rows if r["tool"] != "floor" and not r["complete"]]
    if incomplete:
        print("INCOMPLETE rounds: " + ", ".join(f"{r['tool']} round {r['round']}" for r in incomplete))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("make-floor")
    s.add_argument("--dir", required=True)
    s.add_argument("--prefix", required=True)
    s.add_argument("--zones", type=int, required=True)
    s.add_argument("--sensors", type=int, required=True)
    s.add_argument("--per-sensor", type=int, required=True)
    s.add_argument("--batch", type=int, default=5000)
    s = sub.add_parser("post-floor")
    s.add_argument("--dir", required=True)
    s.add_argument("--influx", required=True)
    for name in ("line", "summary"):
        s = sub.add_parser(name)
        s.add_argument("--results", required=True)
    a = p.parse_args()
    {"make-floor": cmd_make_floor, "post-floor": cmd_post_floor,
     "line": cmd_line, "summary": cmd_summary}[a.cmd](a)


if __name__ == "__main__":
    main()
