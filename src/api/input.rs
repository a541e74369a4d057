//! What the handlers read from a request, strictly: query parameters (each known at
//! most once, unknown ones refused), durations and times with their bounds, path
//! zones, and JSON bodies deserialized with the path of the offending field. Every
//! refusal is a 400 (or 413/415) naming the field.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request};
use axum::http::{header, StatusCode};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::queries::Since;
use crate::domain::Zone;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest range `GET /zones/{zone}/history` and `GET /alerts` accept.
const MAX_RANGE: Duration = Duration::from_secs(31 * 24 * 3600);

/// Query parameters, strictly: each known at most once, unknown ones refused.
#[derive(Debug)]
pub(super) struct Params(BTreeMap<String, String>);

impl Params {
    pub(super) fn parse(raw: Option<String>, allowed: &[&str]) -> Result<Params, ApiError> {
        let mut map = BTreeMap::new();
        for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            let k = k.into_owned();
            if !allowed.contains(&k.as_str()) {
                let shown: String = k.chars().take(40).collect();
                return Err(ApiError::field(
                    shown.clone(),
                    format!(
                        "unknown query parameter {shown:?} (allowed: {})",
                        allowed.join(", ")
                    ),
                ));
            }
            if map.insert(k.clone(), v.into_owned()).is_some() {
                return Err(ApiError::field(
                    k.clone(),
                    format!("query parameter {k:?} is given twice"),
                ));
            }
        }
        Ok(Params(map))
    }

    pub(super) fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    /// A boolean parameter: absent is false; `true`/`false` (also `1`/`0`).
    pub(super) fn flag(&self, k: &str) -> Result<bool, ApiError> {
        match self.get(k) {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") => Ok(true),
            Some(other) => Err(ApiError::field(
                k,
                format!(
                    "{k}: {:?} is not true or false",
                    other.chars().take(20).collect::<String>()
                ),
            )),
        }
    }

    pub(super) fn duration(&self, k: &str, default: Duration) -> Result<Duration, ApiError> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => parse_duration(k, v),
        }
    }
}

/// A start time: an RFC 3339 time with its offset, not in the future and one InfluxDB
/// can query, or a duration back from `now` ([`parse_duration`]'s bounds). A value that
/// is neither says which forms are accepted (issue 15: `2026-01-01T00:00:00` was
/// answered "expected a duration", as if times were not accepted at all).
pub(super) fn parse_since(field: &str, v: &str, now: DateTime<Utc>) -> Result<Since, ApiError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        let t = t.with_timezone(&Utc);
        // Found by schemathesis: a future time made an empty Flux range, and one
        // InfluxDB cannot represent a query error, both answered 503.
        if !influx_can_store(t) {
            return Err(ApiError::field(
                field,
                format!("{field}: {INFLUX_TIME_RANGE}"),
            ));
        }
        if t > now {
            return Err(ApiError::field(
                field,
                format!("{field}: must not be in the future"),
            ));
        }
        return Ok(Since::At(t));
    }
    if humantime::parse_duration(v).is_ok() {
        return parse_duration(field, v).map(Since::Ago);
    }
    let shown: String = v.chars().take(40).collect();
    let local = [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ]
    .iter()
    .any(|f| chrono::NaiveDateTime::parse_from_str(v, f).is_ok())
        || chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok();
    Err(ApiError::field(
        field,
        if local {
            format!(
                "{field}: {shown:?} has no UTC offset: write the time in RFC 3339 with its offset, \
                 e.g. 2026-01-01T00:00:00Z (UTC) or 2026-01-01T00:00:00+01:00"
            )
        } else {
            format!(
                "{field}: {shown:?} is neither an RFC 3339 time with its offset \
                 (e.g. 2026-01-01T00:00:00Z) nor a duration back from now (e.g. 30m, 24h, 7d)"
            )
        },
    ))
}

pub(super) fn parse_duration(field: &str, v: &str) -> Result<Duration, ApiError> {
    let d = humantime::parse_duration(v).map_err(|e| {
        ApiError::field(
            field,
            format!("{field}: {e} (expected a duration such as 30s, 15m, 1h, 7d)"),
        )
    })?;
    if d < Duration::from_secs(1) {
        return Err(ApiError::field(
            field,
            format!("{field}: must be at least 1s"),
        ));
    }
    if d > MAX_RANGE {
        return Err(ApiError::field(
            field,
            format!("{field}: must be at most 31d"),
        ));
    }
    Ok(d)
}

/// What [`influx_can_store`] refuses, for error messages.
pub(super) const INFLUX_TIME_RANGE: &str =
    "must be between 1677-09-22 and 2262-04-11 (the times InfluxDB can store)";

/// Whether InfluxDB can store or query a point at `t`. Points are written with
/// millisecond precision and kept as i64 nanoseconds, whose ends InfluxDB reserves.
pub(super) fn influx_can_store(t: DateTime<Utc>) -> bool {
    const LIMIT_NS: i64 = i64::MAX - 1;
    t.timestamp_millis()
        .checked_mul(1_000_000)
        .is_some_and(|ns| (-LIMIT_NS..=LIMIT_NS).contains(&ns))
}

pub(super) fn zone_param(p: Result<Path<String>, PathRejection>) -> Result<Zone, ApiError> {
    let Path(raw) = p.map_err(|e| ApiError::field("zone", e.body_text()))?;
    Zone::new(&raw).map_err(|e| ApiError::field("zone", e.to_string()))
}

/// The 413 of a body over [`MAX_BODY_BYTES`], whether the body limit layer refused it
/// from its `Content-Length` or it grew past the limit while read.
pub(super) fn body_too_large() -> ApiError {
    ApiError::field(
        "body",
        format!(
            "body: larger than {} KiB, the most a request may carry (an alert message holds at most {} characters)",
            MAX_BODY_BYTES / 1024,
            crate::domain::alert::MAX_MESSAGE_CHARS
        ),
    )
    .with_status(StatusCode::PAYLOAD_TOO_LARGE)
}

/// Reads a JSON body: size-limited, `application/json`, and deserialized with the path
/// of the offending field in the error.
pub(super) async fn json_body<T: DeserializeOwned>(req: Request) -> Result<T, ApiError> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if !is_json {
        return Err(ApiError::field(
            "content-type",
            "the body must be JSON (Content-Type: application/json)",
        )
        .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE));
    }
    // The router's RequestBodyLimitLayer bounds the body (tower-http): a body that
    // announced no length and grows past the limit fails here.
    let bytes = axum::body::to_bytes(req.into_body(), usize::MAX)
        .await
        .map_err(|e| {
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(c) = cause {
                if c.is::<http_body_util::LengthLimitError>() {
                    return body_too_large();
                }
                cause = c.source();
            }
            ApiError::field("body", format!("body: cannot be read: {e}"))
        })?;
    let doc: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::field("body", format!("body: not valid JSON: {e}")))?;
    if !doc.is_object() {
        return Err(ApiError::field("body", "body: must be a JSON object"));
    }
    let value = serde_path_to_error::deserialize(doc).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." || path.is_empty() {
            "body".to_owned()
        } else {
            path
        };
        ApiError::field(field.clone(), format!("{field}: {}", e.inner()))
    })?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn influx_time_range_ends() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert!(influx_can_store(t("1677-09-22T00:00:00Z")));
        assert!(influx_can_store(t("2262-04-11T00:00:00Z")));
        assert!(influx_can_store(t("1970-01-01T00:00:00Z")));
        assert!(!influx_can_store(t("1677-09-21T00:00:00Z")));
        assert!(!influx_can_store(t("2262-04-12T00:00:00Z")));
        assert!(!influx_can_store(t("0001-01-01T00:00:00Z")));
    }

    #[test]
    fn params_are_strict() {
        assert!(Params::parse(Some("range=1h&every=1m".into()), &["range", "every"]).is_ok());
        let e = Params::parse(Some("rnge=1h".into()), &["range"]).unwrap_err();
        assert_eq!(e.body.field.as_deref(), Some("rnge"));
        let e = Params::parse(Some("range=1h&range=2h".into()), &["range"]).unwrap_err();
        assert!(e.body.error.contains("twice"));
        assert!(parse_duration("range", "soon").is_err());
        assert!(parse_duration("range", "0s").is_err());
        assert!(parse_duration("range", "400d").is_err());
        let p = Params::parse(Some("include_probe=true".into()), &["include_probe"]).unwrap();
        assert!(p.flag("include_probe").unwrap());
        assert!(!Params::parse(None, &["x"]).unwrap().flag("x").unwrap());
        let p = Params::parse(Some("x=yes".into()), &["x"]).unwrap();
        assert_eq!(p.flag("x").unwrap_err().body.field.as_deref(), Some("x"));
    }

    #[test]
    fn since_says_which_forms_it_accepts() {
        let now = DateTime::parse_from_rfc3339("2026-11-28T09:15:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_since("since", "24h", now).unwrap(),
            Since::Ago(Duration::from_secs(24 * 3600))
        );
        assert_eq!(
            parse_since("since", "2026-01-01T00:00:00+01:00", now).unwrap(),
            Since::At(
                DateTime::parse_from_rfc3339("2025-12-31T23:00:00Z")
                    .unwrap()
                    .with_timezone(&Utc)
            )
        );
        let msg = |v: &str| parse_since("since", v, now).unwrap_err().body.error;
        let e = msg("2026-01-01T00:00:00");
        assert!(
            e.contains("no UTC offset") && e.contains("2026-01-01T00:00:00Z"),
            "{e}"
        );
        assert!(msg("2026-01-01").contains("no UTC offset"));
        let e = msg("forever");
        assert!(e.contains("RFC 3339") && e.contains("duration"), "{e}");
        assert!(msg("2026-12-01T00:00:00Z").contains("future"));
        assert!(msg("40d").contains("at most 31d"));
    }
}
