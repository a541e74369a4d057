//! A small client of the arng REST API (`arng serve`), as check-e2e and latency use
//! it: the zones it knows, what `GET /zones/{zone}/latest` shows of a probe, and
//! whether `GET /alerts` lists the probe's alert. check-lab also sends raw requests
//! to any team's API with it ([`ApiClient::send_raw`]). Errors are [`ProbeError`]s that
//! name the option to change.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::ProbeError;
use crate::config::{ApiArgs, Secret};
use crate::domain::payload::format_timestamp;
use crate::domain::Zone;
use crate::supervision::PROBE_SENSOR;

/// What `GET /zones/{zone}/latest` shows of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ProbeView {
    /// The InfluxDB side holds this probe (or a newer one).
    pub influx: bool,
    /// The MQTT side does.
    pub mqtt: bool,
    /// `influx.age_ms`: the API's clock minus the point's `_time`.
    pub influx_age_ms: Option<i64>,
}

/// Reads the probe sensor's entry of a `GET /zones/{zone}/latest` answer.
pub fn probe_view(latest: &Value, seq: u64) -> ProbeView {
    let Some(sensor) = latest["sensors"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["sensor"] == PROBE_SENSOR))
    else {
        return ProbeView::default();
    };
    let has = |side: &str| sensor[side]["seq"].as_u64().is_some_and(|s| s >= seq);
    ProbeView {
        influx: has("influx"),
        mqtt: has("mqtt"),
        influx_age_ms: sensor["influx"]["age_ms"].as_i64(),
    }
}

/// An HTTP answer as it came: status and body text.
#[derive(Debug, Clone, PartialEq)]
pub struct RawAnswer {
    pub status: u16,
    pub body: String,
}

/// A small client of the arng REST API.
pub struct ApiClient {
    http: reqwest::Client,
    base: url::Url,
    token: Option<Secret>,
    /// The timeout of one request.
    timeout: Duration,
}

impl ApiClient {
    pub fn new(args: &ApiArgs, timeout: Duration) -> ApiClient {
        let per_request = timeout.min(Duration::from_secs(10));
        let http = reqwest::Client::builder()
            .timeout(per_request)
            .connect_timeout(per_request.min(Duration::from_secs(5)))
            .user_agent(concat!("arng/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("static reqwest configuration is valid");
        ApiClient {
            http,
            base: args.url.clone(),
            token: args.token.clone(),
            timeout: per_request,
        }
    }

    /// `path` under the base URL, or why it cannot be.
    // The async methods that call it return ProbeError too; boxing it for one
    // private helper would only move the lint.
    #[allow(clippy::result_large_err)]
    fn url(&self, path: &str) -> Result<url::Url, ProbeError> {
        let joined = self.base.join(path.trim_start_matches('/'));
        joined.map_err(|e| ProbeError::ApiPath {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    fn request(&self, method: reqwest::Method, url: url::Url) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, url);
        match &self.token {
            Some(t) => rb.bearer_auth(t.expose()),
            None => rb,
        }
    }

    /// GET `path` with `query`: the JSON body, `Ok(None)` for a 404, or why not.
    pub async fn get(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Option<Value>, ProbeError> {
        let url = self.url(path)?;
        let rb = self.request(reqwest::Method::GET, url.clone()).query(query);
        let resp = rb.send().await.map_err(|e| {
            if e.is_timeout() {
                return ProbeError::ApiTimeout {
                    base: self.base.to_string(),
                    after: self.timeout,
                };
            }
            let (transport, reason) = crate::net::transport_failure(&e);
            ProbeError::ApiUnreachable {
                base: self.base.to_string(),
                reason,
                transport,
            }
        })?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let why = body["error"].as_str().unwrap_or("no error message");
            let hint = if status == reqwest::StatusCode::UNAUTHORIZED {
                " (set --api-token / ARNG_API_TOKEN)"
            } else {
                ""
            };
            return Err(ProbeError::ApiStatus {
                path: url.path().to_owned(),
                status: status.as_u16(),
                message: why.to_owned(),
                hint,
            });
        }
        Ok(Some(body))
    }

    /// Any API, any answer: `method` on `path` with an optional JSON `body`; the
    /// status and up to `max_bytes` of the body as text, whatever they are (a
    /// checker judges them). Errors only when no answer came.
    pub async fn send_raw(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        max_bytes: usize,
    ) -> Result<RawAnswer, ProbeError> {
        let url = self.url(path)?;
        let mut rb = self.request(method, url.clone());
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let unreachable = |e: reqwest::Error| {
            let (transport, reason) = if e.is_timeout() {
                (None, format!("nothing within {:?}", self.timeout))
            } else {
                let (t, reason) = crate::net::transport_failure(&e);
                (Some(t), reason)
            };
            ProbeError::Unanswered {
                url: url.to_string(),
                reason,
                transport,
            }
        };
        let mut resp = rb.send().await.map_err(unreachable)?;
        let status = resp.status().as_u16();
        let mut bytes = Vec::new();
        while bytes.len() < max_bytes {
            match resp.chunk().await.map_err(unreachable)? {
                Some(chunk) => bytes.extend_from_slice(&chunk),
                None => break,
            }
        }
        bytes.truncate(max_bytes);
        Ok(RawAnswer {
            status,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }

    /// The zones `GET /zones` lists, in its order (sorted).
    pub async fn zones(&self) -> Result<Vec<Zone>, ProbeError> {
        let body = self
            .get("/zones", &[])
            .await?
            .ok_or(ProbeError::NotAnArngApi)?;
        let list = body.as_array().ok_or(ProbeError::ZonesNotAList)?;
        Ok(list
            .iter()
            .filter_map(|z| z["zone"].as_str().and_then(|s| Zone::new(s).ok()))
            .collect())
    }

    pub async fn probe_view(&self, zone: &Zone, seq: u64) -> Result<Option<ProbeView>, ProbeError> {
        // The lab's views hide the probe; it asks for it.
        let body = self
            .get(
                &format!("/zones/{zone}/latest"),
                &[("include_probe", "true")],
            )
            .await?;
        Ok(body.map(|b| probe_view(&b, seq)))
    }

    /// Is the probe's critical alert raised at `ts` listed by `GET /alerts`?
    pub async fn probe_alert(
        &self,
        zone: &Zone,
        ts: DateTime<Utc>,
    ) -> Result<Option<()>, ProbeError> {
        let since = format_timestamp(ts - chrono::Duration::seconds(1));
        let body = self
            .get(
                "/alerts",
                &[
                    ("zone", zone.as_str()),
                    ("severity", "critical"),
                    ("since", &since),
                    ("limit", "1000"),
                    ("include_probe", "true"),
                ],
            )
            .await?
            .unwrap_or(Value::Null);
        let want_ts = format_timestamp(ts);
        let found = body["alerts"].as_array().is_some_and(|a| {
            a.iter().any(|x| {
                x["sensor"] == PROBE_SENSOR
                    && x["metric"] == "temp"
                    && x["state"] == "raised"
                    && x["timestamp"] == want_ts.as_str()
            })
        });
        Ok(found.then_some(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_probe_from_latest() {
        let body = json!({"zone": "nord", "sensors": [
            {"sensor": "s1", "mqtt": {"seq": 99}, "influx": {"seq": 99, "age_ms": 5}},
            {"sensor": "e2e-probe", "mqtt": {"seq": 7}, "influx": {"seq": 6, "age_ms": 250}},
        ]});
        assert_eq!(
            probe_view(&body, 7),
            ProbeView {
                influx: false,
                mqtt: true,
                influx_age_ms: Some(250)
            }
        );
        assert!(probe_view(&body, 6).influx);
        assert_eq!(probe_view(&json!({"sensors": []}), 1), ProbeView::default());
        assert_eq!(probe_view(&Value::Null, 1), ProbeView::default());
    }
}
