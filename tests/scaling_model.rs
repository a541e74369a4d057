//! docs/scaling.md stays true to what it is computed from: the capacity table is the
//! output of `bench/capacity.sh` on the checked-in figures (and moves when they do),
//! and the list of Flux queries names every query arng and its dashboards run.
//! Cheap: no server, a shell script and a few files.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::repo_root;

fn capacity(figures: &Path) -> Output {
    Command::new("bash")
        .arg(repo_root().join("bench/capacity.sh"))
        .arg(figures)
        .output()
        .expect("cannot run bash bench/capacity.sh")
}

fn stdout_of(out: &Output) -> String {
    assert!(
        out.status.success(),
        "bench/capacity.sh failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn scaling_doc() -> String {
    std::fs::read_to_string(repo_root().join("docs/scaling.md")).unwrap()
}

#[test]
fn the_capacity_table_of_the_docs_is_the_script_s_output_on_the_checked_in_figures() {
    let out = stdout_of(&capacity(&repo_root().join("bench/capacity.txt")));
    let doc = scaling_doc();
    let (_, rest) = doc
        .split_once("<!-- capacity.sh: begin -->")
        .expect("docs/scaling.md lost its capacity.sh begin marker");
    let (table, _) = rest
        .split_once("<!-- capacity.sh: end -->")
        .expect("docs/scaling.md lost its capacity.sh end marker");
    assert_eq!(
        table.trim(),
        out.trim(),
        "docs/scaling.md differs from `bench/capacity.sh bench/capacity.txt`: paste the script's output between the markers"
    );
}

/// The cells of the table row whose first cell is `sensors`.
fn row(table: &str, sensors: &str) -> Vec<String> {
    table
        .lines()
        .find(|l| l.starts_with(&format!("| {sensors} |")))
        .unwrap_or_else(|| panic!("no row for {sensors} sensors in:\n{table}"))
        .split('|')
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
        .collect()
}

#[test]
fn the_model_is_recomputed_from_the_figures() {
    let dir = tempfile::tempdir().unwrap();
    let figures = dir.path().join("figures.txt");
    let write = |broker: f64| {
        std::fs::write(
            &figures,
            format!(
                "# test figures\nbroker_cpu_s_per_10k {broker}\ningest_cpu_s_per_10k 0.2\n\
                 influxd_cpu_s_per_10k 0.3\nreading_interval_s 10\nutilisation 0.5\n\
                 fleets 1000 1000000\n"
            ),
        )
        .unwrap()
    };
    write(0.1);
    let low = stdout_of(&capacity(&figures));
    write(0.4);
    let high = stdout_of(&capacity(&figures));
    // 1,000,000 sensors / 10 s = 100,000 readings/s; x 0.1 s / 10,000 = 1 core; / 0.5.
    assert_eq!(
        row(&low, "1,000,000"),
        [
            "1,000,000",
            "100,000",
            "2.00",
            "4.00 (4)",
            "6.00",
            "12.0",
            "no: 2 brokers or a cluster"
        ]
    );
    assert_eq!(
        row(&high, "1,000,000")[2],
        "8.00",
        "four times the broker cost"
    );
    assert_eq!(row(&high, "1,000")[6], "yes");
    assert!(
        low.contains("saturates near 100,000 readings/s (1,000,000 sensors"),
        "{low}"
    );

    // A figure that is missing or not a number is refused, saying which.
    std::fs::write(&figures, "broker_cpu_s_per_10k 0.1\nfleets 10\n").unwrap();
    let out = capacity(&figures);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing ingest_cpu_s_per_10k"));
    std::fs::write(&figures, "broker_cpu_s_per_10k fast\n").unwrap();
    let out = capacity(&figures);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("broker_cpu_s_per_10k must be a positive number, got fast"));
}

/// Every function of src/ that builds a Flux query (a `|> range(` or `buckets()` in its
/// body, test modules left out).
fn flux_functions(dir: &Path, found: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            flux_functions(&path, found);
            continue;
        }
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        let mut current: Option<String> = None;
        for line in code.lines() {
            if let Some(pos) = line.find("fn ") {
                let name: String = line[pos + 3..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && line[pos + 3 + name.len()..].starts_with(['(', '<']) {
                    current = Some(name);
                }
            }
            if line.contains("|> range(") || line.contains("buckets()") {
                let file = path
                    .strip_prefix(repo_root())
                    .unwrap()
                    .display()
                    .to_string();
                let name = current.clone().unwrap_or_default();
                if !found.contains(&(file.clone(), name.clone())) {
                    found.push((file, name));
                }
            }
        }
    }
}

/// Titles of the panels (Grafana) or cells (InfluxDB template) holding a Flux query.
fn panels_with_flux(value: &serde_json::Value, title: Option<&str>, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            let title = map
                .get("title")
                .or_else(|| map.get("name"))
                .and_then(|t| t.as_str())
                .or(title);
            if let Some(query) = map.get("query").and_then(|q| q.as_str()) {
                if query.contains("from(bucket") {
                    let t = title
                        .expect("a Flux query outside any titled panel")
                        .to_owned();
                    if !out.contains(&t) {
                        out.push(t);
                    }
                }
            }
            for v in map.values() {
                panels_with_flux(v, title, out);
            }
        }
        serde_json::Value::Array(items) => {
            for v in items {
                panels_with_flux(v, title, out);
            }
        }
        _ => {}
    }
}

#[test]
fn the_flux_inventory_lists_every_query_of_arng_and_its_dashboards() {
    let doc = scaling_doc();
    let mut functions = Vec::new();
    flux_functions(&repo_root().join("src"), &mut functions);
    assert!(
        functions.len() >= 10,
        "found only {functions:?}: the scan is broken"
    );
    let missing: Vec<_> = functions
        .iter()
        .filter(|(file, name)| !(doc.contains(&format!("`{name}`")) && doc.contains(file.as_str())))
        .collect();
    assert!(
        missing.is_empty(),
        "Flux queries of src/ missing from docs/scaling.md (file, function): {missing:?}"
    );

    for dashboard in [
        "deploy/grafana/dashboards/arng-warehouse.json",
        "deploy/influxdb/template.json",
    ] {
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(repo_root().join(dashboard)).unwrap())
                .unwrap();
        let mut panels = Vec::new();
        panels_with_flux(&json, None, &mut panels);
        assert!(panels.len() >= 19, "{dashboard}: only {panels:?}");
        let missing: Vec<_> = panels
            .iter()
            .filter(|t| !doc.contains(&format!("| {t} ")))
            .collect();
        assert!(
            missing.is_empty(),
            "{dashboard}: panels missing from the Flux table of docs/scaling.md: {missing:?}"
        );
    }
    assert!(doc.contains("deploy/influxdb/downsample-1m.flux"));
}
