//! The latency distribution of each QoS level as an SVG chart (`--chart`), written
//! by hand: a few lines of SVG need no plotting crate.

use std::fmt::Write as _;

use super::plan::{Plan, Stop};
use super::run::LevelRun;
use crate::stats::{self, Histogram};

/// The chart of every level that measured something, titled after `plan`.
pub fn levels_chart_svg(plan: &Plan, levels: &[LevelRun]) -> String {
    let series: Vec<(u8, &Histogram)> = levels
        .iter()
        .filter(|l| !l.latency.is_empty())
        .map(|l| (l.qos, &l.latency))
        .collect();
    latency_chart_svg(&series, &chart_title(plan))
}

fn chart_title(plan: &Plan) -> String {
    let what = match plan.stop {
        Stop::Messages(k) => format!("{k} msgs/publisher"),
        Stop::After(d) => format!("{}", humantime::format_duration(d)),
    };
    let rate = plan
        .rate
        .map_or("max rate".to_owned(), |r| format!("{r} msgs/s"));
    format!(
        "arng qos-bench: end-to-end latency, {} pub x {} sub, {what}, {} B, {rate}",
        plan.publishers, plan.subscribers, plan.size
    )
}

/// The latency distribution of each QoS level as an SVG percentile plot: latency (ms,
/// linear) against percentile on a "nines" axis (50 %, 90 %, 99 %, 99.9 %...), where
/// the tail, the part that differs between QoS levels, gets as much room as the body.
pub fn latency_chart_svg(series: &[(u8, &Histogram)], title: &str) -> String {
    const W: f64 = 840.0;
    const H: f64 = 460.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 190.0;
    const TOP: f64 = 50.0;
    const BOTTOM: f64 = 60.0;
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);

    // As many nines as the largest sample count resolves, between 1 and 5.
    let most = series
        .iter()
        .map(|(_, h)| h.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let nines = (most as f64).log10().floor().clamp(1.0, 5.0);
    let y_top = series
        .iter()
        .filter_map(|(_, h)| h.max())
        .map(stats::ms)
        .fold(0.0, f64::max);
    let step = nice_step(y_top.max(0.001) / 5.0);
    let y_max = (y_top / step).ceil().max(1.0) * step;
    let x = |n: f64| LEFT + pw * n / nines;
    let y = |ms: f64| TOP + ph * (1.0 - ms / y_max);

    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"##
    );
    let _ = writeln!(s, r##"<rect width="{W}" height="{H}" fill="white"/>"##);
    let _ = writeln!(
        s,
        r##"<text x="{}" y="24" text-anchor="middle" font-size="14">{}</text>"##,
        W / 2.0,
        xml_escape(title)
    );
    // Axes, grid and ticks.
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
    );
    let mut v = 0.0;
    while v <= y_max + step / 2.0 {
        let yy = y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            yy + 4.0,
            trim_float(v)
        );
        v += step;
    }
    for n in 0..=(nines as u32) {
        let xx = x(f64::from(n));
        let label = match n {
            0 => "0%".to_owned(),
            n => format!("{}%", 100.0 - 100.0 / 10f64.powi(n as i32)),
        };
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{TOP}" x2="{xx:.1}" y2="{:.1}" stroke="#ddd"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            TOP + ph,
            TOP + ph + 18.0
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"##,
        LEFT + pw / 2.0,
        H - 16.0
    );
    let _ = writeln!(
        s,
        r##"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">latency (ms)</text>"##,
        TOP + ph / 2.0,
        TOP + ph / 2.0
    );
    // One line per QoS level.
    const COLORS: [&str; 3] = ["#1f77b4", "#d62728", "#2ca02c"];
    const POINTS: u32 = 200;
    for (k, (qos, h)) in series.iter().enumerate() {
        let color = COLORS[usize::from(*qos).min(2)];
        let mut pts = String::new();
        for p in 0..=POINTS {
            let n = nines * f64::from(p) / f64::from(POINTS);
            let q = if p == POINTS {
                1.0
            } else {
                1.0 - 10f64.powf(-n)
            };
            if let Some(val) = h.quantile(q) {
                let _ = write!(pts, "{:.1},{:.1} ", x(n), y(stats::ms(val)));
            }
        }
        let _ = writeln!(
            s,
            r##"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"##,
            pts.trim_end()
        );
        let ly = TOP + 20.0 + 22.0 * k as f64;
        let lx = LEFT + pw + 16.0;
        let p99 = h.quantile(0.99).map_or(0.0, stats::ms);
        let _ = writeln!(
            s,
            r##"<line x1="{lx}" y1="{ly}" x2="{:.1}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{:.1}" y="{:.1}">QoS {qos} (p99 {p99:.2} ms)</text>"##,
            lx + 20.0,
            lx + 26.0,
            ly + 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_has_one_line_per_level() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        for i in 1..=1000u64 {
            a.record(i * 10_000);
            b.record(i * 30_000);
        }
        let svg = latency_chart_svg(&[(0, &a), (2, &b)], "t <&>");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("QoS 2") && svg.contains("99.9%") && svg.contains("t &lt;&amp;&gt;"));
        // Nothing measured: still a valid, empty chart.
        assert!(latency_chart_svg(&[], "empty").contains("</svg>"));
    }

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(1.5), 2.0);
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(42.0), 50.0);
        assert_eq!(trim_float(2.5), "2.5");
        assert_eq!(trim_float(10.0), "10");
    }
}
