//! The live dashboard (`GET /`) in a real headless Chromium (Debian's `chromium`),
//! against `arng serve` fed by the real chain: readings published on Mosquitto, stored
//! by `arng ingest` in influxd, seen by serve on MQTT and in InfluxDB. The zone cards
//! must show the values that were published, then follow what is published while the
//! page is open (server-sent events). A screenshot is kept as a test artifact at
//! `target/test-artifacts/dashboard.png`.
//!
//! Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`,
//! NUL-separated JSON on fds 3 and 4), not with `--dump-dom --virtual-time-budget`:
//! virtual time does not advance while a fetch is pending, and the page's
//! `EventSource` is a fetch that never ends, so such a run never finishes (checked
//! with Chromium 156). Polling the page's DOM also waits exactly as long as needed.
//! A missing `chromium` fails the test (scripts/test.sh installs it); `ARNG_CHROMIUM`
//! names another binary.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use arng::domain::{Alert, AlertKind, AlertLevel, AlertSource, AlertState, SensorId, Zone};
use common::chain::{count_points, get_json, now_ms, publish_all, IngestProc, ServeProc};
use common::eventually;
use common::influxd::Influxd;
use common::mosquitto::Mosquitto;
use rumqttc::QoS;
use serde_json::{json, Value};

/// Longest wait for one DevTools answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

fn chromium_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("ARNG_CHROMIUM") {
        let p = PathBuf::from(p);
        assert!(
            p.exists(),
            "chromium not found at $ARNG_CHROMIUM={}",
            p.display()
        );
        return p;
    }
    for p in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("chromium not found: run scripts/test.sh or apt-get install chromium");
}

/// A headless Chromium with one page, driven over the DevTools protocol.
struct Chromium {
    child: Child,
    to_browser: ChildStdin,
    from_browser: Receiver<Value>,
    /// Protocol events seen so far (console messages, exceptions...).
    events: Vec<Value>,
    next_id: u64,
    session: String,
    profile: tempfile::TempDir,
}

impl Chromium {
    fn launch(width: u32, height: u32) -> Chromium {
        Chromium::launch_in(width, height, "en-GB")
    }

    /// A browser whose user-interface language, `navigator.languages` and
    /// `Accept-Language` header are `lang` (e.g. `fr`).
    fn launch_in(width: u32, height: u32, lang: &str) -> Chromium {
        let bin = chromium_binary();
        let profile = tempfile::Builder::new()
            .prefix("arng-chromium-")
            .tempdir()
            .unwrap();
        let stderr = std::fs::File::create(profile.path().join("stderr.log")).unwrap();
        // Chromium reads the protocol on fd 3 and writes it on fd 4: the shell maps
        // them onto our pipes before it becomes the browser.
        let mut child = Command::new("/bin/sh")
            .args(["-c", r#"exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>&2"#])
            .arg(&bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--hide-scrollbars",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--lang={lang}"))
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--window-size={width},{height}"))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let to_browser = child.stdin.take().unwrap();
        let mut from = BufReader::new(child.stdout.take().unwrap());
        let (tx, from_browser) = mpsc::channel();
        std::thread::spawn(move || loop {
            let mut msg = Vec::new();
            match from.read_until(0, &mut msg) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    msg.pop();
                    if let Ok(v) = serde_json::from_slice::<Value>(&msg) {
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let mut me = Chromium {
            child,
            to_browser,
            from_browser,
            events: Vec::new(),
            next_id: 0,
            session: String::new(),
            profile,
        };
        // The first page may take a moment to exist after the pipe answers.
        let deadline = Instant::now() + CALL_TIMEOUT;
        let page = loop {
            let targets = me.send(None, "Target.getTargets", json!({}));
            if let Some(t) = targets["targetInfos"]
                .as_array()
                .and_then(|ts| ts.iter().find(|t| t["type"] == "page"))
            {
                break t["targetId"].clone();
            }
            assert!(Instant::now() < deadline, "no page target in {targets}");
            std::thread::sleep(Duration::from_millis(100));
        };
        let attached = me.send(
            None,
            "Target.attachToTarget",
            json!({"targetId": page, "flatten": true}),
        );
        me.session = attached["sessionId"].as_str().unwrap().to_owned();
        // The viewport itself, whatever room the window's frame takes.
        me.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        );
        me.call("Runtime.enable", json!({}));
        me.call("Page.enable", json!({}));
        // The header the page's requests carry and what navigator.languages says, so
        // the page sees the browser's language however it was launched.
        let ua = me.send(None, "Browser.getVersion", json!({}))["userAgent"].clone();
        me.call(
            "Emulation.setUserAgentOverride",
            json!({"userAgent": ua, "acceptLanguage": lang}),
        );
        me
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.profile.path().join("stderr.log")).unwrap_or_default()
    }

    /// Sends one command (to the page's session, or the browser's) and returns its
    /// result; protocol errors and silence fail the test.
    fn send(&mut self, session: Option<String>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = s.into();
        }
        let mut bytes = msg.to_string().into_bytes();
        bytes.push(0);
        if let Err(e) = self.to_browser.write_all(&bytes) {
            panic!("chromium is gone ({e}):\n{}", self.stderr());
        }
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.from_browser.recv_timeout(left) {
                Ok(v) if v["id"] == id => {
                    if let Some(err) = v.get("error") {
                        panic!("{method} failed: {err}");
                    }
                    return v["result"].clone();
                }
                Ok(v) => self.events.push(v),
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "chromium: no answer to {method} in {CALL_TIMEOUT:?}:\n{}",
                        self.stderr()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("chromium exited during {method}:\n{}", self.stderr())
                }
            }
        }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let session = Some(self.session.clone());
        self.send(session, method, params)
    }

    /// The value of a JavaScript expression in the page.
    fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expression}\nthrew: {e}");
        }
        r["result"]["value"].clone()
    }

    fn navigate(&mut self, url: &str) {
        let r = self.call("Page.navigate", json!({ "url": url }));
        assert!(r.get("errorText").is_none(), "navigating to {url}: {r}");
    }

    fn dom(&mut self) -> String {
        self.eval("document.documentElement.outerHTML")
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Polls `condition` (a JavaScript expression) until it is true; fails with the
    /// page's DOM after `timeout`.
    fn wait_for(&mut self, what: &str, condition: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.eval(condition) != Value::Bool(true) {
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n({condition})\n--- DOM:\n{}\n--- page errors: {:?}",
                    self.dom(),
                    self.page_errors()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Uncaught exceptions and console errors reported by the page so far.
    fn page_errors(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| {
                e["method"] == "Runtime.exceptionThrown"
                    || (e["method"] == "Runtime.consoleAPICalled" && e["params"]["type"] == "error")
            })
            .map(|e| e["params"].to_string())
            .collect()
    }

    fn screenshot(&mut self, path: &Path) {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64_decode(r["data"].as_str().expect("screenshot data"));
        std::fs::write(path, png).unwrap_or_else(|e| panic!("cannot write {path:?}: {e}"));
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("----- chromium stderr -----\n{}", self.stderr());
        }
    }
}

/// Standard base64 (the screenshot), without a dependency for it.
fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c:?}"),
    };
    let digits: Vec<u8> = s.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &d)| n | (u32::from(d) << (18 - 6 * i)));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// A reading as a sensor publishes it (it computes `alert_level` itself, against the
/// default thresholds).
fn reading(zone: &str, sensor: &str, seq: u64, ms: i64, temp: f64, hum: f64) -> (String, String) {
    let zone_name = Zone::new(zone).unwrap();
    let r = arng::domain::Reading {
        alert_level: arng::domain::Thresholds::default().level(&zone_name, temp, hum),
        zone: zone_name,
        sensor: SensorId::new(sensor).unwrap(),
        seq: Some(seq),
        timestamp: chrono::DateTime::from_timestamp_millis(ms).unwrap(),
        temp,
        hum,
        provenance: Default::default(),
    };
    (format!("entrepot/{zone}/{sensor}/v1"), r.to_json())
}

fn heartbeat(zone: &str, ms: i64) -> (String, String) {
    let h = arng::domain::Heartbeat {
        zone: Zone::new(zone).unwrap(),
        timestamp: chrono::DateTime::from_timestamp_millis(ms).unwrap(),
        sensors: Some(2),
    };
    (format!("entrepot/heartbeat/{zone}"), h.to_json())
}

/// A JavaScript expression for the text of `selector` inside zone `zone`'s card.
fn card_text(zone: &str, selector: &str) -> String {
    format!(r#"document.querySelector('[data-zone="{zone}"] {selector}')?.textContent"#)
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_shows_published_readings_and_follows_the_live_stream() {
    // Fail before starting any server when the browser is missing.
    let _ = chromium_binary();
    let broker = Mosquitto::start();
    let db = Influxd::start();
    let _ingest = IngestProc::start(&broker, &db, &[]);
    let serve = ServeProc::start(&broker, &db, &[]);

    // Ten minutes of history, one reading a minute per sensor. The newest reading of
    // each zone is the one its card must show: nord/s1 21.5 °C 44 % (nord/s2's is
    // older), sud/s1 27.3 °C 50 % (above the 25 °C warning bound).
    let now = now_ms();
    let mut msgs = Vec::new();
    for i in 0..10u64 {
        let ms = now - (10 - i as i64) * 60_000;
        let f = i as f64 / 10.0;
        msgs.push(reading("nord", "s1", i, ms, 20.0 + f, 45.0 - f));
        msgs.push(reading("nord", "s2", i, ms - 5_000, 19.0 + f, 48.0));
        msgs.push(reading("sud", "s1", i, ms, 24.0 + 3.0 * f, 50.0));
    }
    msgs.push(reading("nord", "s2", 10, now - 4_000, 19.8, 47.5));
    msgs.push(reading("nord", "s1", 10, now - 2_000, 21.5, 44.0));
    msgs.push(reading("sud", "s1", 10, now - 2_000, 27.3, 50.0));
    // nord's heartbeat is fresh; sud's is 200 s old, past the 90 s silence limit.
    msgs.push(heartbeat("nord", now - 1_000));
    msgs.push(heartbeat("sud", now - 200_000));
    publish_all(&broker, "simulator", &msgs, QoS::AtLeastOnce).await;

    // An alert recorded through the API before the page opens: the feed loads it.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let resp = http
        .post(format!("{}/alerts", serve.url()))
        .bearer_auth(&serve.token)
        .json(&json!({
            "zone": "sud", "sensor": "s1", "metric": "temp", "severity": "warning",
            "value": 27.3, "threshold": 25.0, "message": "dock door <b>open</b>"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let stored: Value = resp.json().await.unwrap();
    let stored_id = stored["id"].as_str().unwrap().to_owned();

    // InfluxDB holds every reading, and serve's view has both sides of each sensor.
    eventually(
        "33 readings in InfluxDB",
        Duration::from_secs(30),
        || async { (count_points(&db, "readings", "temp", "").await == 33).then_some(()) },
    )
    .await;
    for zone in ["nord", "sud"] {
        let url = format!("{}/zones/{zone}/latest", serve.url());
        eventually(
            &format!("serve's /zones/{zone}/latest in sync with InfluxDB"),
            Duration::from_secs(30),
            || async {
                let v: Value = http.get(&url).send().await.ok()?.json().await.ok()?;
                let sensors = v["sensors"].as_array()?;
                let ok = !sensors.is_empty()
                    && sensors.iter().all(|s| s["in_sync"] == true)
                    && v["heartbeat"]["age_s"].is_number();
                ok.then_some(())
            },
        )
        .await;
    }

    // ----- the page as loaded --------------------------------------------------------
    let mut page = tokio::task::block_in_place(|| Chromium::launch(1280, 900));
    let url = format!("{}/", serve.url());
    tokio::task::block_in_place(|| {
        page.navigate(&url);
        page.wait_for(
            "cards, charts, alerts and the live stream",
            r##"(() => {
                const cards = ["nord", "sud"].map(z => document.querySelector(`[data-zone="${z}"]`));
                return cards.every(c => c && c.querySelectorAll("svg.chart polyline").length > 0)
                    && document.querySelectorAll("#alerts li").length > 0
                    && document.getElementById("conn").className === "live";
            })()"##,
            Duration::from_secs(30),
        );
    });
    let page_state = |page: &mut Chromium| {
        tokio::task::block_in_place(|| {
            page.eval(
                r##"(() => {
                const card = z => {
                    const c = document.querySelector(`[data-zone="${z}"]`);
                    const hb = c.querySelector(".heartbeat-age");
                    const chart = m => {
                        const svg = c.querySelector(`svg.chart[data-metric="${m}"]`);
                        return {
                            sensors: [...svg.querySelectorAll("polyline")].map(p => p.dataset.sensor),
                            thresholds: Object.fromEntries([...svg.querySelectorAll("line.threshold")]
                                .map(l => [l.dataset.bound, Number(l.dataset.value)])),
                        };
                    };
                    return {
                        temp: c.querySelector(".temp").textContent,
                        hum: c.querySelector(".hum").textContent,
                        level: c.querySelector(".level").textContent,
                        data_level: c.dataset.level,
                        sensor: c.querySelector(".reading-sensor").textContent,
                        heartbeat_age: hb.dataset.ageS === undefined ? null : Number(hb.dataset.ageS),
                        heartbeat_stale: hb.classList.contains("stale"),
                        heartbeat_colour: getComputedStyle(hb).color,
                        temp_chart: chart("temp"),
                        hum_chart: chart("hum"),
                    };
                };
                return {
                    zones: [...document.querySelectorAll("#zones [data-zone]")].map(c => c.dataset.zone),
                    nord: card("nord"),
                    sud: card("sud"),
                    alerts: [...document.querySelectorAll("#alerts li")].map(li => ({
                        id: li.dataset.id, zone: li.dataset.zone, severity: li.dataset.severity,
                        text: li.textContent, markup: li.innerHTML,
                    })),
                    foreign: performance.getEntriesByType("resource")
                        .map(e => e.name).filter(n => !n.startsWith(location.origin)),
                };
            })()"##,
            )
        })
    };
    let s = page_state(&mut page);
    let shown = format!("page state: {s:#}");
    assert_eq!(s["zones"], json!(["nord", "sud"]), "{shown}");
    assert_eq!(s["nord"]["temp"], "21.5", "{shown}");
    assert_eq!(s["nord"]["hum"], "44.0", "{shown}");
    assert_eq!(s["nord"]["sensor"], "s1", "{shown}");
    assert_eq!(s["nord"]["level"], "normal", "{shown}");
    assert_eq!(s["sud"]["temp"], "27.3", "{shown}");
    assert_eq!(s["sud"]["hum"], "50.0", "{shown}");
    assert_eq!(s["sud"]["level"], "warning", "{shown}");
    assert_eq!(s["sud"]["data_level"], "warning", "{shown}");
    // Heartbeats: nord fresh, sud stale and red.
    let nord_age = s["nord"]["heartbeat_age"]
        .as_f64()
        .expect("nord heartbeat age");
    assert!(nord_age < 90.0, "{shown}");
    assert_eq!(s["nord"]["heartbeat_stale"], false, "{shown}");
    assert!(
        s["sud"]["heartbeat_age"].as_f64().unwrap() >= 200.0,
        "{shown}"
    );
    assert_eq!(s["sud"]["heartbeat_stale"], true, "{shown}");
    assert_eq!(s["sud"]["heartbeat_colour"], "rgb(198, 40, 40)", "{shown}");
    // Charts: one line per sensor, the default thresholds as horizontal lines.
    assert_eq!(
        s["nord"]["temp_chart"]["sensors"],
        json!(["s1", "s2"]),
        "{shown}"
    );
    assert_eq!(
        s["nord"]["hum_chart"]["sensors"],
        json!(["s1", "s2"]),
        "{shown}"
    );
    assert_eq!(s["sud"]["temp_chart"]["sensors"], json!(["s1"]), "{shown}");
    let default_temp =
        json!({"critical_low": 2, "warning_low": 5, "warning_high": 25, "critical_high": 30});
    let default_hum =
        json!({"critical_low": 20, "warning_low": 30, "warning_high": 65, "critical_high": 75});
    for zone in ["nord", "sud"] {
        assert_eq!(s[zone]["temp_chart"]["thresholds"], default_temp, "{shown}");
        assert_eq!(s[zone]["hum_chart"]["thresholds"], default_hum, "{shown}");
    }
    // The alert feed, the message shown as text, never as markup.
    let alert = s["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == stored_id.as_str())
        .unwrap_or_else(|| panic!("alert {stored_id} not in the feed: {shown}"));
    assert_eq!(alert["zone"], "sud");
    assert_eq!(alert["severity"], "warning");
    assert!(
        alert["text"]
            .as_str()
            .unwrap()
            .contains("dock door <b>open</b>"),
        "{alert}"
    );
    assert!(
        !alert["markup"].as_str().unwrap().contains("<b>"),
        "{alert}"
    );
    // Nothing fetched from anywhere but the API itself.
    assert_eq!(s["foreign"], json!([]), "{shown}");

    // ----- live: heartbeat ticking, readings, alerts, thresholds --------------------
    tokio::task::block_in_place(|| {
        page.wait_for(
            "nord's heartbeat age to tick",
            &format!(
                r#"Number(document.querySelector('[data-zone="nord"] .heartbeat-age').dataset.ageS) > {nord_age}"#
            ),
            Duration::from_secs(5),
        )
    });
    let now = now_ms();
    let live_alert = Alert {
        version: 1,
        id: Alert::make_id(
            AlertSource::Ingest,
            &Zone::new("sud").unwrap(),
            Some(&SensorId::new("s1").unwrap()),
            AlertKind::Temp,
            chrono::DateTime::from_timestamp_millis(now).unwrap(),
        ),
        zone: Zone::new("sud").unwrap(),
        sensor: Some(SensorId::new("s1").unwrap()),
        metric: AlertKind::Temp,
        severity: AlertLevel::Critical,
        state: AlertState::Raised,
        value: Some(31.0),
        threshold: Some(30.0),
        source: AlertSource::Ingest,
        message: "temp 31 above critical 30".into(),
        timestamp: chrono::DateTime::from_timestamp_millis(now).unwrap(),
    };
    publish_all(
        &broker,
        "simulator",
        &[
            reading("nord", "s1", 11, now, 22.8, 43.0),
            reading("sud", "s1", 11, now, 31.0, 52.5),
            reading("est", "s1", 0, now, 18.2, 55.0),
            heartbeat("sud", now),
        ],
        QoS::AtLeastOnce,
    )
    .await;
    // An alert of ingest's rules: only the ingest account may publish it.
    publish_all(
        &broker,
        "ingest",
        &[("entrepot/alerts/sud".to_owned(), live_alert.to_json())],
        QoS::AtLeastOnce,
    )
    .await;
    // Well within the page's 30 s refresh: only the event stream can bring these.
    tokio::task::block_in_place(|| {
        page.wait_for(
            "the live reading of nord",
            &format!(
                "{} === '22.8' && {} === '43.0'",
                card_text("nord", ".temp"),
                card_text("nord", ".hum")
            ),
            Duration::from_secs(10),
        );
        page.wait_for(
            "the live critical reading of sud",
            &format!(
                "{} === '31.0' && {} === 'critical'",
                card_text("sud", ".temp"),
                card_text("sud", ".level")
            ),
            Duration::from_secs(10),
        );
        page.wait_for(
            "a card for zone est, which appeared after the page loaded (no heartbeat yet)",
            &format!(
                r##"{} === '18.2' && document.querySelectorAll('[data-zone="est"] svg.chart polyline').length === 2
                    && [...document.querySelectorAll("#zones [data-zone]")].map(c => c.dataset.zone).join() === "est,nord,sud"
                    && document.querySelector('[data-zone="est"] .heartbeat-age').className === "heartbeat-age stale"
                    && document.querySelector('[data-zone="est"] .heartbeat-age').textContent === "none""##,
                card_text("est", ".temp")
            ),
            Duration::from_secs(10),
        );
        page.wait_for(
            "sud's fresh heartbeat",
            r#"!document.querySelector('[data-zone="sud"] .heartbeat-age').classList.contains("stale")"#,
            Duration::from_secs(10),
        );
        page.wait_for(
            "the live alert in the feed",
            &format!(
                r#"document.querySelector('#alerts li[data-id="{}"]')?.dataset.severity === "critical""#,
                live_alert.id
            ),
            Duration::from_secs(10),
        );
    });

    // New thresholds for nord only (PUT /thresholds, published as the retained
    // configuration): its chart lines move and 22.8 °C becomes a warning.
    let mut t = arng::domain::Thresholds::default();
    let mut nord_bands = t.default;
    nord_bands.temp.warning_high = 22.0;
    nord_bands.temp.critical_high = 28.0;
    t.zones.insert(Zone::new("nord").unwrap(), nord_bands);
    let resp = http
        .put(format!("{}/thresholds", serve.url()))
        .bearer_auth(&serve.token)
        .json(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    tokio::task::block_in_place(|| {
        page.wait_for(
            "nord's new thresholds",
            r#"(() => {
                const line = b => Number(document.querySelector(`[data-zone="nord"] svg.chart[data-metric="temp"] line.threshold[data-bound="${b}"]`).dataset.value);
                const sud = Number(document.querySelector(`[data-zone="sud"] svg.chart[data-metric="temp"] line.threshold[data-bound="warning_high"]`).dataset.value);
                return line("warning_high") === 22 && line("critical_high") === 28 && sud === 25;
            })()"#,
            Duration::from_secs(10),
        );
        page.wait_for(
            "nord at warning under its new thresholds",
            &format!("{} === 'warning'", card_text("nord", ".level")),
            Duration::from_secs(5),
        );
    });
    let errors = page.page_errors();
    assert!(errors.is_empty(), "the page reported errors: {errors:#?}");
    // An English browser gets the English page (the French one: the test below).
    let lang = tokio::task::block_in_place(|| page.eval("document.documentElement.lang"));
    assert_eq!(lang, "en");

    let artifacts = common::repo_root().join("target").join("test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let png = artifacts.join("dashboard.png");
    tokio::task::block_in_place(|| page.screenshot(&png));
    let bytes = std::fs::read(&png).unwrap();
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 10_000,
        "{png:?} is not a plausible screenshot ({} bytes)",
        bytes.len()
    );
    println!("dashboard screenshot: {}", png.display());
}

/// The page follows the browser's language: with `Accept-Language: fr` (and
/// `navigator.languages` = fr), every label is French; the hooks stay as they are.
#[tokio::test(flavor = "multi_thread")]
async fn dashboard_speaks_french_to_a_french_browser() {
    let _ = chromium_binary();
    let broker = Mosquitto::start();
    let db = Influxd::start();
    let _ingest = IngestProc::start(&broker, &db, &[]);
    let serve = ServeProc::start(&broker, &db, &[]);
    let now = now_ms();
    // 27.3 °C is a warning under the default thresholds.
    publish_all(
        &broker,
        "simulator",
        &[
            reading("nord", "s1", 0, now - 2_000, 27.3, 50.0),
            heartbeat("nord", now - 1_000),
        ],
        QoS::AtLeastOnce,
    )
    .await;
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/alerts", serve.url()))
        .bearer_auth(&serve.token)
        .json(
            &json!({"zone": "nord", "sensor": "s1", "metric": "temp", "severity": "critical",
                      "value": 31.0, "threshold": 30.0, "message": "porte ouverte"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    eventually("nord in serve's view", Duration::from_secs(30), || async {
        let v = get_json(&format!("{}/zones/nord/latest", serve.url())).await?;
        v["sensors"]
            .as_array()
            .is_some_and(|s| !s.is_empty())
            .then_some(())
    })
    .await;

    let mut page = tokio::task::block_in_place(|| Chromium::launch_in(1280, 900, "fr"));
    let url = format!("{}/", serve.url());
    let state = tokio::task::block_in_place(|| {
        page.navigate(&url);
        page.wait_for(
            "the nord card, the alert and the live stream",
            r##"document.querySelector('[data-zone="nord"] .temp')?.textContent === "27.3"
                && document.querySelectorAll("#alerts li").length > 0
                && document.getElementById("conn").className === "live"
                && document.querySelector('[data-zone="nord"] .heartbeat-age').dataset.ageS !== undefined"##,
            Duration::from_secs(30),
        );
        page.eval(
            r##"(() => {
                const card = document.querySelector('[data-zone="nord"]');
                const li = document.querySelector("#alerts li");
                return {
                    lang: document.documentElement.lang,
                    languages: navigator.languages,
                    title: document.querySelector("body > header h1").textContent,
                    conn: document.getElementById("conn").textContent,
                    alerts_title: document.querySelector("#alert-feed h2").textContent,
                    level: card.querySelector(".level").textContent,
                    data_level: card.dataset.level,
                    unit: card.querySelectorAll(".unit")[1].textContent,
                    newest: card.querySelector(".meta").textContent,
                    heartbeat: card.querySelector("footer").textContent,
                    chart_title: card.querySelector('svg.chart[data-metric="temp"] .title').textContent,
                    chart_label: card.querySelector('svg.chart[data-metric="hum"]').getAttribute("aria-label"),
                    alert_severity: li.querySelector(".severity").textContent,
                    alert_text: li.textContent,
                    alert_hook: li.dataset.severity,
                };
            })()"##,
        )
    });
    let shown = format!("{state:#}");
    assert_eq!(state["lang"], "fr", "{shown}");
    assert_eq!(state["languages"][0], "fr", "{shown}");
    assert_eq!(state["title"], "Entrepôt", "{shown}");
    assert_eq!(state["conn"], "en direct", "{shown}");
    assert_eq!(state["alerts_title"], "Alertes", "{shown}");
    assert_eq!(state["level"], "avertissement", "{shown}");
    assert_eq!(
        state["data_level"], "warning",
        "the hooks stay in English: {shown}"
    );
    assert_eq!(state["unit"], "% HR", "{shown}");
    assert!(
        state["newest"]
            .as_str()
            .unwrap()
            .starts_with("dernière mesure : s1 à "),
        "{shown}"
    );
    assert!(
        state["heartbeat"]
            .as_str()
            .unwrap()
            .starts_with("heartbeat : il y a "),
        "{shown}"
    );
    assert_eq!(
        state["chart_title"], "température °C, dernière heure",
        "{shown}"
    );
    assert_eq!(state["chart_label"], "humidité, dernière heure", "{shown}");
    assert_eq!(state["alert_severity"], "critique", "{shown}");
    assert_eq!(state["alert_hook"], "critical", "{shown}");
    assert!(
        state["alert_text"]
            .as_str()
            .unwrap()
            .contains("nord/s1 température déclenchée: porte ouverte"),
        "{shown}"
    );
    let errors = page.page_errors();
    assert!(errors.is_empty(), "the page reported errors: {errors:#?}");
}

#[test]
fn base64_decodes_what_chromium_sends() {
    assert_eq!(base64_decode("aGVsbG8="), b"hello");
    assert_eq!(base64_decode("aGVsbG8hIQ=="), b"hello!!");
    assert_eq!(base64_decode("YWJj"), b"abc");
    assert_eq!(base64_decode(""), b"");
}
