//! The InfluxDB 2 edge: writes (line protocol, gzip, explicit precision), Flux queries
//! (annotated CSV), health and readiness, and first-time setup.
//!
//! A small client of our own over reqwest rather than the `influxdb2` crate: the
//! reasons and the evidence are in docs/decisions.md. Errors are classified so that
//! callers can decide what to do with a failed write: retry it later (timeouts,
//! connection errors, 429, 5xx), split it (413), or dead-letter it (other 4xx).

pub mod csv;

use std::io::Write as _;
use std::time::Duration;

use flate2::write::GzEncoder;
use flate2::Compression;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::config::{InfluxArgs, Secret};
use crate::domain::line_protocol::{encode_batch, Point};
use crate::domain::schema::WRITE_PRECISION;

pub use self::csv::{Record, Value};

/// Bodies smaller than this are sent uncompressed: gzip costs more than it saves.
const GZIP_MIN_BYTES: usize = 1024;

/// What went wrong talking to InfluxDB.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot reach InfluxDB at {url}: {message}")]
    Unreachable {
        url: String,
        message: String,
        /// Refused, DNS, TLS or other: what a check reports as the cause.
        transport: crate::net::Transport,
    },
    #[error("InfluxDB did not answer within {0:?}")]
    Timeout(Duration),
    #[error("InfluxDB refused the token (HTTP {status}): {message}")]
    Unauthorized { status: u16, message: String },
    #[error("InfluxDB: not found (HTTP 404): {0}")]
    NotFound(String),
    #[error("InfluxDB: request too large (HTTP 413): {0}")]
    TooLarge(String),
    #[error("InfluxDB rejected the data (HTTP {status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("InfluxDB is overloaded or failing (HTTP {status}): {message}")]
    Unavailable {
        status: u16,
        message: String,
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    #[error(transparent)]
    Csv(#[from] csv::CsvError),
    #[error("unexpected answer from InfluxDB: {0}")]
    Protocol(String),
}

impl StoreError {
    /// Worth retrying the same request later (the server or network is the problem,
    /// not the request).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Unreachable { .. }
                | StoreError::Timeout(_)
                | StoreError::Unavailable { .. }
        )
    }

    /// A short, stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Unreachable { .. } => "unreachable",
            StoreError::Timeout(_) => "timeout",
            StoreError::Unauthorized { .. } => "unauthorized",
            StoreError::NotFound(_) => "not_found",
            StoreError::TooLarge(_) => "too_large",
            StoreError::Rejected { .. } => "rejected",
            StoreError::Unavailable { .. } => "unavailable",
            StoreError::Csv(_) => "csv",
            StoreError::Protocol(_) => "protocol",
        }
    }
}

/// `GET /health` answer.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Health {
    pub status: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// First-time setup (`POST /api/v2/setup`) parameters.
#[derive(Debug, Clone)]
pub struct Setup {
    pub username: String,
    pub password: Secret,
    pub org: String,
    pub bucket: String,
    pub token: Secret,
    /// 0 keeps data forever.
    pub retention: Duration,
}

/// What [`InfluxClient::setup`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupOutcome {
    Created,
    AlreadySetUp,
}

/// An InfluxDB 2 client bound to one org and bucket.
#[derive(Debug, Clone)]
pub struct InfluxClient {
    http: reqwest::Client,
    base: Url,
    org: String,
    bucket: String,
    token: Secret,
    timeout: Duration,
}

impl InfluxClient {
    pub fn new(args: &InfluxArgs) -> InfluxClient {
        InfluxClient::with_timeout(args, Duration::from_secs(10))
    }

    pub fn with_timeout(args: &InfluxArgs, timeout: Duration) -> InfluxClient {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(8)
            .user_agent(concat!("arng/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("static reqwest configuration is valid");
        let mut base = args.url.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        InfluxClient {
            http,
            base,
            org: args.org.clone(),
            bucket: args.bucket.clone(),
            token: args.token.clone(),
            timeout,
        }
    }

    pub fn org(&self) -> &str {
        &self.org
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn url(&self, path: &str) -> Url {
        self.base
            .join(path)
            .expect("static API paths join onto a valid base")
    }

    fn auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        rb.header("Authorization", format!("Token {}", self.token.expose()))
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<reqwest::Response, StoreError> {
        let resp = rb.send().await.map_err(|e| self.transport_error(e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = resp.text().await.unwrap_or_default();
        Err(status_error(status, &text, retry_after))
    }

    fn transport_error(&self, e: reqwest::Error) -> StoreError {
        if e.is_timeout() {
            StoreError::Timeout(self.timeout)
        } else {
            let (transport, message) = crate::net::transport_failure(&e);
            StoreError::Unreachable {
                url: self.base.to_string(),
                message,
                transport,
            }
        }
    }

    /// `GET /health`: answers even before setup and without a token.
    pub async fn health(&self) -> Result<Health, StoreError> {
        let resp = self
            .http
            .get(self.url("health"))
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        // /health answers 503 with a JSON body when unhealthy: read it either way.
        let status = resp.status();
        let text = resp.text().await.map_err(|e| self.transport_error(e))?;
        serde_json::from_str(&text).map_err(|_| {
            StoreError::Protocol(format!(
                "/health answered HTTP {status}: {}",
                shorten(&text)
            ))
        })
    }

    /// `GET /ready`: true once the server can serve queries and writes.
    pub async fn ready(&self) -> Result<bool, StoreError> {
        let resp = self
            .http
            .get(self.url("ready"))
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        Ok(resp.status().is_success())
    }

    /// Performs first-time setup unless the server already has it.
    pub async fn setup(&self, setup: &Setup) -> Result<SetupOutcome, StoreError> {
        #[derive(Deserialize)]
        struct Allowed {
            allowed: bool,
        }
        let allowed: Allowed = self
            .send(self.http.get(self.url("api/v2/setup")))
            .await?
            .json()
            .await
            .map_err(|e| StoreError::Protocol(format!("GET /api/v2/setup: {e}")))?;
        if !allowed.allowed {
            return Ok(SetupOutcome::AlreadySetUp);
        }
        let body = serde_json::json!({
            "username": setup.username,
            "password": setup.password.expose(),
            "org": setup.org,
            "bucket": setup.bucket,
            "token": setup.token.expose(),
            "retentionPeriodSeconds": setup.retention.as_secs(),
        });
        self.send(self.http.post(self.url("api/v2/setup")).json(&body))
            .await?;
        Ok(SetupOutcome::Created)
    }

    /// Writes a body of line protocol (timestamps in milliseconds).
    pub async fn write_lines(&self, body: &str) -> Result<(), StoreError> {
        if body.is_empty() {
            return Ok(());
        }
        let mut url = self.url("api/v2/write");
        url.query_pairs_mut()
            .append_pair("org", &self.org)
            .append_pair("bucket", &self.bucket)
            .append_pair("precision", WRITE_PRECISION);
        let mut rb = self
            .auth(self.http.post(url))
            .header("Content-Type", "text/plain; charset=utf-8");
        if body.len() >= GZIP_MIN_BYTES {
            rb = rb
                .header("Content-Encoding", "gzip")
                .body(gzip(body.as_bytes())?);
        } else {
            rb = rb.body(body.to_owned());
        }
        self.send(rb).await.map(drop)
    }

    /// Encodes and writes points. Points that cannot be encoded make the call fail
    /// with [`StoreError::Rejected`] before anything is sent.
    pub async fn write_points(&self, points: &[Point]) -> Result<(), StoreError> {
        let (body, bad) = encode_batch(points);
        if let Some((i, e)) = bad.first() {
            return Err(StoreError::Rejected {
                status: 0,
                message: format!("point {i} cannot be encoded: {e}"),
            });
        }
        self.write_lines(&body).await
    }

    /// Runs a Flux query and returns the raw annotated CSV.
    pub async fn query_raw(&self, flux: &str) -> Result<String, StoreError> {
        let mut url = self.url("api/v2/query");
        url.query_pairs_mut().append_pair("org", &self.org);
        let body = serde_json::json!({
            "query": flux,
            "type": "flux",
            "dialect": {
                "header": true,
                "annotations": ["datatype", "group", "default"],
                "delimiter": ",",
                "dateTimeFormat": "RFC3339Nano",
            },
        });
        let resp = self
            .send(
                self.auth(self.http.post(url))
                    .header("Accept", "application/csv")
                    .json(&body),
            )
            .await?;
        resp.text().await.map_err(|e| self.transport_error(e))
    }

    /// Runs a Flux query and reads its records.
    pub async fn query(&self, flux: &str) -> Result<Vec<Record>, StoreError> {
        let text = self.query_raw(flux).await?;
        Ok(csv::parse(&text)?)
    }

    /// The bucket's retention period, `None` when it keeps data forever. Needs the
    /// token to read the bucket (not the org's other settings).
    pub async fn bucket_retention(&self) -> Result<Option<Duration>, StoreError> {
        #[derive(Deserialize)]
        struct Buckets {
            buckets: Vec<Bucket>,
        }
        #[derive(Deserialize)]
        struct Bucket {
            #[serde(default, rename = "retentionRules")]
            retention_rules: Vec<Rule>,
        }
        #[derive(Deserialize)]
        struct Rule {
            #[serde(default, rename = "everySeconds")]
            every_seconds: u64,
        }
        let mut url = self.url("api/v2/buckets");
        url.query_pairs_mut()
            .append_pair("org", &self.org)
            .append_pair("name", &self.bucket);
        let found: Buckets = self
            .send(self.auth(self.http.get(url)))
            .await?
            .json()
            .await
            .map_err(|e| StoreError::Protocol(format!("GET /api/v2/buckets: {e}")))?;
        let bucket = found.buckets.into_iter().next().ok_or_else(|| {
            StoreError::NotFound(format!("bucket {:?} in org {:?}", self.bucket, self.org))
        })?;
        // An expire rule of 0 s is InfluxDB's "forever" too.
        Ok(bucket
            .retention_rules
            .iter()
            .map(|r| r.every_seconds)
            .filter(|s| *s > 0)
            .min()
            .map(Duration::from_secs))
    }

    /// `from(bucket: "<bucket>")`, the start of every query on our bucket.
    pub fn from_bucket(&self) -> String {
        format!(
            "from(bucket: {})",
            crate::domain::flux::string(&self.bucket)
        )
    }
}

fn gzip(bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
    let mut gz = GzEncoder::new(Vec::with_capacity(bytes.len() / 4), Compression::fast());
    gz.write_all(bytes)
        .and_then(|_| gz.finish())
        .map_err(|e| StoreError::Protocol(format!("gzip: {e}")))
}

fn shorten(s: &str) -> String {
    let mut t: String = s.chars().take(300).collect();
    if s.chars().count() > 300 {
        t.push('…');
    }
    t
}

/// Maps an HTTP error answer to a [`StoreError`], reading InfluxDB's JSON error body
/// (`{"code": "...", "message": "..."}`) when there is one.
fn status_error(status: StatusCode, body: &str, retry_after: Option<Duration>) -> StoreError {
    #[derive(Deserialize)]
    struct ErrorBody {
        message: Option<String>,
    }
    let message = serde_json::from_str::<ErrorBody>(body)
        .ok()
        .and_then(|b| b.message)
        .unwrap_or_else(|| shorten(body.trim()));
    let code = status.as_u16();
    match code {
        401 | 403 => StoreError::Unauthorized {
            status: code,
            message,
        },
        404 => StoreError::NotFound(message),
        413 => StoreError::TooLarge(message),
        408 | 429 | 500..=599 => StoreError::Unavailable {
            status: code,
            message,
            retry_after,
        },
        _ => StoreError::Rejected {
            status: code,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_http_errors() {
        let e = status_error(
            StatusCode::BAD_REQUEST,
            r#"{"code":"invalid","message":"unable to parse 'x'"}"#,
            None,
        );
        assert!(
            matches!(&e, StoreError::Rejected { status: 400, message } if message == "unable to parse 'x'")
        );
        assert!(!e.is_retryable());
        let e = status_error(
            StatusCode::TOO_MANY_REQUESTS,
            "slow down",
            Some(Duration::from_secs(3)),
        );
        assert!(e.is_retryable());
        assert!(
            matches!(e, StoreError::Unavailable { retry_after: Some(d), .. } if d == Duration::from_secs(3))
        );
        assert!(status_error(StatusCode::SERVICE_UNAVAILABLE, "", None).is_retryable());
        assert_eq!(
            status_error(StatusCode::PAYLOAD_TOO_LARGE, "", None).kind(),
            "too_large"
        );
        assert_eq!(
            status_error(StatusCode::UNAUTHORIZED, "{}", None).kind(),
            "unauthorized"
        );
        assert_eq!(
            status_error(
                StatusCode::NOT_FOUND,
                r#"{"message":"bucket \"x\" not found"}"#,
                None
            )
            .to_string(),
            "InfluxDB: not found (HTTP 404): bucket \"x\" not found"
        );
    }
}
