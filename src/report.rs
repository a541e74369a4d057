//! Results of checks (doctor, check-e2e) and how they are shown: a table for people,
//! JSON for scripts. Pure: builds strings, prints nothing.

use serde::Serialize;
use tabled::builder::Builder;
use tabled::settings::Style;

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
        self.to_table_as("check")
    }

    /// The table, with `item` as the title of the first column (e.g. `hop`).
    pub fn to_table_as(&self, item: &str) -> String {
        let mut b = Builder::default();
        b.push_record([item, "status", "latency", "detail"]);
        for c in &self.checks {
            b.push_record([
                c.name.clone(),
                if c.ok { "PASS" } else { "FAIL" }.to_owned(),
                c.latency_ms
                    .map_or_else(|| "-".into(), |ms| format!("{ms:.1} ms")),
                c.detail.clone(),
            ]);
        }
        b.build().with(Style::rounded()).to_string()
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
            r.to_table_as("hop").contains("│ hop "),
            "{}",
            r.to_table_as("hop")
        );
        assert_eq!(
            r.failures().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
    }
}
