//! A minimal Prometheus registry: counters, gauges and histograms, with labels, rendered
//! in the text exposition format (version 0.0.4).
//!
//! Small on purpose: arng exposes a few dozen series, and a registry that is a
//! `BTreeMap` behind a mutex renders in stable order, is trivially testable, and costs
//! nothing on hot paths that hold their own atomics. Rendering is pure.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (stored as f64 bits).
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// A cumulative histogram with fixed upper bounds.
#[derive(Debug)]
pub struct Histogram {
    bounds: Vec<f64>,
    inner: Mutex<HistogramState>,
}

#[derive(Debug, Clone, Default)]
struct HistogramState {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn new(bounds: &[f64]) -> Histogram {
        Histogram {
            bounds: bounds.to_vec(),
            inner: Mutex::new(HistogramState {
                counts: vec![0; bounds.len()],
                ..Default::default()
            }),
        }
    }

    pub fn observe(&self, v: f64) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            s.counts[i] += 1;
        }
        s.sum += v;
        s.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).count
    }

    /// An upper bound of the `q` quantile (0..1) from the buckets: the first bucket
    /// bound that covers `q` of the observations (`+Inf` beyond the last bound).
    pub fn quantile_bound(&self, q: f64) -> Option<f64> {
        let s = self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if s.count == 0 {
            return None;
        }
        let target = (q * s.count as f64).ceil() as u64;
        let mut acc = 0;
        for (b, c) in self.bounds.iter().zip(&s.counts) {
            acc += c;
            if acc >= target {
                return Some(*b);
            }
        }
        Some(f64::INFINITY)
    }
}

enum Metric {
    Counter(Arc<Counter>),
    Gauge(Arc<Gauge>),
    Histogram(Arc<Histogram>),
}

struct Family {
    help: String,
    kind: &'static str,
    series: BTreeMap<String, Metric>,
}

/// A set of metric families. Getting a metric twice with the same name and labels
/// returns the same one.
#[derive(Default, Clone)]
pub struct Registry {
    families: Arc<Mutex<BTreeMap<String, Family>>>,
}

fn label_key(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", parts.join(","))
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    fn get<T>(
        &self,
        name: &str,
        help: &str,
        kind: &'static str,
        labels: &[(&str, &str)],
        make: impl FnOnce() -> Metric,
        pick: impl Fn(&Metric) -> Option<Arc<T>>,
    ) -> Arc<T> {
        let mut fams = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let fam = fams.entry(name.to_owned()).or_insert_with(|| Family {
            help: help.to_owned(),
            kind,
            series: BTreeMap::new(),
        });
        let m = fam.series.entry(label_key(labels)).or_insert_with(make);
        pick(m).unwrap_or_else(|| panic!("metric {name} registered with two kinds"))
    }

    pub fn counter(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Arc<Counter> {
        self.get(
            name,
            help,
            "counter",
            labels,
            || Metric::Counter(Arc::default()),
            |m| match m {
                Metric::Counter(c) => Some(c.clone()),
                _ => None,
            },
        )
    }

    pub fn gauge(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Arc<Gauge> {
        self.get(
            name,
            help,
            "gauge",
            labels,
            || Metric::Gauge(Arc::default()),
            |m| match m {
                Metric::Gauge(g) => Some(g.clone()),
                _ => None,
            },
        )
    }

    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        bounds: &[f64],
    ) -> Arc<Histogram> {
        self.get(
            name,
            help,
            "histogram",
            labels,
            || Metric::Histogram(Arc::new(Histogram::new(bounds))),
            |m| match m {
                Metric::Histogram(h) => Some(h.clone()),
                _ => None,
            },
        )
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let fams = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for (name, fam) in fams.iter() {
            let _ = writeln!(out, "# HELP {name} {}", fam.help);
            let _ = writeln!(out, "# TYPE {name} {}", fam.kind);
            for (labels, m) in &fam.series {
                match m {
                    Metric::Counter(c) => {
                        let _ = writeln!(out, "{name}{labels} {}", c.get());
                    }
                    Metric::Gauge(g) => {
                        let _ = writeln!(out, "{name}{labels} {}", fmt_f64(g.get()));
                    }
                    Metric::Histogram(h) => {
                        let s = h.inner.lock().unwrap_or_else(|e| e.into_inner()).clone();
                        let inner = labels.trim_start_matches('{').trim_end_matches('}');
                        let sep = if inner.is_empty() { "" } else { "," };
                        let mut acc = 0;
                        for (b, c) in h.bounds.iter().zip(&s.counts) {
                            acc += c;
                            let _ = writeln!(
                                out,
                                "{name}_bucket{{{inner}{sep}le=\"{}\"}} {acc}",
                                fmt_f64(*b)
                            );
                        }
                        let _ =
                            writeln!(out, "{name}_bucket{{{inner}{sep}le=\"+Inf\"}} {}", s.count);
                        let _ = writeln!(out, "{name}_sum{labels} {}", fmt_f64(s.sum));
                        let _ = writeln!(out, "{name}_count{labels} {}", s.count);
                    }
                }
            }
        }
        out
    }
}

fn fmt_f64(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.is_nan() {
        "NaN".into()
    } else {
        format!("{v}")
    }
}

/// Bucket bounds in seconds for latencies from 1 ms to 30 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Serves `GET /metrics` (and `GET /health`) from `registry` on `listener` until the
/// task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, registry: Registry) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let r = registry.clone();
                async move {
                    (
                        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
                        r.render(),
                    )
                }
            }),
        )
        .route("/health", get(|| async { "ok\n" }));
    axum::serve(listener, app).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_format() {
        let r = Registry::new();
        r.counter("arng_x_total", "Things.", &[("reason", "bad \"json\"")])
            .add(3);
        r.counter("arng_x_total", "Things.", &[("reason", "bad \"json\"")])
            .inc();
        r.gauge("arng_g", "A gauge.", &[]).set(1.5);
        let h = r.histogram("arng_h_seconds", "Latency.", &[], &[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(7.0);
        let text = r.render();
        assert!(
            text.contains(
                "# TYPE arng_x_total counter\narng_x_total{reason=\"bad \\\"json\\\"\"} 4\n"
            ),
            "{text}"
        );
        assert!(text.contains("arng_g 1.5\n"), "{text}");
        assert!(
            text.contains("arng_h_seconds_bucket{le=\"0.1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("arng_h_seconds_bucket{le=\"1\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("arng_h_seconds_bucket{le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("arng_h_seconds_count 3\n"), "{text}");
        assert_eq!(h.quantile_bound(0.5), Some(1.0));
        assert_eq!(h.quantile_bound(0.99), Some(f64::INFINITY));
    }
}
