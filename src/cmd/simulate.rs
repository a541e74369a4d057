//! `arng simulate`: a fleet of simulated temperature/humidity sensors publishing the
//! contract's readings, zone heartbeats, status and alerts, with faults and a
//! heatwave scenario on demand. The simulator is [`crate::sim`]'s; this command checks
//! the options, shows a progress bar on a terminal and prints the summary.
//!
//! Exit 0 when everything was acknowledged, 1 otherwise (a message the broker
//! refused, one left unacknowledged) or when the broker could not be reached within
//! `--connect-timeout`, 2 on bad usage. docs/simulate.md is the
//! user's guide.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tracing::error;

use super::UsageError;
use crate::config::MqttArgs;
use crate::domain::names::parse_zone_list;
use crate::domain::Zone;
use crate::help::heading;
use crate::sim::plan::parse_rate;
use crate::sim::{Fault, Options, Plan, Rate, Scenario};
use crate::units::parse_positive_duration;

#[derive(Debug, clap::Args)]
#[command(next_help_heading = heading::SIMULATE, after_help = EXAMPLES)]
pub struct Args {
    /// Zones to simulate, comma-separated (e.g. nord,sud,est).
    #[arg(long, env = "ARNG_SIM_ZONES", value_parser = parse_zones, value_name = "ZONES")]
    pub zones: ZoneList,

    /// Sensors per zone, named s1, s2... sN.
    #[arg(long, env = "ARNG_SIM_SENSORS_PER_ZONE", default_value_t = 3, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub sensors_per_zone: u32,

    /// Time between two readings of one sensor (humantime: 5s, 200ms, 1m). The
    /// sensors' readings are spread evenly across it.
    #[arg(long, env = "ARNG_SIM_INTERVAL", default_value = "5s", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub interval: Duration,

    /// Publish N readings per sensor, then exit once the broker has acknowledged them
    /// all (QoS 0: once written to the socket).
    #[arg(long, env = "ARNG_SIM_COUNT", value_name = "N", conflicts_with = "duration",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// Publish the readings scheduled within this time (one per sensor per interval),
    /// then exit like --count. Without --count or --duration: run until Ctrl-C/SIGTERM.
    #[arg(long, env = "ARNG_SIM_DURATION", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,

    /// Seed of the signal model (noise, drift): the same seed and options give the
    /// same values. Random when absent; the seed in use is logged.
    #[arg(long, env = "ARNG_SIM_SEED", value_name = "N")]
    pub seed: Option<u64>,

    /// QoS of the readings. Heartbeats are always QoS 0, alerts and status QoS 1. With
    /// MQTT 5 (used when the broker offers it) the broker answers a QoS 1/2 message
    /// it refuses (ACL) with a reason code: the run counts it and exits 1. At QoS 0
    /// the broker never answers, so a refused reading cannot be detected.
    #[arg(long, env = "ARNG_SIM_QOS", default_value_t = 1, value_name = "0|1|2",
          value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,

    /// Publish readings as retained messages.
    #[arg(long, env = "ARNG_SIM_RETAIN")]
    pub retain: bool,

    /// Load generation: target readings per second across all sensors (overrides
    /// --interval: each sensor publishes every sensors/R seconds), or `max` for as
    /// fast as the broker accepts them.
    #[arg(long, env = "ARNG_SIM_RATE", value_parser = parse_rate, value_name = "R|max")]
    pub rate: Option<Rate>,

    /// MQTT connections to spread the sensors over. Default: 1, or one per 50,000
    /// readings/s of target rate (at most 4; `--rate max`: 2).
    #[arg(long, env = "ARNG_SIM_CONNECTIONS", value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub connections: Option<u16>,

    /// Time between two heartbeats of a zone (retained, on entrepot/heartbeat/<zone>).
    #[arg(long, env = "ARNG_SIM_HEARTBEAT_INTERVAL", default_value = "30s", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub heartbeat_interval: Duration,

    /// Inject a fault, KIND:ZONE[/SENSOR]@START[+DURATION] with KIND spike, stuck,
    /// dropout or drift; times relative to the start (e.g. spike:nord/s1@30s,
    /// dropout:sud@1m+20s). Repeatable, or comma-separated. See docs/simulate.md.
    #[arg(long = "fault", env = "ARNG_SIM_FAULTS", value_delimiter = ',', value_name = "SPEC", value_parser = parse_fault)]
    pub faults: Vec<Fault>,

    /// Run a scenario: heatwave:ZONE@START[+DURATION] drives the zone's temperature
    /// above warning at START and above critical 3 intervals later. Repeatable, or
    /// comma-separated.
    #[arg(long = "scenario", env = "ARNG_SIM_SCENARIOS", value_delimiter = ',', value_name = "SPEC", value_parser = parse_scenario)]
    pub scenarios: Vec<Scenario>,

    /// Thresholds document (JSON, the format of GET /thresholds) for `alert_level` and
    /// alerts. Default: the built-in thresholds.
    #[arg(long, env = "ARNG_THRESHOLDS_FILE", value_name = "FILE")]
    pub thresholds: Option<PathBuf>,

    /// Do not publish alerts on entrepot/alerts/<zone>/sensor (`alert_level` stays in every
    /// reading). Implied with per-zone accounts, which may not publish alerts.
    #[arg(long, env = "ARNG_SIM_NO_ALERTS")]
    pub no_alerts: bool,

    /// MQTT client name, also the status topic entrepot/status/<NAME> (last will).
    /// Default: `simulator`, or the account name with per-zone accounts. `{zone}` is
    /// replaced by the zone; with several connections `-1`, `-2`... are appended.
    #[arg(long, env = "ARNG_SIM_CLIENT_ID", value_name = "NAME")]
    pub client_id: Option<String>,

    /// Give up (exit 1) when the broker cannot be reached for this long at start.
    #[arg(long, env = "ARNG_SIM_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub connect_timeout: Duration,

    /// At the end, how long to wait for the broker to acknowledge what was published
    /// (exit 1 if it has not by then).
    #[arg(long, env = "ARNG_SIM_ACK_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub ack_timeout: Duration,

    /// Print a JSON summary on stdout at exit (published per zone, acknowledged,
    /// refused by the broker with the refused topics, alerts, heartbeats, duration,
    /// rate).
    #[arg(long, help_heading = heading::OUTPUT)]
    pub json: bool,

    // Last: these groups set the heading of what follows them (crate::help). A
    // `{zone}` in --mqtt-username (and --mqtt-password) opens one connection per zone
    // with that zone's account (e.g. sensor-{zone}).
    #[command(flatten)]
    pub mqtt: MqttArgs,
}

const EXAMPLES: &str = "\
Examples:
  # Three zones of 3 sensors, a reading every 5 s each, until Ctrl-C
  arng simulate --zones nord,sud,est
  # 10 readings per sensor, then exit once the broker acknowledged them all
  arng simulate --zones nord,sud --count 10 --interval 200ms --seed 42
  # One account per zone (sensor-nord...), a heatwave in sud after 30 s
  arng simulate --zones nord,sud --mqtt-username 'sensor-{zone}' --mqtt-password 'sensor-{zone}-dev' \\
      --scenario heatwave:sud@30s --duration 5m";

/// The validated `--zones` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneList(pub Vec<Zone>);

fn parse_zones(s: &str) -> Result<ZoneList, String> {
    parse_zone_list(s)
        .map(ZoneList)
        .map_err(|e| format!("{e} (expected a comma-separated list such as nord,sud,est)"))
}

fn parse_fault(s: &str) -> Result<Fault, String> {
    s.parse()
}

fn parse_scenario(s: &str) -> Result<Scenario, String> {
    s.parse()
}

fn options(args: Args) -> Options {
    Options {
        mqtt: args.mqtt,
        zones: args.zones.0,
        sensors_per_zone: args.sensors_per_zone,
        interval: args.interval,
        count: args.count,
        duration: args.duration,
        seed: args.seed,
        qos: args.qos,
        retain: args.retain,
        rate: args.rate,
        connections: args.connections,
        heartbeat_interval: args.heartbeat_interval,
        faults: args.faults,
        scenarios: args.scenarios,
        thresholds: args.thresholds,
        no_alerts: args.no_alerts,
        client_id: args.client_id,
        connect_timeout: args.connect_timeout,
        ack_timeout: args.ack_timeout,
    }
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let json = args.json;
    let plan = Plan::new(options(args)).map_err(|e| UsageError(e.to_string()))?;
    let bar = progress_bar(plan.total_readings());
    let outcome = crate::sim::run(plan, bar, crate::shutdown::signal).await?;
    let (summary, failure) = (outcome.summary, outcome.failure);
    if json {
        let mut summary = summary;
        summary["ok"] = failure.is_none().into();
        if let Some(f) = &failure {
            summary["error"] = f.clone().into();
        }
        println!("{summary}");
    } else {
        let refused = if summary["refusals_detectable"] == true {
            format!(", {} refused by the broker", summary["messages_refused"])
        } else {
            format!(
                ", {} refused by the broker (refusals of QoS 0 messages, or over MQTT 3.1.1, cannot be seen)",
                summary["messages_refused"]
            )
        };
        println!(
            "published {} readings, {} alerts, {} heartbeats in {:.1} s ({:.0} readings/s); {} of {} messages acknowledged{refused}",
            summary["readings"],
            summary["alerts"],
            summary["heartbeats"],
            outcome.elapsed.as_secs_f64(),
            summary["readings_per_s"].as_f64().unwrap_or(0.0),
            summary["messages_acked"],
            summary["messages_sent"],
        );
    }
    match failure {
        None => Ok(ExitCode::SUCCESS),
        Some(f) => {
            error!("{f}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Readings produced of the run's total, for a person watching a bounded run on a
/// terminal; hidden in a pipe, a log, CI, or under -q.
fn progress_bar(total: Option<u64>) -> ProgressBar {
    let watched = std::io::stderr().is_terminal() && tracing::enabled!(tracing::Level::INFO);
    let Some(total) = total.filter(|_| watched) else {
        return ProgressBar::hidden();
    };
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("[{bar:30}] {pos}/{len} readings, {msg} {elapsed}")
    {
        bar.set_style(style.progress_chars("#>-"));
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::plan::sensor_index;
    use crate::sim::{FAULT_SYNTAX, SCENARIO_SYNTAX};
    use rumqttc::QoS;

    fn plan(argv: &[&str]) -> Result<Plan, String> {
        let args: Args = crate::cmd::parse_args(argv).map_err(|e| e.to_string())?;
        Plan::new(options(args)).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_rate() {
        let p = plan(&["--zones", "nord,sud,est"]).unwrap();
        assert_eq!(p.total_sensors(), 9);
        assert_eq!(p.interval, Duration::from_secs(5));
        assert_eq!(p.qos, QoS::AtLeastOnce);
        assert_eq!(p.links.len(), 1);
        assert_eq!(p.links[0].client_id, "simulator");
        assert_eq!(p.per_sensor, None);
        // 10,000 sensors at 1 Hz: one connection is enough.
        let p = plan(&[
            "--zones",
            "a,b",
            "--sensors-per-zone",
            "5000",
            "--interval",
            "1s",
        ])
        .unwrap();
        assert_eq!(p.links.len(), 1);
        // --rate overrides the interval: 300 sensors at 60,000/s → 5 ms each.
        let p = plan(&[
            "--zones",
            "a,b,c",
            "--sensors-per-zone",
            "100",
            "--rate",
            "60000",
        ])
        .unwrap();
        assert_eq!(p.interval, Duration::from_millis(5));
        assert_eq!(p.links.len(), 2);
        let covered: usize = p.links.iter().map(|l| l.sensors.len()).sum();
        assert_eq!(covered, 300);
        assert_eq!(p.links[0].sensors, 0..150);
        // More than a reading per sensor and millisecond is refused, by rate or
        // interval (InfluxDB would keep one of them); 1 ms exactly is accepted.
        let e = plan(&[
            "--zones",
            "a,b,c",
            "--sensors-per-zone",
            "10",
            "--rate",
            "60000",
        ])
        .unwrap_err();
        assert_eq!(
            e,
            "--rate: each sensor would publish every 500 µs, more often than once a \
             millisecond (InfluxDB keeps one point per sensor and millisecond): lower the \
             rate or add sensors (at most 1000 readings/s per sensor)"
        );
        let e = plan(&["--zones", "a", "--interval", "900us"]).unwrap_err();
        assert!(
            e.starts_with("--interval: each sensor would publish every 900 µs"),
            "{e}"
        );
        assert!(plan(&["--zones", "a", "--interval", "1ms"]).is_ok());
        assert!(plan(&["--zones", "a", "--rate", "3000", "--sensors-per-zone", "3"]).is_ok());
        assert_eq!(p.links[1].client_id, "simulator-2");
        assert!(p.links[1].heartbeat_zones.is_empty());
        // --duration becomes a count of readings per sensor.
        let p = plan(&["--zones", "a", "--interval", "300ms", "--duration", "1s"]).unwrap();
        assert_eq!(p.per_sensor, Some(4));
        let p = plan(&["--zones", "a", "--rate", "max", "--duration", "1s"]).unwrap();
        assert_eq!(
            (p.paced, p.per_sensor, p.wall_limit),
            (false, None, Some(Duration::from_secs(1)))
        );
    }

    #[test]
    fn per_zone_accounts() {
        let p = plan(&[
            "--zones",
            "nord,sud",
            "--mqtt-username",
            "sensor-{zone}",
            "--mqtt-password",
            "sensor-{zone}-dev",
        ])
        .unwrap();
        assert_eq!(p.links.len(), 2);
        assert_eq!(p.links[1].client_id, "sensor-sud");
        assert_eq!(p.links[1].mqtt.username.as_deref(), Some("sensor-sud"));
        assert_eq!(
            p.links[1].mqtt.password.as_ref().unwrap().expose(),
            "sensor-sud-dev"
        );
        assert_eq!(p.links[1].heartbeat_zones, vec![1]);
        assert!(!p.alerts);
    }

    #[test]
    fn cross_field_mistakes() {
        for (args, needle) in [
            (
                &["--zones", "nord", "--fault", "spike:sud@1s"][..],
                "zone sud is not simulated",
            ),
            (
                &["--zones", "nord", "--fault", "spike:nord/s4@1s"][..],
                "no sensor s4",
            ),
            (
                &["--zones", "nord", "--fault", "spike:nord/temp@1s"][..],
                "no sensor temp",
            ),
            (
                &["--zones", "nord", "--scenario", "heatwave:est@1s"][..],
                "zone est is not simulated",
            ),
            (
                &["--zones", "nord", "--client-id", "Sim"][..],
                "--client-id",
            ),
            (
                &["--zones", "nord", "--client-id", "sim-{zone}"][..],
                "per-zone",
            ),
            (
                &["--zones", "nord", "--thresholds", "/nonexistent.json"][..],
                "--thresholds",
            ),
        ] {
            let e = plan(args).unwrap_err();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
        assert_eq!(
            sensor_index(&crate::domain::SensorId::new("s1").unwrap()),
            Some(0)
        );
        assert_eq!(
            sensor_index(&crate::domain::SensorId::new("s01").unwrap()),
            None
        );
        assert_eq!(
            sensor_index(&crate::domain::SensorId::new("s0").unwrap()),
            None
        );
    }

    #[test]
    fn value_parsers_state_the_syntax() {
        for (args, needle) in [
            (&["--zones", ""][..], "nord,sud,est"),
            (
                &["--zones", "nord", "--interval", "0s"][..],
                "greater than zero",
            ),
            (&["--zones", "nord", "--count", "0"][..], "--count"),
            (
                &["--zones", "nord", "--count", "1", "--duration", "1s"][..],
                "cannot be used",
            ),
            (&["--zones", "nord", "--qos", "3"][..], "--qos"),
            (&["--zones", "nord", "--rate", "fast"][..], "`max`"),
            (
                &["--zones", "nord", "--fault", "boom"][..],
                "KIND:ZONE[/SENSOR]@START[+DURATION]",
            ),
            (
                &["--zones", "nord", "--scenario", "heatwave:nord"][..],
                "heatwave:ZONE@START",
            ),
        ] {
            let e = plan(args).unwrap_err();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
        assert!(FAULT_SYNTAX.contains("spike"));
        assert!(SCENARIO_SYNTAX.contains("heatwave"));
    }
}
