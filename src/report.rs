//! Results of checks (doctor, check-e2e) and how they are shown: a table for people,
//! JSON for scripts. Pure: builds strings, prints nothing.

use serde::Serialize;
use tabled::settings::Style;
use tabled::{Table, Tabled};

/// One check or hop: did it pass, how long it took, and why.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub latency_ms: Option<f64>,
    pub detail: String,
}

impl Check {
    pub fn pass(name: &str, latency_ms: Option<f64>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            ok: true,
            latency_ms,
            detail: detail.into(),
        }
    }

    pub fn fail(name: &str, latency_ms: Option<f64>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            ok: false,
            latency_ms,
            detail: detail.into(),
        }
    }
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

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serializes")
    }

    pub fn to_table(&self) -> String {
        #[derive(Tabled)]
        struct Row<'a> {
            check: &'a str,
            status: &'static str,
            #[tabled(rename = "latency")]
            latency: String,
            detail: &'a str,
        }
        let rows = self.checks.iter().map(|c| Row {
            check: &c.name,
            status: if c.ok { "PASS" } else { "FAIL" },
            latency: c
                .latency_ms
                .map_or_else(|| "-".into(), |ms| format!("{ms:.1} ms")),
            detail: &c.detail,
        });
        Table::new(rows).with(Style::rounded()).to_string()
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
    }
}
