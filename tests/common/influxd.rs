//! A real InfluxDB 2 (`influxd`) per test, on a free loopback port, with its data in a
//! temp dir, set up with the reference stack's org `ares`, bucket `entrepot` and token
//! `dev-token`.
//!
//! The binary comes from `$ARNG_INFLUXD`, else the cache that `scripts/build-influxd.sh`
//! fills (`~/.cache/arng/influxd-<version>/influxd`), else `influxd` on the PATH.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arng::config::{InfluxArgs, Secret};

pub const ORG: &str = "ares";
pub const BUCKET: &str = "entrepot";
pub const TOKEN: &str = "dev-token";

pub struct Influxd {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn influxd_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("ARNG_INFLUXD") {
        return PathBuf::from(p);
    }
    let version = std::env::var("ARNG_INFLUXD_VERSION").unwrap_or_else(|_| "2.7.12".into());
    let cache = std::env::var_os("ARNG_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
                })
                .join("arng")
        });
    let cached = cache.join(format!("influxd-{version}")).join("influxd");
    if cached.exists() {
        return cached;
    }
    if let Some(found) = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("influxd"))
        .find(|p| p.exists())
    {
        return found;
    }
    panic!(
        "influxd not found (looked at $ARNG_INFLUXD, {}, and PATH): run scripts/test.sh, \
         or scripts/build-influxd.sh to build it",
        cached.display()
    );
}

/// A minimal HTTP/1.0 exchange, so the harness needs no async runtime.
pub fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Token {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

impl Influxd {
    /// Starts a fresh server that has not been set up yet.
    pub fn start_without_setup() -> Influxd {
        let dir = tempfile::Builder::new()
            .prefix("arng-influxd-")
            .tempdir()
            .expect("temp dir");
        let mut me = Influxd {
            port: 0,
            dir,
            child: None,
        };
        me.launch_on_free_port();
        me
    }

    /// Starts a fresh server and performs the first-time setup.
    pub fn start() -> Influxd {
        let setup = format!(
            r#"{{"username":"admin","password":"admin-dev-password","org":"{ORG}","bucket":"{BUCKET}","token":"{TOKEN}","retentionPeriodSeconds":0}}"#
        );
        for _ in 0..5 {
            let mut me = Influxd::start_without_setup();
            let (status, body) =
                http(me.port, "POST", "/api/v2/setup", &setup).expect("setup request");
            if status == 201 {
                return me;
            }
            // Another test's server answered on this port (ours lost the race to bind
            // it): try again elsewhere.
            eprintln!(
                "influxd setup on port {} answered {status}: {body}; retrying on another port",
                me.port
            );
            me.stop();
        }
        panic!("influxd setup failed 5 times");
    }

    fn launch_on_free_port(&mut self) {
        for _ in 0..5 {
            self.port = super::free_port();
            if self.launch() {
                return;
            }
        }
        panic!("influxd did not start after 5 attempts:\n{}", self.log());
    }

    /// Spawns influxd on `self.port` and waits for it; false if it exited (port taken).
    fn launch(&mut self) -> bool {
        let d = self.dir.path();
        let log = std::fs::File::create(d.join("influxd.log")).expect("log file");
        let child = Command::new(influxd_binary())
            .current_dir(d)
            .env("INFLUXD_CONFIG_PATH", d.join("no-config"))
            .args(["--bolt-path", &d.join("influxd.bolt").to_string_lossy()])
            .args(["--engine-path", &d.join("engine").to_string_lossy()])
            .args(["--sqlite-path", &d.join("influxd.sqlite").to_string_lossy()])
            .args(["--http-bind-address", &format!("127.0.0.1:{}", self.port)])
            .args(["--reporting-disabled", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("cannot spawn influxd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return false;
            }
            if let Ok((200, body)) = http(self.port, "GET", "/health", "") {
                // The answer may come from another test's server that holds this port
                // while ours fails to bind it: ours must still be alive a moment later.
                std::thread::sleep(Duration::from_millis(300));
                let alive = matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)));
                if !alive {
                    self.child = None;
                    return false;
                }
                if body.contains("\"pass\"") {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("influxd not healthy after 60 s:\n{}", self.log());
    }

    /// Gives the bucket a retention period (the setup leaves it at forever, as a
    /// team that forgot it would).
    pub fn set_retention(&self, seconds: u64) {
        let (status, body) = http(
            self.port,
            "GET",
            &format!("/api/v2/buckets?name={BUCKET}"),
            "",
        )
        .expect("GET /api/v2/buckets");
        assert_eq!(status, 200, "{body}");
        let buckets: serde_json::Value = serde_json::from_str(&body).expect("JSON buckets");
        let id = buckets["buckets"][0]["id"]
            .as_str()
            .expect("the bucket's id");
        let rules =
            format!(r#"{{"retentionRules":[{{"type":"expire","everySeconds":{seconds}}}]}}"#);
        let (status, body) = http(self.port, "PATCH", &format!("/api/v2/buckets/{id}"), &rules)
            .expect("PATCH /api/v2/buckets/{id}");
        assert_eq!(status, 200, "{body}");
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Connection options for the library, as the CLI would build them.
    pub fn args(&self) -> InfluxArgs {
        InfluxArgs {
            url: self.url().parse().unwrap(),
            org: ORG.into(),
            bucket: BUCKET.into(),
            token: Secret::new(TOKEN),
        }
    }

    /// The environment a subcommand needs to use this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("INFLUX_URL", self.url()),
            ("INFLUX_ORG", ORG.into()),
            ("INFLUX_BUCKET", BUCKET.into()),
            ("INFLUX_TOKEN", TOKEN.into()),
        ]
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("influxd.log")).unwrap_or_default()
    }

    /// Stops the server (SIGTERM, then SIGKILL after 10 s); data stays on disk.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the stopped server again on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.launch(),
            "influxd did not restart on port {}:\n{}",
            self.port,
            self.log()
        );
    }
}

impl Drop for Influxd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "----- influxd log (port {}) -----\n{}",
                self.port,
                self.log()
            );
        }
    }
}
