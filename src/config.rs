//! Configuration shared by every subcommand: where the broker, InfluxDB and the API are,
//! and with which credentials.
//!
//! Each option is a flag with an environment variable and a default equal to the
//! reference stack (`docker-compose.yml`, `scripts/services.sh`). The names are part of
//! the public contract (`docs/configuration.md`). Values are checked while the command
//! line is parsed, so a bad value stops the program with exit code 2 and a one-line
//! reason before anything connects. Secrets are wrapped in [`Secret`], whose `Debug`
//! and `Display` print `***`, and are never shown in `--help`.
//!
//! TLS files (`--mqtt-ca`, `--mqtt-cert`, `--mqtt-key`) are read and checked while
//! parsing too: each must be readable PEM of the right kind, the certificate and key
//! come together and must match, and they need an `mqtts://` URL (given with
//! `mqtt://` they are refused rather than ignored, so nobody believes a cleartext
//! connection is protected).

use std::fmt;

use clap::error::ErrorKind;
use clap::{ArgMatches, Args, FromArgMatches};
use url::Url;

use crate::help::heading;
use crate::tls::{parse_certificate_file, parse_key_file, MqttTls, PemFile};

/// A password or token. Printing it (`{}` or `{:?}`) shows `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where and how to reach the MQTT broker, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttEndpoint {
    pub host: String,
    pub port: u16,
    /// `mqtts://`: TLS to the broker.
    pub tls: bool,
}

impl fmt::Display for MqttEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

/// Parses `mqtt://host[:port]` or `mqtts://host[:port]` (also `tcp://`, as the Paho
/// clients spell it). Credentials belong in their own options, not in the URL, so
/// that they never end up in a log line that prints the URL.
pub fn parse_mqtt_url(s: &str) -> Result<MqttEndpoint, String> {
    let url = Url::parse(s).map_err(|e| format!("{e} (expected mqtt://host:port)"))?;
    let tls = match url.scheme() {
        "mqtt" | "tcp" => false,
        "mqtts" | "ssl" => true,
        other => {
            return Err(format!(
                "unsupported scheme {other:?} (expected mqtt:// or mqtts://)"
            ))
        }
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err("put credentials in --mqtt-username/--mqtt-password, not in the URL".into());
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("missing host (expected mqtt://host:port)")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err("an MQTT URL has no path, query or fragment".into());
    }
    let port = url.port().unwrap_or(if tls { 8883 } else { 1883 });
    if port == 0 {
        return Err("port 0 is not a valid broker port".into());
    }
    Ok(MqttEndpoint { host, port, tls })
}

/// Parses an `http://` or `https://` base URL (InfluxDB, the arng API).
pub fn parse_http_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("{e} (expected http://host:port)"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "unsupported scheme {:?} (expected http:// or https://)",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("missing host".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("a base URL has no query or fragment".into());
    }
    Ok(url)
}

/// A zone name as the contract allows it (lowercase ASCII letters, digits, `_`, `-`).
pub fn parse_zone(s: &str) -> Result<crate::domain::Zone, String> {
    crate::domain::Zone::new(s).map_err(|e| e.to_string())
}

fn parse_non_empty(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        Err("must not be empty".into())
    } else if s.chars().any(char::is_control) {
        Err("must not contain control characters".into())
    } else {
        Ok(s.to_owned())
    }
}

fn parse_secret(s: &str) -> Result<Secret, String> {
    parse_non_empty(s).map(Secret)
}

/// MQTT connection options, shared by every subcommand that talks to the broker.
///
/// On the command line this is [`MqttFlags`], checked as a whole (TLS files against
/// the URL scheme, certificate against key) when clap builds it.
#[derive(Debug, Clone)]
pub struct MqttArgs {
    /// Where the broker is; `tls` is on for `mqtts://`.
    pub url: MqttEndpoint,
    /// Broker account name.
    pub username: Option<String>,
    /// Broker account password.
    pub password: Option<Secret>,
    /// What a TLS connection trusts and presents (used only with `mqtts://`).
    pub tls: MqttTls,
}

impl Default for MqttArgs {
    /// The reference stack's broker (`mqtt://localhost:1883`), no account, no TLS.
    fn default() -> Self {
        MqttArgs {
            url: parse_mqtt_url("mqtt://localhost:1883").expect("a valid default URL"),
            username: None,
            password: None,
            tls: MqttTls::default(),
        }
    }
}

/// The MQTT options as clap parses them, each checked on its own; [`MqttArgs`] is
/// built from them once the checks across options pass.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "MQTT broker")]
pub struct MqttFlags {
    /// Broker URL: mqtt://host:port, or mqtts://host:port for TLS.
    #[arg(id = "mqtt_url", long = "mqtt-url", env = "ARNG_MQTT_URL", default_value = "mqtt://localhost:1883",
          value_parser = parse_mqtt_url, value_name = "URL")]
    url: MqttEndpoint,

    /// Broker account name (the broker refuses anonymous clients).
    #[arg(id = "mqtt_username", long = "mqtt-username", env = "ARNG_MQTT_USERNAME", value_parser = parse_non_empty,
          value_name = "NAME")]
    username: Option<String>,

    /// Broker account password (prefer the environment variable: command lines are
    /// visible to other users of the machine).
    #[arg(id = "mqtt_password", long = "mqtt-password", env = "ARNG_MQTT_PASSWORD", hide_env_values = true,
          value_parser = parse_secret, value_name = "PASSWORD", requires = "mqtt_username")]
    password: Option<Secret>,

    /// CA certificate(s), PEM, that signed the broker's certificate (mqtts:// only).
    /// Without it, the system's trusted CAs are used.
    #[arg(id = "mqtt_ca", long = "mqtt-ca", env = "ARNG_MQTT_CA", value_parser = parse_certificate_file,
          value_name = "FILE")]
    ca: Option<PemFile>,

    /// Client certificate, PEM, for a broker that requires one (mutual TLS, mqtts://
    /// only); needs --mqtt-key.
    #[arg(id = "mqtt_cert", long = "mqtt-cert", env = "ARNG_MQTT_CERT", value_parser = parse_certificate_file,
          value_name = "FILE", requires = "mqtt_key")]
    cert: Option<PemFile>,

    /// Private key, PEM, of --mqtt-cert.
    #[arg(id = "mqtt_key", long = "mqtt-key", env = "ARNG_MQTT_KEY", value_parser = parse_key_file,
          value_name = "FILE", requires = "mqtt_cert")]
    key: Option<PemFile>,
}

impl TryFrom<MqttFlags> for MqttArgs {
    type Error = String;

    fn try_from(f: MqttFlags) -> Result<MqttArgs, String> {
        let any_tls_file = f.ca.is_some() || f.cert.is_some() || f.key.is_some();
        if any_tls_file && !f.url.tls {
            return Err(format!(
                "--mqtt-ca, --mqtt-cert and --mqtt-key need a TLS broker URL (mqtts://host:port), \
                 not {}",
                f.url
            ));
        }
        let tls = if f.url.tls {
            let identity = f.cert.as_ref().zip(f.key.as_ref());
            MqttTls::from_files(f.ca.as_ref(), identity).map_err(|e| e.to_string())?
        } else {
            MqttTls::default()
        };
        Ok(MqttArgs {
            url: f.url,
            username: f.username,
            password: f.password,
            tls,
        })
    }
}

// clap derives these for MqttFlags; MqttArgs delegates to them and adds the checks
// across options, whose failure is a usage error like any other (exit 2, one line).
impl FromArgMatches for MqttArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        Self::from_arg_matches_mut(&mut matches.clone())
    }

    fn from_arg_matches_mut(matches: &mut ArgMatches) -> Result<Self, clap::Error> {
        let flags = MqttFlags::from_arg_matches_mut(matches)?;
        MqttArgs::try_from(flags).map_err(|why| clap::Error::raw(ErrorKind::ArgumentConflict, why))
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for MqttArgs {
    fn group_id() -> Option<clap::Id> {
        MqttFlags::group_id()
    }

    fn augment_args(cmd: clap::Command) -> clap::Command {
        MqttFlags::augment_args(cmd)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        MqttFlags::augment_args_for_update(cmd)
    }
}

/// InfluxDB 2 connection options, named as the official `influx` CLI and Telegraf
/// name them so that users' environments carry over.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "InfluxDB")]
pub struct InfluxArgs {
    /// InfluxDB base URL.
    #[arg(id = "influx_url", long = "influx-url", env = "INFLUX_URL", default_value = "http://localhost:8086",
          value_parser = parse_http_url, value_name = "URL")]
    pub url: Url,

    /// Organization.
    #[arg(id = "influx_org", long = "influx-org", env = "INFLUX_ORG", default_value = "ares",
          value_parser = parse_non_empty, value_name = "ORG")]
    pub org: String,

    /// Bucket for readings, heartbeats and alerts.
    #[arg(id = "influx_bucket", long = "influx-bucket", env = "INFLUX_BUCKET", default_value = "entrepot",
          value_parser = parse_non_empty, value_name = "BUCKET")]
    pub bucket: String,

    /// API token (defaults to the reference stack's development token).
    #[arg(id = "influx_token", long = "influx-token", env = "INFLUX_TOKEN", default_value = "dev-token",
          hide_default_value = true, hide_env_values = true, value_parser = parse_secret,
          value_name = "TOKEN")]
    pub token: Secret,
}

/// Where the arng REST API (`arng serve`) is, for the commands that are its clients
/// (`arng check-e2e`, `arng latency`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "arng API")]
pub struct ApiArgs {
    /// Base URL of the API (`arng serve`).
    #[arg(id = "api_url", long = "api-url", env = "ARNG_API_URL", default_value = "http://localhost:8000",
          value_parser = parse_http_url, value_name = "URL")]
    pub url: Url,

    /// Bearer token of the API; needed only when it protects reads
    /// (`arng serve --protect-reads`).
    #[arg(id = "api_token", long = "api-token", env = "ARNG_API_TOKEN", hide_env_values = true,
          value_parser = parse_secret, value_name = "TOKEN")]
    pub token: Option<Secret>,
}

/// The REST API `arng check-lab` checks: a team's, not necessarily `arng serve`.
/// The flags and variables of [`ApiArgs`] (the contract names them once for every
/// client of an API), listed under [`heading::TEAM_API`] with words about that API.
#[derive(Debug, Clone)]
pub struct TeamApiArgs(pub ApiArgs);

impl TeamApiArgs {
    fn reword(cmd: clap::Command) -> clap::Command {
        cmd.mut_arg("api_url", |a| {
            a.help("Base URL of the team's REST API, the one checked")
                .help_heading(heading::TEAM_API)
        })
        .mut_arg("api_token", |a| {
            a.help(
                "Bearer token sent with every request to the team's API, if it wants one \
                 (arng serve does for POST /alerts)",
            )
            .help_heading(heading::TEAM_API)
        })
        .next_help_heading(heading::TEAM_API)
    }
}

impl FromArgMatches for TeamApiArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        ApiArgs::from_arg_matches(matches).map(TeamApiArgs)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(matches)
    }
}

impl Args for TeamApiArgs {
    fn group_id() -> Option<clap::Id> {
        ApiArgs::group_id()
    }

    fn augment_args(cmd: clap::Command) -> clap::Command {
        Self::reword(ApiArgs::augment_args(cmd))
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::reword(ApiArgs::augment_args_for_update(cmd))
    }
}

/// The broker and InfluxDB: what `ingest`, `serve` and `doctor` connect to, and the
/// team's broker and InfluxDB of `check-lab`.
#[derive(Debug, Clone, Args)]
pub struct Backends {
    #[command(flatten)]
    pub mqtt: MqttArgs,

    #[command(flatten)]
    pub influx: InfluxArgs,
}

/// The whole chain as its clients see it (`check-e2e`, `latency`): the broker,
/// InfluxDB and the arng API.
#[derive(Debug, Clone, Args)]
pub struct Chain {
    #[command(flatten)]
    pub mqtt: MqttArgs,

    #[command(flatten)]
    pub influx: InfluxArgs,

    #[command(flatten)]
    pub api: ApiArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct T {
        #[command(flatten)]
        mqtt: MqttArgs,
        #[command(flatten)]
        influx: InfluxArgs,
        #[command(flatten)]
        api: ApiArgs,
    }

    #[test]
    fn mqtt_urls() {
        let e = parse_mqtt_url("mqtt://localhost:1883").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.tls), ("localhost", 1883, false));
        assert_eq!(parse_mqtt_url("mqtts://broker").unwrap().port, 8883);
        assert_eq!(parse_mqtt_url("tcp://127.0.0.1").unwrap().port, 1883);
        assert_eq!(parse_mqtt_url("mqtt://[::1]:1884").unwrap().host, "::1");
        assert!(parse_mqtt_url("http://x").unwrap_err().contains("scheme"));
        assert!(parse_mqtt_url("localhost:1883").is_err());
        assert!(parse_mqtt_url("mqtt://u:p@host")
            .unwrap_err()
            .contains("credentials"));
        assert!(parse_mqtt_url("mqtt://host:99999").is_err());
        assert!(parse_mqtt_url("mqtt://host/path").is_err());
        assert!(parse_mqtt_url("mqtt://host:0").is_err());
    }

    #[test]
    fn http_urls() {
        assert!(parse_http_url("http://localhost:8086").is_ok());
        assert!(parse_http_url("ftp://x").unwrap_err().contains("scheme"));
        assert!(parse_http_url("localhost:8086").is_err());
    }

    #[test]
    fn defaults_match_the_reference_stack() {
        let t = T::try_parse_from(["t"]).unwrap();
        assert_eq!(t.mqtt.url.to_string(), "mqtt://localhost:1883");
        assert_eq!(t.influx.url.as_str(), "http://localhost:8086/");
        assert_eq!(t.influx.org, "ares");
        assert_eq!(t.influx.bucket, "entrepot");
        assert_eq!(t.influx.token.expose(), "dev-token");
        assert_eq!(t.api.url.as_str(), "http://localhost:8000/");
        assert!(t.api.token.is_none());
    }

    #[test]
    fn secrets_stay_hidden() {
        let t = T::try_parse_from([
            "t",
            "--mqtt-username",
            "u",
            "--mqtt-password",
            "hunter2",
            "--influx-token",
            "tok-123",
            "--api-token",
            "api-secret-9",
        ])
        .unwrap();
        let dbg = format!("{t:?}");
        assert!(
            !dbg.contains("hunter2") && !dbg.contains("tok-123") && !dbg.contains("api-secret-9"),
            "{dbg}"
        );
        assert_eq!(
            t.api.token.as_ref().map(Secret::expose),
            Some("api-secret-9")
        );
        use clap::CommandFactory;
        let help = T::command().render_long_help().to_string();
        assert!(!help.contains("dev-token"), "{help}");
    }

    #[test]
    fn tls_is_off_by_default_and_needs_mqtts() {
        let t = T::try_parse_from(["t"]).unwrap();
        assert!(t.mqtt.tls.ca().is_none() && t.mqtt.tls.client_cert().is_none());
        let t = T::try_parse_from(["t", "--mqtt-url", "mqtts://broker"]).unwrap();
        assert!(t.mqtt.url.tls && t.mqtt.tls.ca().is_none());
    }

    #[test]
    fn tls_files_are_read_while_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not PEM at all\n").unwrap();
        let junk = junk.to_str().unwrap();
        let missing = dir.path().join("missing.pem");
        let missing = missing.to_str().unwrap();
        for (args, why) in [
            (vec!["--mqtt-ca", missing], "cannot read the file"),
            (vec!["--mqtt-ca", junk], "no PEM certificate"),
            (vec!["--mqtt-cert", junk, "--mqtt-key", junk], "no PEM"),
            (vec!["--mqtt-ca", ""], "must not be empty"),
        ] {
            let argv = ["t", "--mqtt-url", "mqtts://broker"]
                .into_iter()
                .chain(args.clone());
            let err = T::try_parse_from(argv).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
            assert!(err.to_string().contains(why), "{args:?}: {err}");
        }
        // One of the pair alone is a usage error, whatever the files hold.
        for flag in ["--mqtt-cert", "--mqtt-key"] {
            let err = T::try_parse_from(["t", "--mqtt-url", "mqtts://b", flag, junk]).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{flag}");
        }
    }

    #[test]
    fn bad_values_fail_at_parse_time() {
        for args in [
            vec!["t", "--mqtt-url", "nope"],
            vec!["t", "--influx-url", "mqtt://x"],
            vec!["t", "--influx-org", ""],
            vec!["t", "--influx-token", " "],
            vec!["t", "--mqtt-password", "p"],
            vec!["t", "--api-url", "mqtt://x"],
            vec!["t", "--api-url", "localhost:8000"],
            vec!["t", "--api-token", ""],
        ] {
            let err = T::try_parse_from(&args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }
}
