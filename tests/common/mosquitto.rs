//! A real Mosquitto broker for integration tests.
//!
//! `Mosquitto::start_with("qos1.conf")` renders that project config
//! (`mosquitto-conf/qos1.conf`) for a free loopback port into a temp dir with
//! `scripts/broker-config.sh render`, so the test runs the settings that ship, not a
//! test-only config. The broker is a child process; dropping the handle kills it, and
//! when the test is panicking its log is printed to stderr. A machine without
//! mosquitto fails loudly: these tests are never skipped.
//!
//! `Mosquitto::start_tls()` runs `mosquitto-conf/tls.conf` (plain, TLS and mutual-TLS
//! listeners, each on its own free port) with certificates that
//! `scripts/gen-certs.sh` makes with openssl in the broker's temp dir; a machine
//! without openssl fails the same way.
//!
//! Blocking std code only, so sync and async tests can both call it (from an async
//! test it briefly blocks the runtime thread while the broker starts or stops).
#![allow(dead_code)] // each test binary uses a different part of `common`

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a broker may take to open its port, or to exit after SIGTERM.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Ports come from `free_port()`, which releases the port before mosquitto binds it;
/// another process may take it in between, so a few attempts with new ports.
const PORT_ATTEMPTS: usize = 5;

/// The broker's own log (log_dest file in the rendered config).
const LOG_FILE: &str = "mosquitto.log";
/// What mosquitto writes before its log file is open (bad config, root warning).
const OUTPUT_FILE: &str = "mosquitto.out";

/// A running Mosquitto on 127.0.0.1:`port`, killed on drop.
pub struct Mosquitto {
    /// The plain MQTT listener.
    pub port: u16,
    /// With `start_tls`: the TLS listener (tls.conf's 8883) and the mutual-TLS one
    /// (8884, client certificate required).
    pub tls_port: Option<u16>,
    pub mutual_tls_port: Option<u16>,
    dir: tempfile::TempDir,
    child: Option<Child>,
    conf_name: String,
}

/// The directory of the broker's certificates, under its temp dir.
const CERTS_DIR: &str = "certs";

impl Mosquitto {
    /// Starts the reference configuration, `mosquitto-conf/mosquitto.conf`.
    pub fn start() -> Self {
        Self::start_with("mosquitto.conf")
    }

    /// Starts `mosquitto-conf/<conf_name>` (e.g. `"qos1.conf"`) on a free port.
    pub fn start_with(conf_name: &str) -> Self {
        Self::start_listeners(conf_name, 1, false, None, &[])
    }

    /// Like [`Mosquitto::start_with`], with some settings of the rendered copy
    /// changed (`("max_queued_messages", "0")`): each replaces the line that sets that
    /// option, which must exist, so a test cannot set an option the config lacks
    /// without saying so.
    pub fn start_with_settings(conf_name: &str, settings: &[(&str, &str)]) -> Self {
        Self::start_listeners(conf_name, 1, false, None, settings)
    }

    /// Starts `mosquitto-conf/tls.conf`: plain, TLS and mutual-TLS listeners on free
    /// ports, with a CA, server and client certificates made by
    /// `scripts/gen-certs.sh` in `<temp dir>/certs` (see [`Mosquitto::cert`]).
    pub fn start_tls() -> Self {
        Self::start_listeners("tls.conf", 3, true, None, &[])
    }

    /// Starts a site broker from `conf` (`"bridge.conf"`, or the absolute path of a
    /// variant of it) whose bridge connects to `central` (`HOST:PORT`, given to
    /// `scripts/broker-config.sh` as `ARNG_BRIDGE_ADDRESS`). With `certs`, the
    /// bridge's TLS files are taken from that directory (another broker's
    /// `start_tls` certificates).
    pub fn start_site(conf: &str, central: &str, certs: Option<&Path>) -> Self {
        let bridge = Bridge {
            address: central.to_owned(),
            certs: certs.map(Path::to_path_buf),
        };
        Self::start_listeners(conf, 1, false, Some(bridge), &[])
    }

    fn start_listeners(
        conf_name: &str,
        listeners: usize,
        tls: bool,
        bridge: Option<Bridge>,
        settings: &[(&str, &str)],
    ) -> Self {
        let binary = mosquitto_binary();
        let dir = tempfile::Builder::new()
            .prefix("arng-mosquitto-")
            .tempdir()
            .expect("cannot create a temp dir for mosquitto");
        let certs = tls
            .then(|| {
                let certs = dir.path().join(CERTS_DIR);
                generate_certs(&certs);
                certs
            })
            .or_else(|| bridge.as_ref().and_then(|b| b.certs.clone()));
        let env: Vec<(&str, &str)> = bridge
            .as_ref()
            .map(|b| vec![("ARNG_BRIDGE_ADDRESS", b.address.as_str())])
            .unwrap_or_default();
        let mut failures = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            let ports: Vec<u16> = (0..listeners).map(|_| super::free_port()).collect();
            render(conf_name, dir.path(), &ports, certs.as_deref(), &env);
            change_settings(&dir.path().join("mosquitto.conf"), settings);
            match launch(&binary, dir.path(), ports[0]) {
                Ok(child) => {
                    return Mosquitto {
                        port: ports[0],
                        tls_port: ports.get(1).copied(),
                        mutual_tls_port: ports.get(2).copied(),
                        dir,
                        child: Some(child),
                        conf_name: conf_name.to_owned(),
                    }
                }
                Err(Launch::PortTaken) => failures.push(format!("ports {ports:?}: one was taken")),
                Err(Launch::Failed(why)) => panic!(
                    "mosquitto ({conf_name}, ports {ports:?}) did not start: {why}\n{}",
                    read_log(dir.path())
                ),
            }
        }
        panic!(
            "mosquitto ({conf_name}) found no free port after {PORT_ATTEMPTS} attempts: {}\n{}",
            failures.join(", "),
            read_log(dir.path())
        );
    }

    /// The rendered config this broker runs (`mosquitto.conf` in its temp dir).
    pub fn rendered_config(&self) -> String {
        fs::read_to_string(self.dir.path().join("mosquitto.conf")).unwrap_or_default()
    }

    /// SIGKILL: no save of the persistence database, as in a power cut.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again after `stop` or `kill9`, on the same port and files.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "start_again: the broker is running");
        self.restart();
    }

    /// `mqtt://127.0.0.1:PORT`, the form of `--mqtt-url` / `ARNG_MQTT_URL`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// `mqtts://127.0.0.1:PORT` of the TLS listener (`start_tls` only).
    pub fn tls_url(&self) -> String {
        let port = self
            .tls_port
            .expect("tls_url: start the broker with start_tls()");
        format!("mqtts://127.0.0.1:{port}")
    }

    /// `mqtts://127.0.0.1:PORT` of the mutual-TLS listener (`start_tls` only).
    pub fn mutual_tls_url(&self) -> String {
        let port = self
            .mutual_tls_port
            .expect("mutual_tls_url: start the broker with start_tls()");
        format!("mqtts://127.0.0.1:{port}")
    }

    /// A file made by scripts/gen-certs.sh for this broker: `ca.crt`, `client.crt`,
    /// `client.key`... (`start_tls` only).
    pub fn cert(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(CERTS_DIR).join(name);
        assert!(
            path.is_file(),
            "no {} (start the broker with start_tls())",
            path.display()
        );
        path
    }

    /// The broker's log so far (all runs of this broker, restarts included), plus
    /// anything it printed before opening the log.
    pub fn log(&self) -> String {
        read_log(self.dir.path())
    }

    /// SIGTERM, then waits for the exit: Mosquitto saves its persistence database
    /// on a clean stop, which is what `restart` relies on.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id().to_string();
        // std has no way to send SIGTERM; kill(1) does.
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        if !matches!(sent, Ok(status) if status.success()) {
            let _ = child.kill();
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "mosquitto ({}) did not exit within {STOP_TIMEOUT:?} of SIGTERM\n{}",
                        self.conf_name,
                        self.log()
                    );
                }
            }
        }
    }

    /// Stops the broker and starts it again on the same port with the same files,
    /// so retained messages and persistent sessions come back from disk.
    pub fn restart(&mut self) {
        self.stop();
        match launch(&mosquitto_binary(), self.dir.path(), self.port) {
            Ok(child) => self.child = Some(child),
            Err(Launch::PortTaken) => panic!(
                "mosquitto ({}) cannot restart: port {} was taken while it was stopped\n{}",
                self.conf_name,
                self.port,
                self.log()
            ),
            Err(Launch::Failed(why)) => panic!(
                "mosquitto ({}) did not restart: {why}\n{}",
                self.conf_name,
                self.log()
            ),
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "----- mosquitto log ({}, {}, {}) -----\n{}----- end of mosquitto log -----",
                self.conf_name,
                self.url(),
                self.dir.path().display(),
                self.log()
            );
        }
    }
}

/// `(user, password)` of a development account from `mosquitto-conf/dev-accounts`.
pub fn account(user: &str) -> (String, String) {
    let path = super::repo_root().join("mosquitto-conf/dev-accounts");
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| *name == user)
        .map(|(name, password)| (name.to_owned(), password.to_owned()))
        .unwrap_or_else(|| panic!("no account {user:?} in {}", path.display()))
}

/// What a site broker's bridge connects to (`start_site`).
struct Bridge {
    address: String,
    certs: Option<PathBuf>,
}

enum Launch {
    /// Mosquitto could not bind the port: retry with another one.
    PortTaken,
    Failed(String),
}

/// The mosquitto executable: PATH first, then Debian's /usr/sbin (not in the PATH
/// of non-root users).
fn mosquitto_binary() -> PathBuf {
    let in_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("mosquitto"));
    in_path
        .chain([PathBuf::from("/usr/sbin/mosquitto")])
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("mosquitto not found: run scripts/test.sh or apt-get install mosquitto")
        })
}

/// `scripts/gen-certs.sh DIR`: a CA, a server certificate for 127.0.0.1/localhost and
/// a client certificate, with openssl. Each call makes a new, unrelated CA.
pub fn generate_certs(dir: &Path) {
    run_script(
        "scripts/gen-certs.sh",
        &[dir.as_os_str()],
        "openssl is needed (scripts/test.sh installs it)",
    );
}

/// `scripts/broker-config.sh render mosquitto-conf/<conf_name> DIR PORTS [CERT_DIR]`
/// (`conf_name` may also be an absolute path), with `env` set for the script.
fn render(conf_name: &str, dir: &Path, ports: &[u16], certs: Option<&Path>, env: &[(&str, &str)]) {
    let source = super::repo_root().join("mosquitto-conf").join(conf_name);
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let ports = ports.join(",");
    let mut args = vec![
        OsStr::new("render"),
        source.as_os_str(),
        dir.as_os_str(),
        OsStr::new(&ports),
    ];
    args.extend(certs.map(Path::as_os_str));
    run_script_with("scripts/broker-config.sh", &args, "", env);
}

/// Replaces, in a rendered config, the line of each option in `settings`.
fn change_settings(conf: &Path, settings: &[(&str, &str)]) {
    if settings.is_empty() {
        return;
    }
    let text = fs::read_to_string(conf).expect("cannot read the rendered mosquitto.conf");
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for (key, value) in settings {
        let line = lines
            .iter_mut()
            .find(|l| l.split_whitespace().next() == Some(*key))
            .unwrap_or_else(|| panic!("{} has no `{key}` line to change", conf.display()));
        *line = format!("{key} {value}");
    }
    fs::write(conf, lines.join("\n") + "\n").expect("cannot write the rendered mosquitto.conf");
}

/// Runs a bash script of the repository; panics with its output (and `hint`) if it
/// fails.
fn run_script(script: &str, args: &[&OsStr], hint: &str) {
    run_script_with(script, args, hint, &[]);
}

/// `run_script` with environment variables for the script.
fn run_script_with(script: &str, args: &[&OsStr], hint: &str, env: &[(&str, &str)]) {
    let script = super::repo_root().join(script);
    let output = Command::new("bash")
        .arg(&script)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "{} {args:?} failed ({}) {hint}:\n{}{}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

/// Spawns the broker on the rendered config and waits until it serves `port`.
fn launch(binary: &Path, dir: &Path, port: u16) -> Result<Child, Launch> {
    // Readiness is judged on what this run appends to the log (a restart appends
    // to the log of the previous run).
    let log_start = file_len(&dir.join(LOG_FILE));
    let output_start = file_len(&dir.join(OUTPUT_FILE));
    let output = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(OUTPUT_FILE))
        .expect("cannot create the mosquitto output file");
    let mut child = Command::new(binary)
        .arg("-c")
        .arg(dir.join("mosquitto.conf"))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(output.try_clone().expect("cannot share the output file"))
        .stderr(output)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));

    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let this_run = read_from(&dir.join(LOG_FILE), log_start)
                + &read_from(&dir.join(OUTPUT_FILE), output_start);
            return Err(if this_run.contains("Address already in use") {
                Launch::PortTaken
            } else {
                Launch::Failed(format!("it exited with {status}"))
            });
        }
        // Mosquitto logs "... running" only once every listener is bound. Checking
        // for it, and not only for an open port, avoids mistaking another process
        // that holds the port for our broker.
        let running = read_from(&dir.join(LOG_FILE), log_start)
            .lines()
            .any(|line| line.contains("mosquitto version") && line.ends_with(" running"));
        if running && TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Launch::Failed(format!(
                "port {port} not serving within {START_TIMEOUT:?}"
            )));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn read_log(dir: &Path) -> String {
    let mut log = read_from(&dir.join(LOG_FILE), 0);
    let output = read_from(&dir.join(OUTPUT_FILE), 0);
    if !output.trim().is_empty() {
        log.push_str("--- mosquitto stdout/stderr ---\n");
        log.push_str(&output);
    }
    log
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The file's text from byte `offset` on; empty if it does not exist yet.
fn read_from(path: &Path, offset: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut text = Vec::new();
    if let Ok(mut file) = File::open(path) {
        if file.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = file.read_to_end(&mut text);
        }
    }
    let mut text = String::from_utf8_lossy(&text).into_owned();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text
}
