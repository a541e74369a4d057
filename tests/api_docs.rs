//! Every `curl` example of docs/api.md, run against a live `arng serve` (with real
//! Mosquitto, influxd and ingest behind it). A line `# expect NNN` before a command
//! gives the status it must answer; otherwise 2xx.

mod common;

use std::time::Duration;

use common::chain::{now_ms, publish_all, reading_msg, IngestProc, ServeProc};
use common::influxd::Influxd;
use common::mosquitto::Mosquitto;
use rumqttc::QoS;

#[tokio::test(flavor = "multi_thread")]
async fn every_documented_curl_example_works() {
    let doc = std::fs::read_to_string(common::repo_root().join("docs/api.md")).unwrap();
    let examples = common::curl_examples(&doc);
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

    let env = [
        ("ARNG_API_URL", serve.url()),
        ("ARNG_API_TOKEN", serve.token.clone()),
    ];
    for (expect, cmd) in examples {
        common::check_curl(expect, &cmd, &env);
    }
}
