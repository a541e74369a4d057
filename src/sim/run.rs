//! A whole run of the simulator, start to end: connect every [`Link`] (giving up
//! after the connect timeout or at once on a refusal), start the generators, the
//! heartbeats and the reporter, stop on `--count`/`--duration` or the first shutdown
//! signal, then publish `offline` (retained), wait until the broker has acknowledged
//! everything (bounded by the ack timeout; a second signal stops waiting) and
//! disconnect cleanly, so the broker does not fire the last will.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use indicatif::ProgressBar;
use rumqttc::QoS;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn, Instrument};

use super::fleet::{heartbeats, Generator, Shared, ZoneStats};
use super::link::{drive, open_link, wait_connected, Link, LinkState};
use super::plan::{human_rate, Plan};
use super::refusals::{failure_line, Refusals};
use super::reporter::{summary, Reporter};
use super::SimError;
use crate::domain::Zone;
use crate::mqtt::dual::ClientError;

/// How long, at the end, clean disconnections may take before tasks are abandoned.
const DISCONNECT_GRACE: Duration = Duration::from_secs(2);

/// How a run ended.
#[derive(Debug)]
pub struct Outcome {
    /// The figures of the run (`--json`'s object, without `ok` and `error`).
    pub summary: serde_json::Value,
    /// Why the run failed (publishing broke, messages refused by the broker or left
    /// unacknowledged), in one line.
    pub failure: Option<String>,
    pub elapsed: Duration,
}

/// Runs `plan` to its end. `bar` follows the readings produced (hidden or not, the
/// caller decides); `shutdown` is called for each awaited stop signal: the first
/// stops publishing, the second stops waiting for acknowledgements.
pub async fn run<S, F>(plan: Plan, bar: ProgressBar, shutdown: S) -> Result<Outcome, SimError>
where
    S: Fn() -> F + Send + 'static,
    F: Future<Output = ()> + Send,
{
    let endpoint = plan.links[0].mqtt.url.to_string();
    let total = plan.total_sensors();
    let zone_list: Vec<&str> = plan.zones.iter().map(Zone::as_str).collect();
    let pace = if plan.paced {
        format!(
            "every {} per sensor ({} readings/s)",
            humantime::format_duration(plan.interval),
            human_rate(total as f64 / plan.interval.as_secs_f64())
        )
    } else {
        "as fast as the broker accepts".to_owned()
    };
    info!(
        seed = plan.seed,
        "simulating {total} sensors ({} per zone in {}) {pace}, QoS {}, {} connection(s) to {endpoint} as {}",
        plan.per_zone,
        zone_list.join(", "),
        plan.qos as u8,
        plan.links.len(),
        plan.links
            .iter()
            .map(|l| l.client_id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for f in &plan.faults {
        info!("fault scheduled: {f}");
    }
    for s in &plan.scenarios {
        info!("scenario scheduled: {s}");
    }
    if !plan.alerts {
        info!("alerts on entrepot/alerts/<zone>/sensor are off (--no-alerts or per-zone accounts)");
    }

    // Ctrl-C/SIGTERM: the first stops publishing, the second stops waiting for acks.
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let (give_up_tx, mut give_up_rx) = watch::channel(false);
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let signals = tokio::spawn({
        let stop_tx = stop_tx.clone();
        let interrupted = interrupted.clone();
        async move {
            shutdown().await;
            interrupted.store(true, Relaxed);
            info!("signal received: stopping, then waiting for acknowledgements (signal again to skip)");
            stop_tx.send_replace(true);
            shutdown().await;
            warn!("second signal: not waiting for acknowledgements");
            give_up_tx.send_replace(true);
        }
    });

    let mut links = Vec::new();
    let mut drivers: Vec<JoinHandle<()>> = Vec::new();
    for lp in &plan.links {
        let (link, eventloop) = open_link(lp, plan.connect_timeout);
        let span = tracing::info_span!("mqtt", client = %lp.client_id);
        drivers.push(tokio::spawn(
            drive(link.clone(), eventloop, endpoint.clone()).instrument(span),
        ));
        links.push(link);
    }
    if let Err(e) = wait_connected(&links, &endpoint, plan.connect_timeout, &mut stop_rx).await {
        for d in &drivers {
            d.abort();
        }
        signals.abort();
        return Err(e);
    }

    let started = Instant::now();
    let shared = Arc::new(Shared {
        zones: plan.zones.clone(),
        stats: plan.zones.iter().map(|_| ZoneStats::default()).collect(),
        thresholds: plan.thresholds.clone(),
        qos: plan.qos,
        retain: plan.retain,
        alerts: plan.alerts,
        interval: plan.interval,
        paced: plan.paced,
        per_sensor: plan.per_sensor,
        wall_limit: plan.wall_limit,
        t0: started,
        slipped_ns: AtomicU64::new(0),
    });
    let generators: Vec<JoinHandle<Result<(), ClientError>>> = plan
        .links
        .iter()
        .zip(&links)
        .map(|(lp, link)| {
            let g = Generator::new(&plan, lp, link.clone(), shared.clone());
            tokio::spawn(g.run(stop_rx.clone()))
        })
        .collect();
    let routes: Vec<(usize, Arc<Link>)> = plan
        .links
        .iter()
        .zip(&links)
        .flat_map(|(lp, link)| lp.heartbeat_zones.iter().map(|z| (*z, link.clone())))
        .collect();
    let beats = tokio::spawn(heartbeats(
        routes,
        shared.clone(),
        u64::from(plan.per_zone),
        plan.heartbeat_interval,
        stop_rx.clone(),
    ));
    let reporter = Reporter {
        shared: shared.clone(),
        links: links.clone(),
        per_sensor: plan.per_sensor,
        bar,
        logged_cycles: 0,
        last_sent: 0,
        last_at: started,
    };
    let reporter = tokio::spawn(reporter.run(stop_rx.clone()));

    let mut failure: Option<String> = None;
    for g in generators {
        match g.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = Some(format!("publishing failed: {e}")),
            Err(e) => failure = Some(format!("a generator task failed: {e}")),
        }
    }
    let generated = started.elapsed();
    stop_tx.send_replace(true);
    let _ = beats.await;
    let _ = reporter.await;

    let unacked = finish_links(
        &links,
        &mut drivers,
        plan.ack_timeout,
        &mut give_up_rx,
        started + generated,
    )
    .await;
    signals.abort();
    let elapsed = started.elapsed();

    let summary = summary(
        &plan,
        &shared,
        &links,
        elapsed,
        unacked,
        interrupted.load(Relaxed),
    );
    let refusals: Vec<_> = links.iter().map(|l| l.refusals()).collect();
    let per_account: Vec<(&str, &Refusals)> = links
        .iter()
        .zip(&refusals)
        .map(|(l, r)| (l.account(), r))
        .collect();
    if let Some(line) = failure_line(&per_account) {
        failure.get_or_insert(line);
    }
    if unacked > 0 {
        let why = if *give_up_rx.borrow() {
            "(stopped waiting on a second signal)".to_owned()
        } else {
            format!("within {}", humantime::format_duration(plan.ack_timeout))
        };
        failure.get_or_insert(format!(
            "{unacked} message(s) not acknowledged by the broker {why}"
        ));
    }
    let readings = summary["readings"].as_u64().unwrap_or(0);
    info!(
        readings,
        alerts = summary["alerts"].as_u64().unwrap_or(0),
        heartbeats = summary["heartbeats"].as_u64().unwrap_or(0),
        unacked,
        refused = summary["messages_refused"].as_u64().unwrap_or(0),
        "done in {:.2}s",
        elapsed.as_secs_f64()
    );
    Ok(Outcome {
        summary,
        failure,
        elapsed,
    })
}

/// The clean end of a run: say `offline` ourselves (a clean DISCONNECT does not fire
/// the will), wait until the broker acknowledged everything (bounded by
/// `ack_timeout`, cut short by a second signal), disconnect the connections that are
/// up, and stop the drivers. Returns how many messages stayed unacknowledged.
async fn finish_links(
    links: &[Arc<Link>],
    drivers: &mut [JoinHandle<()>],
    ack_timeout: Duration,
    give_up_rx: &mut watch::Receiver<bool>,
    generated: Instant,
) -> u64 {
    let deadline = Instant::now() + ack_timeout;
    for link in links {
        let offline = link.publish(link.status_topic.clone(), QoS::AtLeastOnce, true, "offline");
        // Bounded: with the broker gone and the queue full, this could wait forever.
        tokio::select! {
            _ = tokio::time::timeout_at(deadline, offline) => {}
            _ = give_up_rx.wait_for(|g| *g) => {}
        }
    }
    let mut announced = false;
    loop {
        let unacked: u64 = links.iter().map(|l| l.unacked()).sum();
        if unacked == 0 || Instant::now() >= deadline || *give_up_rx.borrow() {
            break;
        }
        if !announced && Instant::now() > generated + Duration::from_secs(1) {
            info!(unacked, "waiting for the broker to acknowledge");
            announced = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            _ = give_up_rx.changed() => {}
        }
    }
    let unacked: u64 = links.iter().map(|l| l.unacked()).sum();
    // A clean DISCONNECT where the broker is there to receive it; a connection that
    // is down has nothing to say goodbye to.
    let grace = tokio::time::sleep(DISCONNECT_GRACE);
    tokio::pin!(grace);
    for (link, d) in links.iter().zip(drivers.iter_mut()) {
        let connected = *link.state.borrow() == LinkState::Connected;
        if connected && link.client.try_disconnect().is_ok() {
            tokio::select! {
                _ = &mut *d => {}
                _ = &mut grace => {}
            }
        }
    }
    for d in drivers.iter() {
        d.abort();
    }
    unacked
}
