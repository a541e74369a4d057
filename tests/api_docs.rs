//! Every `curl` example of docs/api.md, run against a live `arng serve` (with real
//! Mosquitto, influxd and ingest behind it). A line `# expect NNN` before a command
//! gives the status it must answer; otherwise 2xx.

mod common;

use std::process::Command;
use std::time::Duration;

use common::chain::{now_ms, publish_all, reading_msg, IngestProc, ServeProc};
use common::influxd::Influxd;
use common::mosquitto::Mosquitto;
use rumqttc::QoS;

/// (expected status, command) for every curl line in a ```sh block.
fn examples(doc: &str) -> Vec<(Option<u16>, String)> {
    let mut out = Vec::new();
    let mut in_sh = false;
    let mut expect = None;
    for line in doc.lines() {
        let t = line.trim();
        if t.starts_with("```") {
            in_sh = t == "```sh";
            expect = None;
            continue;
        }
        if !in_sh {
            continue;
        }
        if let Some(rest) = t.strip_prefix("# expect ") {
            expect = rest.split_whitespace().next().and_then(|s| s.parse().ok());
        } else if t.starts_with("curl ") {
            out.push((expect.take(), t.to_owned()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn every_documented_curl_example_works() {
    let doc = std::fs::read_to_string(common::repo_root().join("docs/api.md")).unwrap();
    let examples = examples(&doc);
    assert!(
        examples.len() >= 15,
        "found only {} curl examples",
        examples.len()
    );

    let broker = Mosquitto::start();
    let db = Influxd::start();
    let _ingest = IngestProc::start(&broker, &db, &[]);
    let serve = ServeProc::start(&broker, &db, &[]);
    publish_all(
        &broker,
        "simulator",
        &[reading_msg("nord", "s1", 0, now_ms() - 1000, 21.4)],
        QoS::AtLeastOnce,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    for (expect, cmd) in examples {
        // Print the status code after the body; keep curl's exit code.
        let probe = cmd.replacen("curl ", "curl -w '\\n%{http_code}' ", 1);
        let out = Command::new("bash")
            .arg("-c")
            .arg(&probe)
            .env("ARNG_API_URL", serve.url())
            .env("ARNG_API_TOKEN", &serve.token)
            .output()
            .expect("bash");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let status: u16 = stdout
            .lines()
            .last()
            .unwrap_or("")
            .trim()
            .parse()
            .unwrap_or(0);
        let streamed = cmd.contains("--max-time") && out.status.code() == Some(28);
        assert!(
            out.status.success() || streamed,
            "{cmd}\nexit {:?}\n{stdout}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        match expect {
            Some(code) => assert_eq!(status, code, "{cmd}\n{stdout}"),
            None => assert!(
                (200..300).contains(&status),
                "{cmd} answered {status}\n{stdout}"
            ),
        }
    }
}
