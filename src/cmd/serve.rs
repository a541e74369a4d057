//! `arng serve`: the REST API and the live dashboard. Runs until SIGTERM or Ctrl-C.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use axum::http::HeaderValue;
use tracing::info;

use crate::api::{self, ApiOptions, AppState};
use crate::config::{Backends, Secret};
use crate::help::heading;
use crate::metrics::Registry;
use crate::store::InfluxClient;
use crate::units::parse_positive_duration;

#[derive(Debug, clap::Args)]
#[command(next_help_heading = heading::SERVE, after_help = EXAMPLES)]
pub struct Args {
    /// TCP port to listen on.
    #[arg(long, env = "ARNG_API_PORT", default_value_t = 8000)]
    pub port: u16,

    /// Address to listen on (0.0.0.0 to accept other hosts, as in docker-compose).
    #[arg(
        long,
        env = "ARNG_API_BIND",
        default_value = "127.0.0.1",
        value_name = "IP"
    )]
    pub bind: IpAddr,

    /// Bearer token required by write routes (PUT /thresholds, POST /alerts). Without
    /// it, write routes answer 403.
    #[arg(long, env = "ARNG_API_TOKEN", hide_env_values = true, value_name = "TOKEN", value_parser = parse_token)]
    pub api_token: Option<Secret>,

    /// Require the token on read routes too (all but /health and /ready).
    #[arg(long, env = "ARNG_API_PROTECT_READS", requires = "api_token")]
    pub protect_reads: bool,

    /// Origins allowed to call the API from a browser (CORS), comma-separated, e.g.
    /// http://grafana.local:3000. Default: same origin only.
    #[arg(long, env = "ARNG_CORS_ORIGINS", value_delimiter = ',', value_parser = parse_origin, value_name = "ORIGIN")]
    pub cors_origin: Vec<HeaderValue>,

    /// Longest time a request may take before a 503.
    #[arg(long, env = "ARNG_API_REQUEST_TIMEOUT", default_value = "15s", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub request_timeout: Duration,

    /// How often the InfluxDB side of the live view is refreshed.
    #[arg(long, env = "ARNG_API_INFLUX_REFRESH", default_value = "1s", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub influx_refresh: Duration,

    /// How far back the live view looks for each sensor's last point.
    #[arg(long, env = "ARNG_API_LOOKBACK", default_value = "24h", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub lookback: Duration,

    // Last: these groups set the heading of what follows them (crate::help). A new
    // option of serve goes above.
    #[command(flatten)]
    pub backends: Backends,
}

const EXAMPLES: &str = "\
Examples:
  # The reference stack's api account; the dashboard on http://127.0.0.1:8000/
  ARNG_MQTT_USERNAME=api ARNG_MQTT_PASSWORD=api-dev arng serve --api-token change-me-dev-token
  # Reachable from other hosts, and from a Grafana on another origin
  arng serve --bind 0.0.0.0 --port 8080 --cors-origin http://grafana.local:3000
  # Every route but /health and /ready needs the token
  arng serve --api-token change-me-dev-token --protect-reads";

fn parse_token(s: &str) -> Result<Secret, String> {
    if s.len() < 8 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("at least 8 characters, no spaces".into());
    }
    Ok(Secret::new(s))
}

fn parse_origin(s: &str) -> Result<HeaderValue, String> {
    let url = crate::config::parse_http_url(s)?;
    let origin = url.origin().ascii_serialization();
    HeaderValue::from_str(&origin).map_err(|e| e.to_string())
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let addr = SocketAddr::new(args.bind, args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (choose another --port)"))?;
    let options = ApiOptions {
        token: args.api_token,
        protect_reads: args.protect_reads,
        cors_origins: args.cors_origin,
        request_timeout: args.request_timeout,
        lookback: args.lookback,
    };
    let mqtt = args.backends.mqtt.clone();
    let (client, eventloop) = api::feed::mqtt_client(&args.backends.mqtt);
    let state = AppState::new(
        InfluxClient::new(&args.backends.influx),
        client.clone(),
        options,
        Registry::new(),
    );
    let feed = tokio::spawn(api::feed::run_mqtt(state.clone(), client, eventloop));
    tokio::spawn(api::feed::run_influx_refresh(
        state.clone(),
        args.influx_refresh,
        args.lookback,
    ));
    tokio::spawn(api::supervise::run(state.clone(), api::supervise::INTERVAL));
    info!(%addr, broker = %args.backends.mqtt.url, influx = %args.backends.influx.url, "API on http://{addr} (docs: /docs)");
    // A broker that refuses the login for good ends serve with the reason (exit 1),
    // rather than an API that stays up without its live feed.
    tokio::select! {
        served = api::serve(listener, state, crate::shutdown::signal()) => {
            served.context("API server failed")?;
        }
        refused = feed => {
            let e = refused.context("the MQTT task failed")?;
            return Err(match crate::mqtt::permanent_failure(&mqtt, &e) {
                Some(refusal) => refusal.into(),
                None => anyhow::Error::from(e),
            });
        }
    }
    info!("API stopped");
    Ok(ExitCode::SUCCESS)
}
