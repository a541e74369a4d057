//! Supervision, pure: the probe convention of `arng check-e2e` and `arng latency`,
//! which `$SYS` broker statistics ingest keeps, and the three key indicators of the
//! chain with their thresholds and how they are evaluated. `docs/supervision.md` is
//! the prose version.
//!
//! The I/O lives elsewhere: ingest stores the broker statistics and its own
//! (`src/ingest/writer.rs`), `arng serve` gathers the inputs, evaluates the
//! indicators every [`SUPERVISION_INTERVAL`] and exposes them
//! (`src/api/supervise.rs`), the two commands publish probes (`src/cmd/`).

use std::time::Duration;

use crate::domain::payload::{HUM_RANGE, TEMP_RANGE};
use crate::domain::thresholds::{Band, ZoneThresholds};

// ----- probes ---------------------------------------------------------------------

/// The sensor name every probe reading uses. Probes are ordinary readings
/// (`entrepot/<zone>/e2e-probe/v1`, measurement `readings`, tag `sensor=e2e-probe`),
/// so they cross exactly the path real readings take; dashboards leave them out
/// with [`EXCLUDE_PROBES`]. The probe's unique id is its `seq`.
pub const PROBE_SENSOR: &str = "e2e-probe";

/// The Flux predicate that leaves probe readings out of a dashboard query.
pub const EXCLUDE_PROBES: &str = r#"r.sensor != "e2e-probe""#;

/// How far ahead of the API's clock a timestamp may be before it counts as wrong:
/// the API shows nothing dated later (its views and Flux ranges stop there) and
/// refuses alerts dated later. The payload reader's default margin (five minutes,
/// ingest's `--future-margin` when not set), so what ingest stores by default the
/// API shows.
pub const MAX_CLOCK_AHEAD: Duration = crate::domain::payload::DEFAULT_FUTURE_MARGIN;

/// Is this sensor the supervision probe (whose silence is expected, not an alarm)?
pub fn is_probe(sensor: &str) -> bool {
    sensor == PROBE_SENSOR
}

/// Temperature and humidity in the middle of a zone's normal range: a probe with
/// these values never raises an alert and clears any alert of the probe sensor.
pub fn normal_probe_values(t: &ZoneThresholds) -> (f64, f64) {
    let mid = |b: &Band| (b.warning_low + b.warning_high) / 2.0;
    (mid(&t.temp), mid(&t.hum))
}

/// A temperature that is critical for `band` and still a valid reading (inside
/// [`TEMP_RANGE`]): above `critical_high` when possible, else below `critical_low`.
pub fn critical_probe_temp(band: &Band) -> Option<f64> {
    let margin = (2.0 * band.hysteresis).max(1.0);
    let high = band.critical_high + margin;
    let low = band.critical_low - margin;
    if high <= TEMP_RANGE.1 {
        Some(high)
    } else if band.critical_high < TEMP_RANGE.1 {
        Some(TEMP_RANGE.1)
    } else if low >= TEMP_RANGE.0 {
        Some(low)
    } else if band.critical_low > TEMP_RANGE.0 {
        Some(TEMP_RANGE.0)
    } else {
        None
    }
}

/// Humidity stays in its physical range whatever the thresholds say.
pub fn clamp_hum(h: f64) -> f64 {
    h.clamp(HUM_RANGE.0, HUM_RANGE.1)
}

// ----- broker statistics ($SYS) -----------------------------------------------------

/// What ingest subscribes to for broker statistics (QoS 0; Mosquitto publishes them
/// retained every `sys_interval`, and only the values that changed).
pub const SYS_FILTER: &str = "$SYS/broker/#";
/// The `$SYS` topic `arng check-e2e` waits for: it changes every `sys_interval`.
pub const SYS_UPTIME_TOPIC: &str = "$SYS/broker/uptime";

/// `$SYS/broker/<suffix>` → field of the `broker` measurement. Every value is stored
/// as a float. Mosquitto 2.0 publishes no in-flight count; `store_messages_count`
/// (messages held: retained, queued and in flight) is the closest.
pub const BROKER_STATS: &[(&str, &str)] = &[
    ("clients/connected", "clients_connected"),
    ("clients/disconnected", "clients_disconnected"),
    ("clients/total", "clients_total"),
    ("clients/expired", "clients_expired"),
    ("messages/received", "messages_received"),
    ("messages/sent", "messages_sent"),
    ("publish/messages/received", "publish_received"),
    ("publish/messages/sent", "publish_sent"),
    ("publish/messages/dropped", "publish_dropped"),
    ("load/publish/dropped/1min", "publish_dropped_1min"),
    ("load/messages/received/1min", "messages_received_1min"),
    ("load/messages/sent/1min", "messages_sent_1min"),
    ("store/messages/count", "store_messages"),
    ("store/messages/bytes", "store_bytes"),
    ("retained messages/count", "retained_messages"),
    ("subscriptions/count", "subscriptions"),
    ("heap/current", "heap_current_bytes"),
    ("heap/maximum", "heap_maximum_bytes"),
    ("bytes/received", "bytes_received"),
    ("bytes/sent", "bytes_sent"),
    ("uptime", "uptime_s"),
];

/// The `broker` field and value of a `$SYS` message, or `None` for a statistic we do
/// not keep (the version string, most load averages) or a value that is not a number.
/// Payloads are a number, optionally followed by a unit (`"1234 seconds"`).
pub fn broker_stat(topic: &str, payload: &[u8]) -> Option<(&'static str, f64)> {
    let suffix = topic.strip_prefix("$SYS/broker/")?;
    let field = BROKER_STATS
        .iter()
        .find(|(s, _)| *s == suffix)
        .map(|(_, f)| *f)?;
    let text = std::str::from_utf8(payload).ok()?;
    let value: f64 = text.split_whitespace().next()?.parse().ok()?;
    value.is_finite().then_some((field, value))
}

// ----- ingest's own statistics -------------------------------------------------------

/// How often ingest writes its statistics (`ingest` measurement) and `arng serve`
/// evaluates the indicators.
pub const SUPERVISION_INTERVAL: Duration = Duration::from_secs(10);

/// Most lag samples kept per interval; beyond, new samples overwrite old ones in turn
/// (the window still covers the whole interval, with a bounded memory).
const LAG_WINDOW_CAP: usize = 65_536;

/// How many readings it takes to move the latency indicator: a p99 is never above the
/// lag of the third-slowest reading it summarises, and `arng serve` needs three
/// readings at or above a lag before it reports it (see [`witnessed_lag`]). With fewer
/// than 100 readings a nearest-rank p99 is simply the slowest one, so one reading
/// dated 29 minutes back (a sensor's wrong clock, a replay) made the indicator red
/// with "p99 1,722 s" (issue 15).
pub const LAG_WITNESSES: u64 = 3;

/// Lag (reading timestamp → written to InfluxDB) percentiles over one interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LagSummary {
    pub count: u64,
    pub p50_s: f64,
    /// The nearest-rank p99, but at most the [`LAG_WITNESSES`]-th largest lag (with
    /// fewer samples, the smallest): at least that many samples are at or above it.
    pub p99_s: f64,
    pub max_s: f64,
}

/// The lag samples of the current interval.
#[derive(Debug, Default, Clone)]
pub struct LagWindow {
    samples: Vec<f64>,
    seen: u64,
    max: f64,
}

impl LagWindow {
    pub fn push(&mut self, seconds: f64) {
        if !seconds.is_finite() {
            return;
        }
        let s = seconds.max(0.0);
        if self.samples.len() < LAG_WINDOW_CAP {
            self.samples.push(s);
        } else {
            let i = (self.seen % LAG_WINDOW_CAP as u64) as usize;
            self.samples[i] = s;
        }
        self.seen += 1;
        self.max = self.max.max(s);
    }

    /// The summary of the interval (None when no sample), and a fresh window.
    pub fn take(&mut self) -> Option<LagSummary> {
        let mut w = std::mem::take(self);
        if w.samples.is_empty() {
            return None;
        }
        w.samples.sort_by(f64::total_cmp);
        let n = w.samples.len();
        let witnessed = w.samples[n.saturating_sub(LAG_WITNESSES as usize)];
        Some(LagSummary {
            count: w.seen,
            p50_s: nearest_rank(&w.samples, 0.50),
            p99_s: nearest_rank(&w.samples, 0.99).min(witnessed),
            max_s: w.max,
        })
    }
}

/// The latency the indicator reports from ingest's reports of one window, each a
/// `(p99_s, samples)`: the largest p99 such that the reports at or above it hold at
/// least [`LAG_WITNESSES`] samples together. Every report's p99 has at least
/// `min(samples, LAG_WITNESSES)` samples at or above it ([`LagWindow::take`]), so the
/// answer is a lag that three readings really had: one or two odd readings cannot
/// make it, whether they fall in a busy report or in quiet ones. With fewer than
/// three samples in the whole window, the smallest p99. None without reports.
pub fn witnessed_lag(reports: &[(f64, u64)]) -> Option<f64> {
    let mut sorted: Vec<(f64, u64)> = reports
        .iter()
        .copied()
        .filter(|(p, _)| p.is_finite())
        .collect();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut seen = 0u64;
    for (p99, samples) in &sorted {
        seen += samples.max(&1);
        if seen >= LAG_WITNESSES {
            return Some(*p99);
        }
    }
    sorted.last().map(|(p, _)| *p)
}

/// The nearest-rank percentile of sorted, non-empty `v`.
fn nearest_rank(v: &[f64], q: f64) -> f64 {
    let rank = (q * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

// ----- the three key indicators ----------------------------------------------------

/// End-to-end latency: the worst p99 of ingest's lag (reading timestamp → written to
/// InfluxDB) over the last [`INGEST_REPORT_WINDOW`], in seconds. Normal: 0.2-0.5 s
/// (the 200 ms batch timeout plus a write). 5 s is one reading period of the
/// reference sensors: beyond it, dashboards show data a whole reading late.
pub const E2E_LATENCY_P99_LIMIT_S: f64 = 5.0;
/// How far back `arng serve` looks for ingest's statistics.
pub const INGEST_REPORT_WINDOW: Duration = Duration::from_secs(60);
/// The default heartbeat freshness limit, in seconds: three missed 30 s heartbeats,
/// the same as the zone silence alert (`silence_after_s` of the thresholds, which
/// `arng serve` uses when it is set).
pub const HEARTBEAT_MAX_AGE_S: f64 = 90.0;
/// Messages the broker dropped (queue full, e.g. ingest away too long) over this
/// window are counted by the loss/backlog indicator.
pub const DROPPED_WINDOW: Duration = Duration::from_secs(300);
/// Dropped messages tolerated in [`DROPPED_WINDOW`]: none, a dropped reading is lost.
pub const DROPPED_LIMIT: f64 = 0.0;
/// Bytes in ingest's disk spool tolerated: none, spooled readings are not in
/// InfluxDB yet (dashboards are incomplete until the spool drains).
pub const SPOOL_LIMIT_BYTES: f64 = 0.0;
/// Broker statistics older than this count as missing (`sys_interval` is 10 s).
pub const BROKER_STATS_MAX_AGE: Duration = Duration::from_secs(60);

/// What the indicators are computed from; `arng serve` gathers it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inputs {
    /// Did any ingest process report in the last [`INGEST_REPORT_WINDOW`]?
    pub ingest_reporting: bool,
    /// Worst lag p99 reported in that window (None: no reading written).
    pub lag_p99_s: Option<f64>,
    /// Bytes in the disk spools of the ingest processes (their last report).
    pub spool_bytes: Option<f64>,
    /// Every zone expected to send heartbeats and the age of its newest one (None:
    /// never seen). Expected: a zone that has sent one, or has thresholds of its own.
    pub heartbeat_ages_s: Vec<(String, Option<f64>)>,
    /// Zones seen only through readings: named in the detail, not counted (one stray
    /// reading does not make a zone whose silence is an alarm).
    pub zones_without_heartbeat: Vec<String>,
    pub heartbeat_limit_s: f64,
    /// Did the broker statistics arrive in the last [`BROKER_STATS_MAX_AGE`]?
    pub broker_reporting: bool,
    /// Messages the broker dropped in [`DROPPED_WINDOW`] (see [`counter_increase`]).
    /// None: no `publish_dropped` value stored at all; Mosquitto only publishes a
    /// statistic when it changes, so while the broker reports this counts as 0.
    pub dropped_in_window: Option<f64>,
}

/// One number of an indicator and its limit (ok when `value <= limit`).
#[derive(Debug, Clone, PartialEq)]
pub struct Measure {
    /// Prometheus gauge suffix and InfluxDB field: `arng_indicator_<name>`.
    pub name: &'static str,
    /// None when the data is missing (which is not ok).
    pub value: Option<f64>,
    pub limit: f64,
}

impl Measure {
    pub fn ok(&self) -> bool {
        self.value.is_some_and(|v| v <= self.limit)
    }
}

/// A key indicator: ok when every measure is present and within its limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Indicator {
    pub name: &'static str,
    pub ok: bool,
    pub measures: Vec<Measure>,
    /// Why, in a sentence, for logs and people.
    pub detail: String,
}

pub const E2E_LATENCY: &str = "e2e_latency";
pub const HEARTBEAT_FRESHNESS: &str = "heartbeat_freshness";
pub const LOSS_BACKLOG: &str = "loss_backlog";

/// How much a cumulative counter grew since `since_ms`, from its stored values
/// `(time_ms, value)` sorted by time. The baseline is the last value at or before
/// `since_ms` (or, without one, the first value after it: growth before the first
/// value we stored is not attributed to the window). A value lower than the one
/// before it means the counter was reset (the broker restarted): then the new value
/// counts whole. None when there is no value at all.
pub fn counter_increase(points: &[(i64, f64)], since_ms: i64) -> Option<f64> {
    let start = points
        .iter()
        .rposition(|(t, _)| *t <= since_ms)
        .unwrap_or(0);
    let mut prev = points.get(start)?.1;
    let mut total = 0.0;
    for (_, v) in &points[start + 1..] {
        total += if *v >= prev { v - prev } else { v.max(0.0) };
        prev = *v;
    }
    Some(total)
}

fn indicator(name: &'static str, measures: Vec<Measure>, detail: String) -> Indicator {
    Indicator {
        name,
        ok: measures.iter().all(Measure::ok),
        measures,
        detail,
    }
}

/// Evaluates the three key indicators.
pub fn evaluate(i: &Inputs) -> Vec<Indicator> {
    vec![e2e_latency(i), heartbeat_freshness(i), loss_backlog(i)]
}

fn e2e_latency(i: &Inputs) -> Indicator {
    let m = Measure {
        name: "e2e_latency_p99_seconds",
        value: i.lag_p99_s.filter(|_| i.ingest_reporting),
        limit: E2E_LATENCY_P99_LIMIT_S,
    };
    let window = INGEST_REPORT_WINDOW.as_secs();
    let detail = match (i.ingest_reporting, i.lag_p99_s) {
        (false, _) => format!("no report from arng ingest in InfluxDB for {window} s"),
        (true, None) => format!("arng ingest wrote no reading in the last {window} s"),
        (true, Some(v)) => {
            format!("lag p99 {v:.3} s over the last {window} s (limit {E2E_LATENCY_P99_LIMIT_S} s)")
        }
    };
    indicator(E2E_LATENCY, vec![m], detail)
}

fn heartbeat_freshness(i: &Inputs) -> Indicator {
    let limit = i.heartbeat_limit_s;
    let worst = i
        .heartbeat_ages_s
        .iter()
        .map(|(_, a)| a.unwrap_or(f64::INFINITY))
        .fold(None, |acc: Option<f64>, a| {
            Some(acc.map_or(a, |m| m.max(a)))
        });
    let stale: Vec<String> = i
        .heartbeat_ages_s
        .iter()
        .filter_map(|(z, a)| match a {
            None => Some(format!("{z}: no heartbeat")),
            Some(a) if *a > limit => Some(format!("{z}: {a:.0} s")),
            Some(_) => None,
        })
        .collect();
    let mut detail = if i.heartbeat_ages_s.is_empty() {
        "no zone known yet".to_owned()
    } else if stale.is_empty() {
        format!(
            "{} zone(s), oldest heartbeat {:.1} s (limit {limit} s)",
            i.heartbeat_ages_s.len(),
            worst.unwrap_or(0.0)
        )
    } else {
        format!("stale (limit {limit} s): {}", stale.join(", "))
    };
    if !i.zones_without_heartbeat.is_empty() {
        detail += &format!(
            "; readings but never a heartbeat (not counted): {}",
            i.zones_without_heartbeat.join(", ")
        );
    }
    let m = Measure {
        name: "heartbeat_age_max_seconds",
        value: worst,
        limit,
    };
    indicator(HEARTBEAT_FRESHNESS, vec![m], detail)
}

fn loss_backlog(i: &Inputs) -> Indicator {
    let dropped = i
        .broker_reporting
        .then(|| i.dropped_in_window.unwrap_or(0.0));
    let spool = if i.ingest_reporting {
        i.spool_bytes
    } else {
        None
    };
    let window = DROPPED_WINDOW.as_secs() / 60;
    let mut parts = Vec::new();
    match dropped {
        None => parts.push(format!(
            "no broker statistics in InfluxDB for {} s",
            BROKER_STATS_MAX_AGE.as_secs()
        )),
        Some(d) => parts.push(format!(
            "{d:.0} message(s) dropped by the broker in {window} min"
        )),
    }
    match spool {
        None => parts.push("no report from arng ingest".into()),
        Some(b) => parts.push(format!("{b:.0} byte(s) in the ingest spool")),
    }
    indicator(
        LOSS_BACKLOG,
        vec![
            Measure {
                name: "broker_dropped_messages",
                value: dropped,
                limit: DROPPED_LIMIT,
            },
            Measure {
                name: "ingest_spool_bytes",
                value: spool,
                limit: SPOOL_LIMIT_BYTES,
            },
        ],
        parts.join("; "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Thresholds;

    #[test]
    fn broker_stats_parse_numbers_and_skip_the_rest() {
        assert_eq!(
            broker_stat("$SYS/broker/uptime", b"1234 seconds"),
            Some(("uptime_s", 1234.0))
        );
        assert_eq!(
            broker_stat("$SYS/broker/clients/connected", b"3"),
            Some(("clients_connected", 3.0))
        );
        assert_eq!(
            broker_stat("$SYS/broker/load/publish/dropped/1min", b"0.50"),
            Some(("publish_dropped_1min", 0.5))
        );
        assert_eq!(
            broker_stat("$SYS/broker/retained messages/count", b"40"),
            Some(("retained_messages", 40.0))
        );
        assert_eq!(
            broker_stat("$SYS/broker/version", b"mosquitto version 2.0.11"),
            None
        );
        assert_eq!(broker_stat("$SYS/broker/load/sockets/5min", b"1.0"), None);
        assert_eq!(broker_stat("$SYS/broker/clients/connected", b"many"), None);
        assert_eq!(broker_stat("$SYS/broker/clients/connected", b"inf"), None);
        assert_eq!(broker_stat("$SYS/broker/clients/connected", b""), None);
        assert_eq!(broker_stat("entrepot/nord/s1/v1", b"3"), None);
        // Every field name is distinct.
        let mut fields: Vec<&str> = BROKER_STATS.iter().map(|(_, f)| *f).collect();
        fields.sort_unstable();
        fields.dedup();
        assert_eq!(fields.len(), BROKER_STATS.len());
    }

    #[test]
    fn probe_values_follow_the_thresholds() {
        let t = Thresholds::default();
        let (temp, hum) = normal_probe_values(&t.default);
        assert_eq!(
            t.default.temp.level(temp),
            crate::domain::AlertLevel::Normal
        );
        assert_eq!(t.default.hum.level(hum), crate::domain::AlertLevel::Normal);
        assert!(t
            .default
            .temp
            .clears(crate::domain::AlertLevel::Warning, temp));
        let crit = critical_probe_temp(&t.default.temp).unwrap();
        assert_eq!(
            t.default.temp.level(crit),
            crate::domain::AlertLevel::Critical
        );
        assert!(crit <= TEMP_RANGE.1);
        // A band whose high bound is out of reach goes low instead.
        let hot = Band {
            critical_low: 2.0,
            warning_low: 5.0,
            warning_high: 90.0,
            critical_high: 100.0,
            hysteresis: 0.5,
        };
        assert_eq!(critical_probe_temp(&hot), Some(1.0));
        let impossible = Band {
            critical_low: -60.0,
            warning_low: 0.0,
            warning_high: 90.0,
            critical_high: 100.0,
            hysteresis: 0.5,
        };
        assert_eq!(critical_probe_temp(&impossible), None);
        assert!(is_probe("e2e-probe") && !is_probe("s1"));
        assert!(EXCLUDE_PROBES.contains(PROBE_SENSOR));
    }

    #[test]
    fn lag_window_percentiles() {
        let mut w = LagWindow::default();
        assert_eq!(w.take(), None);
        for i in 1..=100 {
            w.push(i as f64 / 100.0);
        }
        w.push(f64::NAN);
        let s = w.take().unwrap();
        assert_eq!(s.count, 100);
        assert_eq!(s.p50_s, 0.5);
        // The nearest-rank p99 of 100 samples is the second-largest (0.99); the
        // p99 stops at the third-largest, so that three samples are at or above it.
        assert_eq!(s.p99_s, 0.98);
        assert_eq!(s.max_s, 1.0);
        // Taking resets the window.
        assert_eq!(w.take(), None);
        w.push(-1.0);
        assert_eq!(w.take().unwrap().max_s, 0.0);
    }

    #[test]
    fn one_or_two_slow_readings_do_not_make_the_p99() {
        // Issue 15: 20 readings at 0.3 s and one dated 29 minutes back.
        let mut w = LagWindow::default();
        for _ in 0..20 {
            w.push(0.3);
        }
        w.push(1722.0);
        let s = w.take().unwrap();
        assert_eq!((s.p99_s, s.max_s), (0.3, 1722.0));
        w.push(1722.0);
        w.push(1500.0);
        w.push(0.3);
        assert_eq!(w.take().unwrap().p99_s, 0.3);
        // Three slow readings are a fact.
        for x in [0.3, 6.0, 7.0, 8.0] {
            w.push(x);
        }
        assert_eq!(w.take().unwrap().p99_s, 6.0);
        // Fewer than three samples: the smallest.
        w.push(9.0);
        w.push(1.0);
        assert_eq!(w.take().unwrap().p99_s, 1.0);
        // Many samples: the plain nearest-rank p99 (below the third-largest).
        for i in 1..=1000 {
            w.push(i as f64);
        }
        assert_eq!(w.take().unwrap().p99_s, 990.0);
    }

    #[test]
    fn the_indicator_needs_three_witnesses() {
        assert_eq!(witnessed_lag(&[]), None);
        // Quiet chain, one reading per report, one of them 29 minutes late.
        let quiet = [(1722.0, 1), (0.3, 1), (0.25, 1), (0.2, 1)];
        assert_eq!(witnessed_lag(&quiet), Some(0.25));
        // Two late ones in different reports: still not enough.
        let two = [(1722.0, 1), (1500.0, 1), (0.3, 1)];
        assert_eq!(witnessed_lag(&two), Some(0.3));
        // A busy report already capped by LagWindow, next to a slow one.
        assert_eq!(witnessed_lag(&[(0.3, 60), (9.0, 1)]), Some(0.3));
        // A real slowdown, seen in every report.
        assert_eq!(witnessed_lag(&[(6.0, 10), (7.0, 10)]), Some(7.0));
        // A report with 2 samples and one with 1: together three.
        assert_eq!(witnessed_lag(&[(8.0, 2), (6.0, 1), (0.2, 5)]), Some(6.0));
        // Fewer than three samples in the window: the smallest p99.
        assert_eq!(witnessed_lag(&[(8.0, 1), (0.4, 1)]), Some(0.4));
        assert_eq!(witnessed_lag(&[(f64::NAN, 5), (0.4, 5)]), Some(0.4));
    }

    #[test]
    fn lag_window_memory_is_bounded() {
        let mut w = LagWindow::default();
        for i in 0..(LAG_WINDOW_CAP as u64 + 10) {
            w.push(if i == 3 { 9.0 } else { 0.1 });
        }
        assert_eq!(w.samples.len(), LAG_WINDOW_CAP);
        let s = w.take().unwrap();
        assert_eq!(s.count, LAG_WINDOW_CAP as u64 + 10);
        assert_eq!(s.max_s, 9.0, "the maximum survives overwriting");
    }

    #[test]
    fn counters_survive_resets() {
        assert_eq!(counter_increase(&[], 100), None);
        // Unchanged since long before the window.
        assert_eq!(counter_increase(&[(10, 4.0)], 100), Some(0.0));
        // Baseline: the last value before the window.
        let pts = [(10, 4.0), (50, 6.0), (120, 9.0), (130, 10.0)];
        assert_eq!(counter_increase(&pts, 100), Some(4.0));
        // No value before the window: the first one in it is the baseline.
        assert_eq!(counter_increase(&pts[2..], 100), Some(1.0));
        // A reset (broker restart) in the window: 9 → 2 counts 2, then +1.
        let pts = [(10, 9.0), (120, 2.0), (130, 3.0)];
        assert_eq!(counter_increase(&pts, 100), Some(3.0));
    }

    fn healthy() -> Inputs {
        Inputs {
            ingest_reporting: true,
            lag_p99_s: Some(0.3),
            spool_bytes: Some(0.0),
            heartbeat_ages_s: vec![("nord".into(), Some(12.0)), ("sud".into(), Some(29.0))],
            heartbeat_limit_s: HEARTBEAT_MAX_AGE_S,
            zones_without_heartbeat: Vec::new(),
            broker_reporting: true,
            dropped_in_window: None,
        }
    }

    fn by_name<'a>(v: &'a [Indicator], name: &str) -> &'a Indicator {
        v.iter().find(|i| i.name == name).unwrap()
    }

    #[test]
    fn a_healthy_chain_is_all_green() {
        let v = evaluate(&healthy());
        assert_eq!(v.len(), 3);
        assert!(v.iter().all(|i| i.ok), "{v:?}");
        let hb = by_name(&v, HEARTBEAT_FRESHNESS);
        assert_eq!(hb.measures[0].value, Some(29.0));
        assert!(
            hb.detail.contains("oldest heartbeat 29.0 s"),
            "{}",
            hb.detail
        );
        let lb = by_name(&v, LOSS_BACKLOG);
        assert_eq!(lb.measures[0].value, Some(0.0));
    }

    #[test]
    fn each_indicator_turns_red_for_its_reason() {
        let mut i = healthy();
        i.lag_p99_s = Some(5.5);
        assert!(!by_name(&evaluate(&i), E2E_LATENCY).ok);
        i.lag_p99_s = Some(5.0);
        assert!(
            by_name(&evaluate(&i), E2E_LATENCY).ok,
            "the limit itself is ok"
        );
        i.lag_p99_s = None;
        let e = evaluate(&i);
        assert!(!by_name(&e, E2E_LATENCY).ok);
        assert!(by_name(&e, E2E_LATENCY).detail.contains("no reading"));

        let mut i = healthy();
        i.heartbeat_ages_s.push(("est".into(), Some(91.0)));
        let hb = by_name(&evaluate(&i), HEARTBEAT_FRESHNESS).clone();
        assert!(!hb.ok && hb.detail.contains("est: 91 s"), "{hb:?}");
        i.heartbeat_ages_s.push(("quai".into(), None));
        let hb = by_name(&evaluate(&i), HEARTBEAT_FRESHNESS).clone();
        assert_eq!(hb.measures[0].value, Some(f64::INFINITY));
        assert!(hb.detail.contains("quai: no heartbeat"), "{}", hb.detail);
        i.heartbeat_ages_s.clear();
        assert!(!by_name(&evaluate(&i), HEARTBEAT_FRESHNESS).ok);
        // A zone known only from readings is named, not counted.
        let mut i = healthy();
        i.zones_without_heartbeat.push("stray".into());
        let hb = by_name(&evaluate(&i), HEARTBEAT_FRESHNESS).clone();
        assert!(
            hb.ok && hb.detail.contains("never a heartbeat (not counted): stray"),
            "{hb:?}"
        );

        let mut i = healthy();
        i.dropped_in_window = Some(2.0);
        let lb = by_name(&evaluate(&i), LOSS_BACKLOG).clone();
        assert!(
            !lb.ok && lb.detail.contains("2 message(s) dropped"),
            "{lb:?}"
        );
        let mut i = healthy();
        i.spool_bytes = Some(4096.0);
        assert!(!by_name(&evaluate(&i), LOSS_BACKLOG).ok);
        let mut i = healthy();
        i.broker_reporting = false;
        let lb = by_name(&evaluate(&i), LOSS_BACKLOG).clone();
        assert!(
            !lb.ok && lb.detail.contains("no broker statistics"),
            "{lb:?}"
        );
        let mut i = healthy();
        i.ingest_reporting = false;
        let v = evaluate(&i);
        assert!(!by_name(&v, LOSS_BACKLOG).ok && !by_name(&v, E2E_LATENCY).ok);
    }
}
