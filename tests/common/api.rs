//! A client of a running `arng serve` for tests: JSON in, (status, JSON) out, the
//! server-sent-event stream, the Prometheus page.

use std::time::Duration;

use rumqttc::QoS;
use serde_json::Value;

use super::chain::{now_ms, publish_all, reading_msg, ServeProc};
use super::eventually;
use super::mosquitto::Mosquitto;

pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl Api {
    pub fn new(serve: &ServeProc) -> Api {
        Api {
            http: reqwest::Client::new(),
            base: serve.url(),
            token: serve.token.clone(),
        }
    }

    /// GET `path`: (status, body as JSON, or null when it is not JSON).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// A write with `body`, and the bearer `token` when given.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
        token: Option<&str>,
    ) -> (u16, Value) {
        let auth = token.map(|t| format!("Bearer {t}"));
        self.send_authorized(method, path, body, auth.as_deref())
            .await
    }

    /// A write with `Authorization: <authorization>` exactly as given.
    pub async fn send_authorized(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
        authorization: Option<&str>,
    ) -> (u16, Value) {
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.base))
            .json(body);
        if let Some(a) = authorization {
            rb = rb.header("authorization", a);
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// `GET /thresholds`: where they come from (`x-arng-thresholds-source`) and the
    /// document.
    pub async fn thresholds(&self) -> (String, Value) {
        let r = self
            .http
            .get(format!("{}/thresholds", self.base))
            .send()
            .await
            .unwrap();
        let source = r.headers()["x-arng-thresholds-source"]
            .to_str()
            .unwrap()
            .to_owned();
        (source, r.json().await.unwrap())
    }

    /// The Prometheus text of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Reads `GET /events<query>` for `during`, in the background: the raw stream text.
    pub fn events(&self, query: &str, during: Duration) -> tokio::task::JoinHandle<String> {
        let http = self.http.clone();
        let url = format!("{}/events{query}", self.base);
        tokio::spawn(async move {
            let mut r = http.get(url).send().await.unwrap();
            let mut seen = String::new();
            let until = tokio::time::Instant::now() + during;
            while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(until, r.chunk()).await {
                seen += &String::from_utf8_lossy(&chunk);
            }
            seen
        })
    }

    /// Waits until `GET /alerts?<query>` lists exactly `n` alerts, and returns them.
    pub async fn wait_for_alerts(&self, query: &str, n: usize) -> Vec<Value> {
        eventually(
            &format!("{n} alert(s) for {query}"),
            Duration::from_secs(15),
            || async {
                let (_, v) = self.get(&format!("/alerts?{query}")).await;
                v["alerts"].as_array().filter(|a| a.len() == n).cloned()
            },
        )
        .await
    }

    /// Publishes one reading of `zone` (sensor s1) and waits until the API knows the
    /// zone (alerts are accepted only for known zones).
    pub async fn make_zone_known(&self, broker: &Mosquitto, zone: &str) {
        publish_all(
            broker,
            "simulator",
            &[reading_msg(zone, "s1", 0, now_ms(), 21.0)],
            QoS::AtLeastOnce,
        )
        .await;
        eventually(
            "the zone known to the API",
            Duration::from_secs(10),
            || async { (self.get(&format!("/zones/{zone}/latest")).await.0 == 200).then_some(()) },
        )
        .await;
    }
}
