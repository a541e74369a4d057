//! How the results are shown: a table for people (levels, then per client) and CSV
//! for spreadsheets, one row per level.

use std::fmt::Write as _;

use serde::Serialize;
use tabled::settings::Style;
use tabled::{Table, Tabled};

use super::report::LevelReport;

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.3}"))
}

/// The levels as a table, then one row per client, then how latency was measured
/// (`corrected`: from the scheduled send times).
pub fn to_table(reports: &[LevelReport], corrected: bool) -> String {
    #[derive(Tabled)]
    struct Row {
        #[tabled(rename = "QoS")]
        qos: u8,
        result: &'static str,
        sent: u64,
        received: u64,
        lost: u64,
        dup: u64,
        reord: u64,
        #[tabled(rename = "publish msg/s")]
        publish: String,
        #[tabled(rename = "delivered msg/s")]
        delivered: String,
        #[tabled(rename = "p50 ms")]
        p50: String,
        #[tabled(rename = "p90 ms")]
        p90: String,
        #[tabled(rename = "p99 ms")]
        p99: String,
        #[tabled(rename = "p99.9 ms")]
        p999: String,
        #[tabled(rename = "max ms")]
        max: String,
        #[tabled(rename = "ack p50/p99 ms")]
        ack: String,
    }
    let rows = reports.iter().map(|r| Row {
        qos: r.qos,
        result: if r.ok { "ok" } else { "FAIL" },
        sent: r.sent,
        received: r.received,
        lost: r.lost,
        dup: r.duplicates,
        reord: r.reordered,
        publish: format!("{:.0}", r.publish_throughput_msgs_per_s),
        delivered: format!("{:.0}", r.throughput_msgs_per_s),
        p50: fmt_ms(r.latency_ms.p50),
        p90: fmt_ms(r.latency_ms.p90),
        p99: fmt_ms(r.latency_ms.p99),
        p999: fmt_ms(r.latency_ms.p999),
        max: fmt_ms(r.latency_ms.max),
        ack: r.ack_ms.map_or_else(
            || "-".into(),
            |a| format!("{} / {}", fmt_ms(a.p50), fmt_ms(a.p99)),
        ),
    });
    let mut out = Table::new(rows).with(Style::rounded()).to_string();

    #[derive(Tabled)]
    struct ClientRow {
        #[tabled(rename = "QoS")]
        qos: u8,
        client: String,
        messages: u64,
        #[tabled(rename = "msg/s")]
        rate: String,
        #[tabled(rename = "p99 ms")]
        p99: String,
    }
    let clients: Vec<ClientRow> = reports
        .iter()
        .flat_map(|r| {
            let pubs = r.per_publisher.iter().map(move |p| ClientRow {
                qos: r.qos,
                client: format!("publisher {}", p.id),
                messages: p.sent,
                rate: format!("{:.0}", p.throughput_msgs_per_s),
                p99: p
                    .ack_ms
                    .map_or_else(|| "-".into(), |a| format!("{} (ack)", fmt_ms(a.p99))),
            });
            let subs = r.per_subscriber.iter().map(move |s| ClientRow {
                qos: r.qos,
                client: format!("subscriber {}", s.id),
                messages: s.delivery.received,
                rate: format!("{:.0}", s.throughput_msgs_per_s),
                p99: fmt_ms(s.latency_ms.p99),
            });
            pubs.chain(subs)
        })
        .collect();
    if !clients.is_empty() {
        out.push_str("\nPer client:\n");
        out.push_str(&Table::new(clients).with(Style::rounded()).to_string());
    }
    out.push('\n');
    out.push_str(if corrected {
        "Latency from each message's scheduled send time (coordinated-omission corrected)."
    } else {
        "Latency from each message's send time (no --rate: no coordinated-omission correction)."
    });
    for r in reports.iter().filter(|r| !r.ok) {
        let _ = write!(
            out,
            "\nQoS {} FAILED: {}",
            r.qos,
            r.error.as_deref().unwrap_or("")
        );
    }
    out
}

/// One CSV row per QoS level: the JSON object flattened (per-client lists left out).
#[derive(Debug, Serialize)]
struct CsvRow<'a> {
    qos: u8,
    ok: bool,
    sent: u64,
    expected: u64,
    received: u64,
    lost: u64,
    duplicates: u64,
    reordered: u64,
    loss_percent: f64,
    throughput_msgs_per_s: f64,
    publish_throughput_msgs_per_s: f64,
    latency_p50_ms: Option<f64>,
    latency_p90_ms: Option<f64>,
    latency_p99_ms: Option<f64>,
    latency_p999_ms: Option<f64>,
    latency_max_ms: Option<f64>,
    latency_from: &'a str,
    ack_p50_ms: Option<f64>,
    ack_p99_ms: Option<f64>,
    ack_max_ms: Option<f64>,
    publishers: u32,
    subscribers: u32,
    size_bytes: usize,
    rate_msgs_per_s: Option<f64>,
    duration_s: f64,
    error: &'a str,
}

/// One CSV row per level after a header row.
pub fn to_csv(reports: &[LevelReport]) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in reports {
        let ack = r.ack_ms.unwrap_or_default();
        w.serialize(CsvRow {
            qos: r.qos,
            ok: r.ok,
            sent: r.sent,
            expected: r.expected,
            received: r.received,
            lost: r.lost,
            duplicates: r.duplicates,
            reordered: r.reordered,
            loss_percent: r.loss_percent,
            throughput_msgs_per_s: r.throughput_msgs_per_s,
            publish_throughput_msgs_per_s: r.publish_throughput_msgs_per_s,
            latency_p50_ms: r.latency_ms.p50,
            latency_p90_ms: r.latency_ms.p90,
            latency_p99_ms: r.latency_ms.p99,
            latency_p999_ms: r.latency_ms.p999,
            latency_max_ms: r.latency_ms.max,
            latency_from: r.latency_from,
            ack_p50_ms: ack.p50,
            ack_p99_ms: ack.p99,
            ack_max_ms: ack.max,
            publishers: r.publishers,
            subscribers: r.subscribers,
            size_bytes: r.size_bytes,
            rate_msgs_per_s: r.rate_msgs_per_s,
            duration_s: r.duration_s,
            error: r.error.as_deref().unwrap_or(""),
        })?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| csv::Error::from(e.into_error()))?;
    // Everything written is UTF-8 (numbers and our own strings).
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
