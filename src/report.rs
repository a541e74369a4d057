//! Results of checks (doctor, check-e2e) and how they are shown: a table that fits
//! the terminal for people (long details continued below it), JSON for scripts.
//! Pure: builds strings, prints nothing.

use serde::Serialize;
use tabled::builder::Builder;
use tabled::settings::Style;

/// Why a check or hop failed, as a script can branch on it (`"cause"` in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// Nothing listens at the configured address (wrong URL, or the server is down).
    ConnectionRefused,
    /// The configured host name does not resolve.
    Dns,
    /// The TLS handshake failed.
    Tls,
    /// Credentials refused (broker CONNACK, HTTP 401/403).
    Auth,
    /// The server answered that the thing asked for does not exist (a bucket, a route).
    NotFound,
    /// The server refused the request itself (HTTP 4xx other than the above).
    Rejected,
    /// No answer in time.
    Timeout,
    /// Everything answered, but what was waited for (a probe, an alert, a fresh
    /// heartbeat) never showed up: the fault is upstream of this hop.
    NotSeen,
    /// Not tried, because what this hop needs failed before it.
    Skipped,
    /// Anything else (a protocol error, an unexpected answer).
    Other,
}

impl Cause {
    /// Waiting longer cannot help: a check gives up at once instead of retrying
    /// until its timeout (a refused connection to the check's own InfluxDB is the
    /// check's configuration, not a slow pipeline).
    pub fn is_permanent(self) -> bool {
        matches!(
            self,
            Cause::ConnectionRefused
                | Cause::Dns
                | Cause::Tls
                | Cause::Auth
                | Cause::NotFound
                | Cause::Rejected
        )
    }

    /// The cause in words, as the table and the details start with it.
    pub fn words(self) -> &'static str {
        match self {
            Cause::ConnectionRefused => "connection refused",
            Cause::Dns => "DNS lookup failed",
            Cause::Tls => "TLS handshake failed",
            Cause::Auth => "authentication refused",
            Cause::NotFound => "not found",
            Cause::Rejected => "request refused",
            Cause::Timeout => "timeout",
            Cause::NotSeen => "not seen",
            Cause::Skipped => "skipped",
            Cause::Other => "error",
        }
    }
}

impl From<crate::net::Transport> for Cause {
    fn from(t: crate::net::Transport) -> Cause {
        use crate::net::Transport;
        match t {
            Transport::Refused => Cause::ConnectionRefused,
            Transport::Dns => Cause::Dns,
            Transport::Tls => Cause::Tls,
            Transport::Other => Cause::Other,
        }
    }
}

/// One check or hop: did it pass, how long it took, and why; when it failed, the
/// cause as a word a script can test (`null` when it passed).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub latency_ms: Option<f64>,
    pub detail: String,
    pub cause: Option<Cause>,
}

impl Check {
    pub fn pass(name: &str, latency_ms: Option<f64>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            ok: true,
            latency_ms,
            detail: detail.into(),
            cause: None,
        }
    }

    /// A failure of cause [`Cause::Other`] (see [`Check::failed`]).
    pub fn fail(name: &str, latency_ms: Option<f64>, detail: impl Into<String>) -> Check {
        Check::failed(name, Cause::Other, latency_ms, detail)
    }

    /// The detail as a table shows it: the cause first when the check could not
    /// reach or use its server (refused, DNS, credentials...), unless the detail
    /// already starts with it. A "not seen" or "skipped" detail says why itself.
    pub fn detail_with_cause(&self) -> String {
        match self.cause {
            Some(cause) if !matches!(cause, Cause::Other | Cause::Skipped | Cause::NotSeen) => {
                let words = cause.words();
                if self.detail.to_lowercase().starts_with(words) {
                    self.detail.clone()
                } else {
                    format!("{words}: {}", self.detail)
                }
            }
            _ => self.detail.clone(),
        }
    }

    /// A failure and its cause.
    pub fn failed(
        name: &str,
        cause: Cause,
        latency_ms: Option<f64>,
        detail: impl Into<String>,
    ) -> Check {
        Check {
            name: name.into(),
            ok: false,
            latency_ms,
            detail: detail.into(),
            cause: Some(cause),
        }
    }
}

/// The narrowest the detail column gets, however narrow the terminal.
const MIN_DETAIL_COLUMN: usize = 24;

/// How wide a table may be: `COLUMNS` when set (as people set it to force a width),
/// else the terminal's width, else 80 (a pipe, a log, CI).
pub fn table_width(columns_env: Option<&str>, terminal: Option<usize>) -> usize {
    columns_env
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|&c| c > 0)
        .or(terminal)
        .unwrap_or(80)
}

/// A list of checks; `ok` when every one passed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn new(checks: Vec<Check>) -> Report {
        Report {
            ok: checks.iter().all(|c| c.ok),
            checks,
        }
    }

    /// `{"ok": bool, "checks": [...]}` (doctor).
    pub fn to_json(&self) -> String {
        self.to_json_as("checks")
    }

    /// `{"ok": bool, "<list>": [...]}`: check-e2e calls its checks `hops`.
    pub fn to_json_as(&self, list: &str) -> String {
        let mut doc = serde_json::Map::new();
        doc.insert("ok".into(), self.ok.into());
        doc.insert(
            list.into(),
            serde_json::to_value(&self.checks).expect("checks serialize"),
        );
        serde_json::to_string_pretty(&doc).expect("report serializes")
    }

    pub fn to_table(&self) -> String {
        self.to_table_as("check", usize::MAX)
    }

    /// The table within `width` columns, with `item` as the title of the first
    /// column (e.g. `hop`). A detail too long for its column is cut and marked
    /// `[n]`; the whole of it follows the table as `[n] name: detail`, so nothing
    /// is lost and nothing wraps into the next row.
    pub fn to_table_as(&self, item: &str, width: usize) -> String {
        let latency = |c: &Check| {
            c.latency_ms
                .map_or_else(|| "-".into(), |ms| format!("{ms:.1} ms"))
        };
        let status = |c: &Check| if c.ok { "PASS" } else { "FAIL" };
        let chars = |s: &str| s.chars().count();
        let widest = |head: &str, f: &dyn Fn(&Check) -> usize| {
            self.checks
                .iter()
                .map(f)
                .chain([chars(head)])
                .max()
                .unwrap_or(0)
        };
        // Three narrow columns, each with one space of padding either side, and
        // five borders.
        let fixed = widest(item, &|c| chars(&c.name))
            + widest("status", &|c| chars(status(c)))
            + widest("latency", &|c| chars(&latency(c)))
            + 3 * 2
            + 2
            + 5;
        let room = width.saturating_sub(fixed).max(MIN_DETAIL_COLUMN);

        let mut b = Builder::default();
        b.push_record([item, "status", "latency", "detail"]);
        let mut below = Vec::new();
        for c in &self.checks {
            let full = c.detail_with_cause();
            let detail = if chars(&full) <= room {
                full
            } else {
                below.push(format!("[{}] {}: {full}", below.len() + 1, c.name));
                let mark = format!("… [{}]", below.len());
                let keep = room.saturating_sub(chars(&mark));
                let cut: String = full.chars().take(keep).collect();
                format!("{}{mark}", cut.trim_end())
            };
            b.push_record([c.name.clone(), status(c).to_owned(), latency(c), detail]);
        }
        let mut out = b.build().with(Style::rounded()).to_string();
        for line in below {
            out.push('\n');
            out.push_str(&line);
        }
        out
    }

    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_only_when_all_pass() {
        let r = Report::new(vec![
            Check::pass("a", Some(1.25), "fine"),
            Check::fail("b", None, "broken"),
        ]);
        assert!(!r.ok);
        let t = r.to_table();
        assert!(
            t.contains("PASS")
                && t.contains("FAIL")
                && t.contains("1.2 ms")
                && t.contains("broken"),
            "{t}"
        );
        let j: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(j["ok"], false);
        assert_eq!(j["checks"][1]["name"], "b");
        assert!(j["checks"][1]["latency_ms"].is_null());
        assert!(Report::new(vec![Check::pass("a", None, "")]).ok);
        let j: serde_json::Value = serde_json::from_str(&r.to_json_as("hops")).unwrap();
        assert_eq!(j["hops"][0]["latency_ms"], 1.25);
        assert!(j.get("checks").is_none());
        assert!(
            r.to_table_as("hop", 80).contains("│ hop "),
            "{}",
            r.to_table_as("hop", 80)
        );
        assert_eq!(
            r.failures().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
        assert_eq!(j["hops"][0]["cause"], serde_json::Value::Null);
        assert_eq!(j["hops"][1]["cause"], "other");
        let refused = Check::failed("c", Cause::ConnectionRefused, None, "InfluxDB at x");
        assert_eq!(
            serde_json::to_value(&refused).unwrap()["cause"],
            "connection_refused"
        );
        assert_eq!(
            refused.detail_with_cause(),
            "connection refused: InfluxDB at x"
        );
        let t = Report::new(vec![refused]).to_table();
        assert!(t.contains("│ connection refused: InfluxDB at x │"), "{t}");
        assert!(Cause::ConnectionRefused.is_permanent() && !Cause::Timeout.is_permanent());
    }

    #[test]
    fn tables_fit_the_width_and_continue_long_details_below() {
        let long = "probe seq=1733000000000000 not in InfluxDB bucket \"entrepot\" after 30s: \
                    is arng ingest running and connected? (its log; arng_ingest_* metrics)";
        let r = Report::new(vec![
            Check::pass("mqtt publish", Some(1.5), "PUBACK"),
            Check::failed("influxdb", Cause::NotSeen, Some(30_000.0), long),
            Check::pass(
                "heartbeats",
                Some(2.0),
                "nord 1.0 s, sud 2.0 s (limit 90 s)",
            ),
        ]);
        for width in [70, 80, 120] {
            let t = r.to_table_as("hop", width);
            let (table, rest) = t.split_at(t.find("╯").unwrap() + "╯".len());
            for line in table.lines() {
                assert!(line.chars().count() <= width, "{width}: {line:?}\n{t}");
            }
            assert!(table.contains("… [1]"), "{t}");
            assert!(
                rest.trim().starts_with(&format!("[1] influxdb: {long}")),
                "{t}"
            );
            if width >= 80 {
                assert_eq!(rest.trim(), format!("[1] influxdb: {long}"), "{t}");
                assert!(table.contains("nord 1.0 s, sud 2.0 s (limit 90 s)"), "{t}");
            }
        }
        // Wide enough: nothing is cut, nothing below.
        let t = r.to_table_as("hop", 400);
        assert!(t.ends_with("╯") && t.contains(long), "{t}");
        assert_eq!(table_width(Some("132"), Some(200)), 132);
        assert_eq!(table_width(Some("x"), Some(200)), 200);
        assert_eq!(table_width(None, None), 80);
    }
}
