//! The French deliverables (docs/fr/, issue 14) hold what they claim:
//!
//! - every `curl` example runs against a live `arng serve` (real Mosquitto, influxd
//!   and ingest behind it) and answers the status it says (`# expect NNN`, else 2xx);
//! - every file they cite exists: relative Markdown links (and their `#anchor`, as
//!   GitHub derives it from the headings) and repository paths in backquotes;
//! - the Python excerpts are the code of `examples/python/tp_mqtt.py`, line for line;
//! - the index lists every deliverable of the lab, and README.md points to it.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::chain::{get_json, now_ms, publish_all, reading_msg, IngestProc, ServeProc};
use common::eventually;
use common::influxd::Influxd;
use common::mosquitto::Mosquitto;
use rumqttc::QoS;

fn fr_docs() -> Vec<(PathBuf, String)> {
    let dir = common::repo_root().join("docs/fr");
    let mut docs: Vec<(PathBuf, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect();
    docs.sort();
    assert!(docs.len() >= 6, "docs/fr has {} pages", docs.len());
    docs
}

#[tokio::test(flavor = "multi_thread")]
async fn every_french_curl_example_works() {
    let examples: Vec<(Option<u16>, String)> = fr_docs()
        .iter()
        .flat_map(|(_, text)| common::curl_examples(text))
        .collect();
    assert!(
        examples.len() >= 20,
        "found only {} curl examples",
        examples.len()
    );

    let broker = Mosquitto::start();
    let db = Influxd::start();
    let _ingest = IngestProc::start(&broker, &db, &[]);
    let serve = ServeProc::start(&broker, &db, &[]);
    // The lab's test message, and a reading of arng's own form.
    publish_all(
        &broker,
        "sensor-nord",
        &[
            (
                "entrepot/nord/temp/v1".to_owned(),
                r#"{"temp":23.1,"hum":44.0}"#.to_owned(),
            ),
            reading_msg("nord", "s1", 0, now_ms() - 1000, 21.4),
        ],
        QoS::AtLeastOnce,
    )
    .await;
    let latest = format!("{}/zones/nord/latest?source=influx", serve.url());
    eventually(
        "both readings of nord in InfluxDB",
        Duration::from_secs(20),
        || async {
            let v = get_json(&latest).await?;
            let stored = v["sensors"]
                .as_array()?
                .iter()
                .filter(|s| s["influx"].is_object())
                .count();
            (stored == 2).then_some(())
        },
    )
    .await;

    let mut env = vec![
        ("ARNG_API_URL", serve.url()),
        ("ARNG_API_TOKEN", serve.token.clone()),
    ];
    env.extend(db.env());
    for (expect, cmd) in examples {
        common::check_curl(expect, &cmd, &env);
    }
}

/// GitHub's anchor for a heading: lowercase, punctuation dropped (letters of any
/// script, digits, `-` and `_` kept), spaces to `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(markdown: &str) -> Vec<String> {
    let mut in_code = false;
    markdown
        .lines()
        .filter(|l| {
            if l.trim_start().starts_with("```") {
                in_code = !in_code;
            }
            !in_code && l.starts_with('#')
        })
        .map(|l| slug(l.trim_start_matches('#')))
        .collect()
}

/// Relative link targets `](target)` of a Markdown text (not http links).
fn links(markdown: &str) -> Vec<String> {
    markdown
        .split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .filter(|t| !t.starts_with("http") && !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Repository paths in backquotes: `src/...`, `mosquitto-conf/...`, ...
fn cited_paths(markdown: &str) -> Vec<String> {
    const ROOTS: [&str; 9] = [
        "src/",
        "docs/",
        "tests/",
        "mosquitto-conf/",
        "examples/",
        "scripts/",
        "deploy/",
        "bench/",
        "docker-compose.yml",
    ];
    markdown
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| ROOTS.iter().any(|r| s.starts_with(r)))
        .filter(|s| !s.contains(' ') && !s.contains('<'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_file_and_anchor_the_french_pages_cite_exists() {
    let root = common::repo_root();
    let mut checked = 0;
    for (path, text) in fr_docs() {
        let dir = path.parent().unwrap();
        for link in links(&text) {
            let (file, anchor) = link.split_once('#').unwrap_or((&link, ""));
            let target = if file.is_empty() {
                path.clone()
            } else {
                dir.join(file)
            };
            assert!(
                target.exists(),
                "{}: link to {link}: {} does not exist",
                path.display(),
                target.display()
            );
            if !anchor.is_empty() && target.extension().is_some_and(|x| x == "md") {
                let heads = anchors(&std::fs::read_to_string(&target).unwrap());
                assert!(
                    heads.iter().any(|h| h == anchor),
                    "{}: link to {link}: no heading #{anchor} in {} (has {heads:?})",
                    path.display(),
                    target.display()
                );
            }
            checked += 1;
        }
        for cited in cited_paths(&text) {
            assert!(
                root.join(&cited).exists(),
                "{}: cites `{cited}`, which does not exist",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 60, "only {checked} references checked");
}

#[test]
fn python_excerpts_are_the_code_of_the_example() {
    let source =
        std::fs::read_to_string(common::repo_root().join("examples/python/tp_mqtt.py")).unwrap();
    let source_lines: Vec<&str> = source.lines().map(str::trim_end).collect();
    let mut excerpts = 0;
    for (path, text) in fr_docs() {
        for block in text.split("```python").skip(1) {
            let code = block.split("```").next().unwrap();
            let lines: Vec<&str> = code
                .lines()
                .map(str::trim_end)
                .filter(|l| !l.is_empty())
                .collect();
            // The excerpt's lines appear in the file, consecutively (blank lines aside).
            let first = source_lines
                .iter()
                .position(|l| *l == lines[0])
                .unwrap_or_else(|| {
                    panic!("{}: {:?} is not in tp_mqtt.py", path.display(), lines[0])
                });
            let in_file: Vec<&str> = source_lines[first..]
                .iter()
                .copied()
                .filter(|l| !l.is_empty())
                .take(lines.len())
                .collect();
            assert_eq!(
                in_file,
                lines,
                "{}: excerpt differs from tp_mqtt.py",
                path.display()
            );
            excerpts += 1;
        }
    }
    assert!(excerpts >= 3, "only {excerpts} excerpts");
}

#[test]
fn the_index_covers_every_deliverable_and_readme_points_to_it() {
    let index = std::fs::read_to_string(common::repo_root().join("docs/fr/README.md")).unwrap();
    for deliverable in [
        "aller-retour publish/subscribe",
        "`qos0.conf`, `qos1.conf`, `qos2.conf`",
        "choix QoS/rétention pour les trois zones",
        "tableau topics ↔ tags InfluxDB, schéma measurement/tags/fields",
        "`compute_payload` et `SensorConfig`",
        "mesure nominale + alerte",
        "documentation API (route / description / exemple curl)",
        "justification QoS/rétention",
        "liste des widgets/graphes",
        "checklist de tests bout-en-bout MQTT ↔ REST ↔ dashboard",
        "trois indicateurs clés de supervision",
        "Restitution technique de 5 minutes",
    ] {
        assert!(
            index.contains(deliverable),
            "docs/fr/README.md lacks {deliverable:?}"
        );
    }
    let readme = std::fs::read_to_string(common::repo_root().join("README.md")).unwrap();
    assert!(
        readme.contains("docs/fr/") && readme.contains("## En français"),
        "README.md has no French section pointing to docs/fr/"
    );
    assert!(Path::new(&common::repo_root().join("docs/fr/restitution.md")).exists());
}

#[test]
fn slugs_follow_github() {
    assert_eq!(slug(" Jokers `+` et `#`"), "jokers--et-");
    assert_eq!(
        slug(" Aller-retour publish/subscribe (log réel)"),
        "aller-retour-publishsubscribe-log-réel"
    );
    assert_eq!(slug(" Wildcards: `+` and `#`"), "wildcards--and-");
}
