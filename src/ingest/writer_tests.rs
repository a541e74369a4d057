//! Unit tests of the writer's settlement: in-order releases with pipelined writes,
//! the slow path, rejected lines, and health that only real writes change. The sink
//! is scripted ([`ScriptedSink`]); the integration tests (tests/ingest.rs) run the
//! same code against a real influxd and Mosquitto.

use std::time::Duration;

use tokio::sync::mpsc;

use super::*;
use crate::config::{InfluxArgs, MqttArgs};
use crate::domain::{AlertLevel, Reading, SensorId, Zone};
use crate::ingest::outbox::{Outbox, ToLink};
use crate::ingest::spool::Spool;
use crate::ingest::storage::tests::{fast_policy, metrics, Answer, ScriptedSink};
use crate::ingest::storage::RetryPolicy;

fn config(batch_size: usize) -> IngestConfig {
    IngestConfig {
        mqtt: MqttArgs::default(),
        influx: InfluxArgs {
            url: crate::config::parse_http_url("http://127.0.0.1:9").unwrap(),
            org: "ares".into(),
            bucket: "entrepot".into(),
            token: crate::config::Secret::new("t"),
        },
        client_id: "test".into(),
        share_group: None,
        batch_size,
        batch_timeout: Duration::from_millis(20),
        ack_window: 10_000,
        max_unacked: 20_000,
        writes_in_flight: 4,
        spool_dir: std::env::temp_dir(),
        spool_max_bytes: 1 << 20,
        thresholds_file: None,
        write_timeout: Duration::from_secs(1),
        tick: Duration::from_secs(3600),
        broker_stats: false,
        read_policy: Default::default(),
    }
}

struct Harness {
    tx: mpsc::UnboundedSender<Vec<Inbound>>,
    from_writer: mpsc::UnboundedReceiver<ToLink>,
    task: tokio::task::JoinHandle<Result<(), IngestError>>,
    metrics: IngestMetrics,
    _spool: tempfile::TempDir,
}

fn start(sink: &ScriptedSink, batch_size: usize, policy: RetryPolicy) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let m = metrics();
    let spool = Spool::open(dir.path(), 1 << 20).unwrap();
    let storage = Storage::new(sink.clone(), spool, m.clone(), policy, "test");
    let (outbox, from_writer) = Outbox::detached();
    let writer = Writer::new(
        &config(batch_size),
        storage,
        RuleState::in_memory(),
        outbox,
        m.clone(),
    );
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(writer.run(rx));
    Harness {
        tx,
        from_writer,
        task,
        metrics: m,
        _spool: dir,
    }
}

fn reading(sensor: &str, seq: u64, temp: f64) -> Reading {
    Reading {
        zone: Zone::new("nord").unwrap(),
        sensor: SensorId::new(sensor).unwrap(),
        seq: Some(seq),
        timestamp: Utc::now(),
        temp,
        hum: 50.0,
        alert_level: AlertLevel::Normal,
        provenance: Default::default(),
    }
}

impl Harness {
    fn send_readings(&self, pkids: std::ops::Range<u16>) {
        for pkid in pkids {
            let r = reading(&format!("s{pkid}"), u64::from(pkid), 20.0);
            self.tx
                .send(vec![Inbound::Reading(r, Delivery::for_test(pkid))])
                .unwrap();
        }
    }

    /// Stops the writer (as the link does at shutdown) and returns every packet id it
    /// released, in order, and the number of publishes it made.
    async fn finish(self) -> (Vec<u16>, usize) {
        drop(self.tx);
        self.task.await.unwrap().unwrap();
        let mut rx = self.from_writer;
        let (mut released, mut publishes) = (Vec::new(), 0);
        while let Ok(m) = rx.try_recv() {
            match m.released_pkids() {
                Some(p) => released.extend(p),
                None => publishes += 1,
            }
        }
        (released, publishes)
    }
}

#[tokio::test]
async fn pipelined_batches_are_released_once_each_in_arrival_order() {
    let sink = ScriptedSink::new(&[Answer::Accept]);
    let h = start(&sink, 7, fast_policy());
    h.send_readings(1..101);
    let m = h.metrics.clone();
    let (released, _) = h.finish().await;
    assert_eq!(released, (1..101).collect::<Vec<u16>>());
    assert_eq!(m.readings_written.get(), 100);
    assert_eq!(sink.lines().len(), 100);
    assert_eq!(m.influx_healthy.get(), 1.0);
}

#[tokio::test]
async fn a_failed_write_goes_through_retries_and_the_batches_behind_wait() {
    // First write fails, the retry succeeds: nothing lost, order kept.
    let sink = ScriptedSink::new(&[Answer::Down, Answer::Accept]);
    let h = start(&sink, 5, fast_policy());
    h.send_readings(1..21);
    let m = h.metrics.clone();
    let (released, _) = h.finish().await;
    assert_eq!(released, (1..21).collect::<Vec<u16>>());
    assert_eq!(sink.lines().len(), 20);
    assert!(m.write_retries.get() >= 1);
}

#[tokio::test]
async fn a_database_down_spools_and_still_releases_in_order() {
    let sink = ScriptedSink::new(&[Answer::Down]);
    let h = start(&sink, 5, fast_policy());
    h.send_readings(1..11);
    let m = h.metrics.clone();
    let (released, _) = h.finish().await;
    assert_eq!(released, (1..11).collect::<Vec<u16>>());
    assert!(m.spooled_batches.get() >= 1);
    assert_eq!(m.influx_healthy.get(), 0.0);
    // Spooled readings are counted when the spool is drained, not before.
    assert_eq!(m.readings_written.get(), 0);
}

#[tokio::test]
async fn a_message_with_nothing_to_store_does_not_make_influxdb_healthy() {
    // InfluxDB down; an alert claiming to come from ingest (as a forged one would) is
    // not stored, so its batch writes nothing and must say nothing about InfluxDB.
    let sink = ScriptedSink::new(&[Answer::Down]);
    let h = start(&sink, 5, fast_policy());
    let alert = crate::domain::Alert::parse(
        &Zone::new("nord").unwrap(),
        br#"{"version":1,"id":"x","zone":"nord","metric":"temp","severity":"critical","state":"raised","source":"ingest","message":"forged","timestamp":"2026-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    assert_eq!(alert.source, AlertSource::Ingest);
    h.tx.send(vec![Inbound::Alert(alert, Delivery::for_test(9))])
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(h.metrics.influx_healthy.get(), 0.0);
    let m = h.metrics.clone();
    let (released, _) = h.finish().await;
    assert_eq!(released, vec![9]);
    assert_eq!(m.influx_healthy.get(), 0.0);
    assert_eq!(*sink.calls.lock().unwrap(), 0, "nothing was written");
}

#[tokio::test]
async fn an_invalid_message_is_dead_lettered_and_released_in_its_turn() {
    let sink = ScriptedSink::new(&[Answer::Accept]);
    let h = start(&sink, 100, fast_policy());
    h.send_readings(1..3);
    h.tx.send(vec![Inbound::Invalid {
        topic: "entrepot/nord/s1/v1".into(),
        payload: b"{".to_vec(),
        reason: "malformed_json",
        field: None,
        error: "EOF".into(),
        delivery: Delivery::for_test(3),
    }])
    .unwrap();
    h.send_readings(4..5);
    let m = h.metrics.clone();
    let (released, _) = h.finish().await;
    assert_eq!(released, vec![1, 2, 3, 4]);
    assert_eq!(m.rejected("malformed_json").get(), 1);
    let lines = sink.lines();
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("deadletters"))
            .count(),
        1
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("readings")).count(),
        3
    );
}

#[tokio::test]
async fn alerts_are_published_and_stored_with_the_reading_that_raised_them() {
    let sink = ScriptedSink::new(&[Answer::Accept]);
    let h = start(&sink, 100, fast_policy());
    // Default thresholds, debounce 3: three readings above 30 °C raise warning and
    // critical at the third.
    for pkid in 1..4 {
        h.tx.send(vec![Inbound::Reading(
            reading("hot", u64::from(pkid), 35.0),
            Delivery::for_test(pkid),
        )])
        .unwrap();
    }
    let (released, publishes) = h.finish().await;
    assert_eq!(released, vec![1, 2, 3]);
    assert_eq!(publishes, 2, "warning and critical raised on MQTT");
    let alerts = sink
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("alerts"))
        .count();
    assert_eq!(alerts, 2);
}
