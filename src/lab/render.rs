//! How a [`LabReport`] is shown: a table that fits the terminal with the details of
//! what did not pass below it, a JSON document for scripts (its shape is stable and
//! documented in docs/check-lab.md), and a Markdown report a team can hand in. Pure:
//! builds strings, prints nothing.

use serde_json::{json, Value};
use tabled::builder::Builder;
use tabled::settings::Style;

use super::{LabReport, Lang, Status};
use crate::tr;

fn headers(lang: Lang) -> [&'static str; 4] {
    match lang {
        Lang::Fr => ["#", "exigence", "résultat", "constat"],
        Lang::En => ["#", "requirement", "result", "evidence"],
    }
}

/// The counts line: "21 items: 18 pass, 2 fail, 1 not checked".
fn counts(r: &LabReport) -> String {
    let (n, p, f, c) = (
        r.items.len(),
        r.count(Status::Pass),
        r.count(Status::Fail),
        r.count(Status::NotChecked),
    );
    tr!(
        r.lang,
        "{n} exigences : {p} OK, {f} en échec, {c} non vérifiées",
        "{n} requirements: {p} pass, {f} fail, {c} not checked"
    )
}

/// `text` wrapped at word boundaries to lines of at most `cols` characters (a word
/// longer than that is cut).
pub fn wrap(text: &str, cols: usize) -> String {
    let cols = cols.max(1);
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        while word.len() > cols {
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            lines.push(word.drain(..cols).collect());
        }
        let n = line.chars().count();
        if n > 0 && n + 1 + word.len() > cols {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.extend(word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines.join("\n")
}

/// Title column width at most; the evidence gets the rest.
const TITLE_COLS: usize = 28;

/// The table, at most `width` columns wide (the cells wrapped at words, the evidence
/// column getting the room), then the evidence of every item that did not pass and
/// the probe data left behind.
pub fn table(r: &LabReport, width: usize) -> String {
    let l = r.lang;
    let chars = |s: &str| s.chars().count();
    let n_cols = chars(&r.items.len().to_string()).max(1);
    let status_cols = [Status::Pass, Status::Fail, Status::NotChecked]
        .iter()
        .map(|s| chars(s.label(l)))
        .max()
        .unwrap_or(4)
        .max(chars(headers(l)[2]));
    let title_cols = r
        .items
        .iter()
        .map(|i| chars(i.title))
        .max()
        .unwrap_or(0)
        .clamp(chars(headers(l)[1]), TITLE_COLS);
    // Four columns: "│ " before each, " " after each, "│" at the end.
    let fixed = n_cols + status_cols + title_cols + 4 * 3 + 1;
    let evidence_cols = width.saturating_sub(fixed).max(20);
    let mut b = Builder::default();
    b.push_record(headers(l));
    for (i, item) in r.items.iter().enumerate() {
        b.push_record([
            (i + 1).to_string(),
            wrap(item.title, title_cols),
            item.status.label(l).to_owned(),
            wrap(&item.summary, evidence_cols),
        ]);
    }
    let mut t = b.build();
    t.with(Style::rounded());
    let mut out = t.to_string();
    out.push('\n');
    out.push_str(&counts(r));
    out.push('\n');
    let shown: Vec<_> = r
        .items
        .iter()
        .enumerate()
        .filter(|(_, i)| i.status != Status::Pass)
        .collect();
    if !shown.is_empty() {
        out.push('\n');
        out.push_str(r.lang.pick("Détails :\n", "Details:\n"));
    }
    for (n, item) in shown {
        out.push_str(&format!(
            "{}. [{}] {} ({}): {}\n",
            n + 1,
            item.status.label(r.lang),
            item.title,
            item.id,
            item.summary
        ));
        for e in &item.evidence {
            out.push_str(&format!("     - {e}\n"));
        }
    }
    if !r.left_behind.is_empty() {
        out.push('\n');
        out.push_str(
            r.lang
                .pick("Données de sonde laissées :\n", "Probe data left behind:\n"),
        );
        for l in &r.left_behind {
            out.push_str(&format!("  - {l}\n"));
        }
    }
    out
}

/// The JSON document (see docs/check-lab.md for its shape).
pub fn json(r: &LabReport) -> String {
    let items: Vec<Value> = r
        .items
        .iter()
        .map(|i| {
            json!({
                "id": i.id,
                "title": i.title,
                "status": i.status,
                "summary": i.summary,
                "evidence": i.evidence,
            })
        })
        .collect();
    let doc = json!({
        "ok": r.ok(),
        "lang": r.lang,
        "target": r.target,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "window_s": r.window.as_secs_f64(),
        "counts": {
            "pass": r.count(Status::Pass),
            "fail": r.count(Status::Fail),
            "not_checked": r.count(Status::NotChecked),
        },
        "items": items,
        "left_behind": r.left_behind,
    });
    serde_json::to_string_pretty(&doc).expect("a report serializes")
}

/// Text as Markdown shows it literally: `<` would start an HTML tag (`<zone>`).
fn md(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('<', "\\<")
        .replace('*', "\\*")
}

/// The same in a table cell, where `|` ends the cell.
fn cell(s: &str) -> String {
    md(s).replace('|', "\\|")
}

fn icon(s: Status) -> &'static str {
    match s {
        Status::Pass => "✅",
        Status::Fail => "❌",
        Status::NotChecked => "⚪",
    }
}

/// The Markdown report: what was checked, where, when, the verdict of each item
/// with its evidence, and the probe data left behind.
pub fn markdown(r: &LabReport) -> String {
    let l = r.lang;
    let t = &r.target;
    let mut out = String::new();
    out.push_str(l.pick(
        "# TP ARNG — rapport de vérification\n\n",
        "# TP ARNG — check report\n\n",
    ));
    let (when, window, version) = (
        r.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
        humantime::format_duration(r.window),
        env!("CARGO_PKG_VERSION"),
    );
    out.push_str(&tr!(
        l,
        "Produit par `arng check-lab` {version} le {when}, après {window} d'observation.\n\n",
        "Made by `arng check-lab` {version} on {when}, after watching for {window}.\n\n"
    ));
    let account = t.mqtt_username.as_deref().unwrap_or("-");
    let rows = [
        (
            l.pick("Broker MQTT", "MQTT broker"),
            tr!(
                l,
                "`{}` (compte `{account}`)",
                "`{}` (account `{account}`)",
                t.mqtt_url
            ),
        ),
        (l.pick("API REST", "REST API"), format!("`{}`", t.api_url)),
        (
            "InfluxDB",
            tr!(
                l,
                "`{}`, org `{}`, bucket `{}`",
                "`{}`, org `{}`, bucket `{}`",
                t.influx_url,
                t.influx_org,
                t.influx_bucket
            ),
        ),
        ("Zones", t.zones.join(", ")),
    ];
    out.push_str(l.pick("| | |\n|---|---|\n", "| | |\n|---|---|\n"));
    for (k, v) in rows {
        out.push_str(&format!("| {k} | {} |\n", cell(&v).replace("\\\\", "\\")));
    }
    let verdict = if r.ok() {
        l.pick(
            "toutes les exigences vérifiées sont satisfaites",
            "every checked requirement is met",
        )
    } else {
        l.pick(
            "des exigences ne sont pas satisfaites",
            "some requirements are not met",
        )
    };
    out.push_str(&format!("\n**{}** — {verdict}.\n\n", counts(r)));
    let [h0, h1, h2, h3] = headers(l);
    out.push_str(&format!(
        "| {h0} | {h1} | {h2} | {h3} |\n|---|---|---|---|\n"
    ));
    for (i, item) in r.items.iter().enumerate() {
        out.push_str(&format!(
            "| {} | {} | {} {} | {} |\n",
            i + 1,
            cell(item.title),
            icon(item.status),
            item.status.label(l),
            cell(&item.summary)
        ));
    }
    out.push_str(l.pick("\n## Détails\n", "\n## Details\n"));
    for (i, item) in r.items.iter().enumerate() {
        out.push_str(&format!(
            "\n### {}. {} — {} {}\n\n`{}` : {}\n",
            i + 1,
            md(item.title),
            icon(item.status),
            item.status.label(l),
            item.id,
            md(&item.summary)
        ));
        if !item.evidence.is_empty() {
            out.push('\n');
        }
        for e in &item.evidence {
            out.push_str(&format!("- {}\n", md(e)));
        }
    }
    out.push_str(l.pick(
        "\n## Données de sonde laissées\n\n",
        "\n## Probe data left behind\n\n",
    ));
    if r.left_behind.is_empty() {
        out.push_str(l.pick("Aucune.\n", "None.\n"));
    }
    for x in &r.left_behind {
        out.push_str(&format!("- {}\n", md(x)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::{Item, Target};

    fn report(lang: Lang) -> LabReport {
        let item = |id, status, summary: &str| {
            Item::new(id, lang, status, summary.into())
                .with(vec!["entrepot/<zone>/th1/v1 : {\"a\": 1} | x".into()])
        };
        LabReport {
            lang,
            target: Target {
                mqtt_url: "mqtt://127.0.0.1:1883".into(),
                mqtt_username: Some("operator".into()),
                api_url: "http://127.0.0.1:8000/".into(),
                influx_url: "http://127.0.0.1:8086/".into(),
                influx_org: "ares".into(),
                influx_bucket: "entrepot".into(),
                zones: vec!["nord".into(), "sud".into(), "est".into()],
            },
            started_at: chrono::DateTime::from_timestamp(1_795_850_100, 0).unwrap(),
            finished_at: chrono::DateTime::from_timestamp(1_795_850_175, 0).unwrap(),
            window: std::time::Duration::from_secs(70),
            left_behind: vec!["one reading of sensor e2e-probe".into()],
            items: vec![
                item("broker.auth", Status::Pass, "anonymous connection refused"),
                item("payload.alert_level", Status::Fail, &"missing ".repeat(30)),
                item(
                    "payload.critical",
                    Status::NotChecked,
                    "no critical reading",
                ),
            ],
        }
    }

    #[test]
    fn the_table_fits_and_details_follow() {
        let r = report(Lang::En);
        let t = table(&r, 80);
        assert!(
            t.lines()
                .take_while(|l| !l.is_empty())
                .all(|l| l.chars().count() <= 80),
            "{t}"
        );
        assert!(t.contains("│ requirement"), "{t}");
        assert!(
            t.contains("3 requirements: 1 pass, 1 fail, 1 not checked"),
            "{t}"
        );
        assert!(
            t.contains("2. [FAIL] Payload: alert_level (payload.alert_level): missing"),
            "{t}"
        );
        assert!(!t.contains("1. [PASS]"), "{t}");
        assert!(
            t.contains("Probe data left behind:\n  - one reading"),
            "{t}"
        );
        let t = table(&report(Lang::Fr), 200);
        assert!(
            t.contains("│ exigence") && t.contains("NON VÉRIFIÉ") && t.contains("Détails :"),
            "{t}"
        );
    }

    #[test]
    fn words_wrap() {
        assert_eq!(wrap("a bb ccc dddd", 6), "a bb\nccc\ndddd");
        assert_eq!(wrap("abcdefgh ij", 3), "abc\ndef\ngh\nij");
        assert_eq!(wrap("", 5), "");
        assert_eq!(
            wrap("entrepot/nord/e2e-probe/v1 (PUBACK in 2 ms)", 30),
            "entrepot/nord/e2e-probe/v1\n(PUBACK in 2 ms)"
        );
    }

    #[test]
    fn the_json_shape_is_stable() {
        let r = report(Lang::Fr);
        let v: Value = serde_json::from_str(&json(&r)).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["lang"], "fr");
        assert_eq!(v["window_s"], 70.0);
        assert_eq!(v["counts"], json!({"pass": 1, "fail": 1, "not_checked": 1}));
        assert_eq!(v["items"][2]["status"], "not_checked");
        assert_eq!(v["items"][1]["id"], "payload.alert_level");
        assert_eq!(v["items"][0]["title"], "Broker : authentification exigée");
        assert_eq!(v["target"]["mqtt_username"], "operator");
        assert_eq!(v["left_behind"][0], "one reading of sensor e2e-probe");
        assert!(v["started_at"].as_str().unwrap().starts_with("2026-11-28T"));
    }

    #[test]
    fn the_markdown_report_escapes_what_markdown_would_eat() {
        let m = markdown(&report(Lang::Fr));
        assert!(
            m.starts_with("# TP ARNG — rapport de vérification\n"),
            "{m}"
        );
        assert!(
            m.contains("| 2 | Payload : alert\\_level |")
                || m.contains("| 2 | Payload : alert_level |"),
            "{m}"
        );
        assert!(m.contains("❌ ÉCHEC"), "{m}");
        assert!(m.contains("entrepot/\\<zone>/th1/v1"), "{m}");
        assert!(
            m.contains("\\| x |") || m.contains("- entrepot/\\<zone>/th1/v1 : {\"a\": 1} | x"),
            "{m}"
        );
        assert!(
            m.contains("| Broker MQTT | `mqtt://127.0.0.1:1883` (compte `operator`) |"),
            "{m}"
        );
        assert!(
            m.contains("3 exigences : 1 OK, 1 en échec, 1 non vérifiées"),
            "{m}"
        );
        let en = markdown(&report(Lang::En));
        assert!(
            en.contains("## Probe data left behind") && en.contains("❌ FAIL"),
            "{en}"
        );
    }
}
