//! docker-compose.yml without Docker: what can be checked on a machine with no Docker
//! engine (README, "What was verified where").
//!
//! - The file parses (YAML, anchors and merge keys) and has the expected shape: the six
//!   services, a healthcheck and a restart policy on each, start order gated on
//!   healthchecks, named volumes, ports published on loopback only, every bind-mounted
//!   file present in the repository.
//! - The InfluxDB init values equal what `scripts/services.sh`, the test harness, arng's
//!   own defaults and the Grafana datasource use.
//! - The broker: the config compose mounts points at the password file and ACL its
//!   entrypoint (`deploy/mosquitto/entrypoint.sh`) writes; that entrypoint, run for
//!   real on a temp dir, produces files a real Mosquitto started on that config
//!   accepts for every development account.
//! - The arng services: each one's command line and environment, taken from the file
//!   and only re-pointed at local servers (host names, ports, the spool path), is
//!   accepted by the real binary (no usage error, exit code 2) and actually runs the
//!   chain against a real Mosquitto and influxd: readings of the three zones reach
//!   InfluxDB, the API answers `/zones/nord/latest`, and the healthcheck commands of
//!   ingest, api and sensor pass.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::chain::{count_points, http_get};
use common::influxd::Influxd;
use common::mosquitto::{account, Mosquitto};
use common::{arng_bin, free_port, repo_root};
use serde_norway::Value;

// ----- reading the compose file -------------------------------------------------------

/// docker-compose.yml, parsed, with YAML merge keys (`<<: *anchor`) applied as compose
/// applies them.
fn compose() -> Value {
    let path = repo_root().join("docker-compose.yml");
    let text = std::fs::read_to_string(&path).expect("read docker-compose.yml");
    let mut v: Value = serde_norway::from_str(&text)
        .unwrap_or_else(|e| panic!("docker-compose.yml is not valid YAML: {e}"));
    v.apply_merge().expect("merge keys");
    v
}

/// Compose's variable interpolation for the forms this file uses: `$$` is a literal
/// `$`, `${NAME:-default}` is the default (the tests run with nothing set). Any other
/// `$` form fails the test, so a new variable gets a default or a test.
fn interpolate(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('{') {
            let end = r
                .find('}')
                .unwrap_or_else(|| panic!("unclosed ${{ in {s:?}"));
            let (_, default) = r[..end]
                .split_once(":-")
                .unwrap_or_else(|| panic!("variable without a default in {s:?}"));
            out.push_str(default);
            rest = &r[end + 1..];
        } else {
            panic!("bare `$` in {s:?}: write $$ for a literal dollar");
        }
    }
    out.push_str(rest);
    out
}

fn service<'a>(c: &'a Value, name: &str) -> &'a Value {
    let s = &c["services"][name];
    assert!(!s.is_null(), "docker-compose.yml has no service {name:?}");
    s
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => interpolate(s),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

fn list(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(items) => items.iter().map(str_of).collect(),
        Value::Null => Vec::new(),
        other => panic!("expected a list, got {other:?}"),
    }
}

/// A service's `environment` (mapping form), interpolated.
fn environment(s: &Value) -> BTreeMap<String, String> {
    match &s["environment"] {
        Value::Mapping(m) => m.iter().map(|(k, v)| (str_of(k), str_of(v))).collect(),
        Value::Null => BTreeMap::new(),
        other => panic!("environment must be a mapping, got {other:?}"),
    }
}

/// `(source, target, read_only)` of each short-syntax volume.
fn volumes(s: &Value) -> Vec<(String, String, bool)> {
    list(&s["volumes"])
        .iter()
        .map(|v| {
            let parts: Vec<&str> = v.split(':').collect();
            match parts.as_slice() {
                [src, dst] => (src.to_string(), dst.to_string(), false),
                [src, dst, mode] => (src.to_string(), dst.to_string(), *mode == "ro"),
                _ => panic!("unexpected volume syntax {v:?}"),
            }
        })
        .collect()
}

/// The healthcheck command as a shell would run it: `CMD` arguments, or the
/// `CMD-SHELL` string.
enum Check {
    Exec(Vec<String>),
    Shell(String),
}

fn healthcheck(s: &Value) -> Check {
    let test = list(&s["healthcheck"]["test"]);
    match test.first().map(String::as_str) {
        Some("CMD") => Check::Exec(test[1..].to_vec()),
        Some("CMD-SHELL") => {
            assert_eq!(test.len(), 2, "CMD-SHELL takes one string: {test:?}");
            Check::Shell(test[1].clone())
        }
        _ => panic!("healthcheck test must start with CMD or CMD-SHELL: {test:?}"),
    }
}

const SERVICES: [&str; 6] = ["broker", "influxdb", "ingest", "api", "sensor", "grafana"];
const ARNG_SERVICES: [&str; 3] = ["ingest", "api", "sensor"];

// ----- the file's shape -----------------------------------------------------------------

#[test]
fn compose_file_has_the_reference_stack() {
    let c = compose();
    let names: BTreeSet<String> = c["services"]
        .as_mapping()
        .expect("services")
        .keys()
        .map(str_of)
        .collect();
    let expected: BTreeSet<String> = SERVICES.iter().map(|s| s.to_string()).collect();
    assert_eq!(names, expected, "services of docker-compose.yml");

    let declared: BTreeSet<String> = c["volumes"]
        .as_mapping()
        .expect("top-level volumes")
        .keys()
        .map(str_of)
        .collect();
    let mut used = BTreeSet::new();

    for name in SERVICES {
        let s = service(&c, name);
        assert_eq!(
            str_of(&s["restart"]),
            "unless-stopped",
            "{name}: restart policy"
        );
        let hc = &s["healthcheck"];
        assert!(!hc["test"].is_null(), "{name}: no healthcheck");
        for key in ["interval", "timeout", "retries"] {
            assert!(!hc[key].is_null(), "{name}: healthcheck without {key}");
        }
        // Every dependency waits for the peer's healthcheck, not just its start.
        if let Some(deps) = s["depends_on"].as_mapping() {
            for (dep, cond) in deps {
                assert_eq!(
                    str_of(&cond["condition"]),
                    "service_healthy",
                    "{name} depends on {} without condition: service_healthy",
                    str_of(dep)
                );
                assert!(
                    !service(&c, &str_of(dep))["healthcheck"].is_null(),
                    "{name} waits for {}, which has no healthcheck",
                    str_of(dep)
                );
            }
        }
        // Published ports: loopback only (the credentials are public dev values).
        for p in list(&s["ports"]) {
            assert!(
                p.starts_with("127.0.0.1:"),
                "{name}: port {p:?} must be published on 127.0.0.1 only"
            );
        }
        for (src, dst, ro) in volumes(s) {
            if let Some(rel) = src.strip_prefix("./") {
                assert!(
                    repo_root().join(rel).exists(),
                    "{name}: bind mount source {src} does not exist"
                );
                assert!(ro, "{name}: repository files are mounted read-only ({src})");
            } else {
                assert!(
                    declared.contains(&src),
                    "{name}: volume {src} (at {dst}) is not declared under volumes:"
                );
                used.insert(src);
            }
        }
    }
    assert_eq!(used, declared, "declared named volumes vs used ones");

    // Only what a user needs is published: API, Grafana, and broker and InfluxDB for
    // the lab's mosquitto_sub/curl exercises.
    let published: BTreeMap<&str, Vec<String>> = SERVICES
        .iter()
        .map(|n| (*n, list(&service(&c, n)["ports"])))
        .filter(|(_, p)| !p.is_empty())
        .collect();
    let expected: BTreeMap<&str, Vec<String>> = [
        ("api", vec!["127.0.0.1:8000:8000".to_owned()]),
        ("broker", vec!["127.0.0.1:1883:1883".to_owned()]),
        ("grafana", vec!["127.0.0.1:3000:3000".to_owned()]),
        ("influxdb", vec!["127.0.0.1:8086:8086".to_owned()]),
    ]
    .into_iter()
    .collect();
    assert_eq!(published, expected);

    // Start order: nothing writes before its peers are ready.
    let deps = |n: &str| -> BTreeSet<String> {
        service(&c, n)["depends_on"]
            .as_mapping()
            .map(|m| m.keys().map(str_of).collect())
            .unwrap_or_default()
    };
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(deps("ingest"), set(&["broker", "influxdb"]));
    assert_eq!(deps("api"), set(&["broker", "influxdb"]));
    assert_eq!(deps("sensor"), set(&["broker", "ingest"]));
    assert_eq!(deps("grafana"), set(&["influxdb"]));
    assert!(deps("broker").is_empty() && deps("influxdb").is_empty());
}

#[test]
fn arng_services_share_one_image_built_by_the_dockerfile() {
    let c = compose();
    for name in ARNG_SERVICES {
        let s = service(&c, name);
        assert_eq!(str_of(&s["build"]["context"]), ".", "{name}: build context");
        assert_eq!(str_of(&s["build"]["dockerfile"]), "Dockerfile", "{name}");
        assert_eq!(str_of(&s["image"]), "arng:local", "{name}: image name");
    }
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).unwrap();
    let has = |needle: &str| dockerfile.lines().any(|l| l.contains(needle));
    // Services give the subcommand as their command: the entrypoint must be arng.
    assert!(has(r#"ENTRYPOINT ["arng"]"#), "Dockerfile entrypoint");
    assert!(
        has("cargo build --release --locked"),
        "release build, locked"
    );
    assert!(
        has("AS builder") && has("COPY --from=builder"),
        "multi-stage"
    );
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "non-root: {user}"
    );
    // The curl-based healthchecks need curl in the runtime image.
    let runtime = dockerfile
        .split("AS runtime")
        .nth(1)
        .expect("a runtime stage");
    for name in ["ingest", "api"] {
        let uses_curl = match healthcheck(service(&c, name)) {
            Check::Exec(args) => args[0] == "curl",
            Check::Shell(cmd) => cmd.starts_with("curl "),
        };
        assert!(uses_curl, "{name}: healthcheck expected to use curl");
    }
    assert!(
        runtime.contains("ca-certificates curl"),
        "curl installed in the runtime stage"
    );
    // The ingest spool is a named volume at a directory the image creates for arng.
    let ingest = service(&c, "ingest");
    let spool_arg = list(&ingest["command"])
        .windows(2)
        .find(|w| w[0] == "--spool-dir")
        .map(|w| w[1].clone())
        .expect("ingest --spool-dir");
    assert!(
        volumes(ingest)
            .iter()
            .any(|(src, dst, _)| src == "ingest-spool" && *dst == spool_arg),
        "the spool dir {spool_arg} is the ingest-spool volume"
    );
    assert!(
        runtime.contains(&format!(
            "-o arng -g arng -m 0750 /var/lib/arng {spool_arg}"
        )),
        "the image creates {spool_arg} owned by arng"
    );
}

/// `KEY=value` assignments of scripts/services.sh.
fn services_sh_value(key: &str) -> String {
    let text = std::fs::read_to_string(repo_root().join("scripts/services.sh")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(|v| v.split_whitespace().next().unwrap_or("").to_owned())
        .unwrap_or_else(|| panic!("no {key}= in scripts/services.sh"))
}

#[test]
fn influxdb_init_values_match_services_sh_the_harness_and_arng_defaults() {
    let c = compose();
    let env = environment(service(&c, "influxdb"));
    let get = |k: &str| {
        env.get(k)
            .cloned()
            .unwrap_or_else(|| panic!("influxdb: no {k}"))
    };
    assert_eq!(get("DOCKER_INFLUXDB_INIT_MODE"), "setup");
    assert_eq!(
        get("DOCKER_INFLUXDB_INIT_ORG"),
        services_sh_value("influx_org")
    );
    assert_eq!(
        get("DOCKER_INFLUXDB_INIT_BUCKET"),
        services_sh_value("influx_bucket")
    );
    assert_eq!(
        get("DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"),
        services_sh_value("influx_token")
    );
    assert_eq!(
        get("DOCKER_INFLUXDB_INIT_USERNAME"),
        services_sh_value("influx_user")
    );
    assert_eq!(
        get("DOCKER_INFLUXDB_INIT_PASSWORD"),
        services_sh_value("influx_password")
    );
    // "30d" in compose, seconds in services.sh.
    let retention = get("DOCKER_INFLUXDB_INIT_RETENTION");
    let days: u64 = retention
        .strip_suffix('d')
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("retention {retention:?} is not <N>d"));
    assert_eq!(
        (days * 86_400).to_string(),
        services_sh_value("influx_retention_seconds"),
        "raw bucket retention"
    );
    // The test harness and arng's own defaults (CONTRACT.md) are the same stack.
    assert_eq!(
        (
            common::influxd::ORG,
            common::influxd::BUCKET,
            common::influxd::TOKEN
        ),
        (
            get("DOCKER_INFLUXDB_INIT_ORG").as_str(),
            get("DOCKER_INFLUXDB_INIT_BUCKET").as_str(),
            get("DOCKER_INFLUXDB_INIT_ADMIN_TOKEN").as_str()
        )
    );
    for name in ARNG_SERVICES {
        let e = environment(service(&c, name));
        assert_eq!(e["INFLUX_URL"], "http://influxdb:8086", "{name}");
        assert_eq!(e["INFLUX_ORG"], get("DOCKER_INFLUXDB_INIT_ORG"), "{name}");
        assert_eq!(
            e["INFLUX_BUCKET"],
            get("DOCKER_INFLUXDB_INIT_BUCKET"),
            "{name}"
        );
        assert_eq!(
            e["INFLUX_TOKEN"],
            get("DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"),
            "{name}"
        );
        assert_eq!(e["ARNG_MQTT_URL"], "mqtt://broker:1883", "{name}");
    }
    // Grafana's datasource talks to the same InfluxDB with the same org and token.
    let ds: Value = serde_norway::from_str(
        &std::fs::read_to_string(
            repo_root().join("deploy/grafana/provisioning/datasources/influxdb.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    let d = &ds["datasources"][0];
    assert_eq!(str_of(&d["url"]), "http://influxdb:8086");
    assert_eq!(str_of(&d["jsonData"]["version"]), "Flux");
    assert_eq!(
        str_of(&d["jsonData"]["organization"]),
        get("DOCKER_INFLUXDB_INIT_ORG")
    );
    assert_eq!(
        str_of(&d["jsonData"]["defaultBucket"]),
        get("DOCKER_INFLUXDB_INIT_BUCKET")
    );
    assert_eq!(
        str_of(&d["secureJsonData"]["token"]),
        get("DOCKER_INFLUXDB_INIT_ADMIN_TOKEN")
    );
    // The init script that creates the downsampled bucket is mounted and executable
    // (the image's run-parts skips files without the x bit).
    let influx = service(&c, "influxdb");
    let initdb = volumes(influx)
        .into_iter()
        .find(|(_, dst, _)| dst == "/docker-entrypoint-initdb.d")
        .expect("an init script directory");
    let dir = repo_root().join(initdb.0.trim_start_matches("./"));
    let scripts: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sh"))
        .collect();
    assert!(!scripts.is_empty(), "no *.sh in {}", dir.display());
    for s in &scripts {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(s).unwrap().permissions().mode();
        assert!(mode & 0o111 != 0, "{} must be executable", s.display());
    }
    let targets: BTreeMap<String, String> = volumes(influx)
        .into_iter()
        .map(|(src, dst, _)| (dst, src))
        .collect();
    assert_eq!(
        targets["/arng/influx-setup.sh"],
        "./scripts/influx-setup.sh"
    );
    assert_eq!(
        targets[&environment(influx)["ARNG_DOWNSAMPLE_FLUX"]],
        "./deploy/influxdb/downsample-1m.flux"
    );
}

// ----- the broker ---------------------------------------------------------------------------

/// The broker's mounts: (config file in the repository, its mount target, the
/// mosquitto-conf mount target, the entrypoint script).
struct BrokerMounts {
    conf_source: PathBuf,
    conf_target: String,
    conf_dir_target: String,
    data_target: String,
}

fn broker_mounts(c: &Value) -> BrokerMounts {
    let b = service(c, "broker");
    let vols = volumes(b);
    let conf = vols
        .iter()
        .find(|(src, _, _)| src.starts_with("./mosquitto-conf/") && src.ends_with(".conf"))
        .expect("a mounted mosquitto-conf/*.conf");
    let dir = vols
        .iter()
        .find(|(src, _, _)| src == "./mosquitto-conf")
        .expect("mosquitto-conf/ mounted");
    let data = vols
        .iter()
        .find(|(src, _, _)| src == "broker-data")
        .expect("broker-data volume");
    let entry = list(&b["entrypoint"]);
    let script = vols
        .iter()
        .find(|(_, dst, _)| entry.contains(dst))
        .expect("the entrypoint script is mounted");
    assert_eq!(script.0, "./deploy/mosquitto/entrypoint.sh");
    assert_eq!(
        list(&b["command"]),
        ["mosquitto", "-c", conf.1.as_str()],
        "the broker runs the mounted config"
    );
    BrokerMounts {
        conf_source: repo_root().join(conf.0.trim_start_matches("./")),
        conf_target: conf.1.clone(),
        conf_dir_target: dir.1.clone(),
        data_target: data.1.clone(),
    }
}

/// Values of `key` in a Mosquitto config (active lines only).
fn conf_values(conf: &str, key: &str) -> Vec<String> {
    conf.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            (it.next() == Some(key)).then(|| it.collect::<Vec<_>>().join(" "))
        })
        .collect()
}

#[test]
fn broker_config_points_at_what_the_entrypoint_writes() {
    let c = compose();
    let m = broker_mounts(&c);
    assert_eq!(
        m.conf_source,
        repo_root().join("mosquitto-conf/mosquitto.conf")
    );
    let conf = std::fs::read_to_string(&m.conf_source).unwrap();
    let entry =
        std::fs::read_to_string(repo_root().join("deploy/mosquitto/entrypoint.sh")).unwrap();
    let default_of = |var: &str| -> String {
        let needle = format!("{}=${{{var}:-", var_to_shell(var));
        let start = entry
            .find(&needle)
            .unwrap_or_else(|| panic!("entrypoint has no default for {var}"))
            + needle.len();
        entry[start..].split('}').next().unwrap().to_owned()
    };
    let conf_dir = default_of("ARNG_BROKER_CONF_DIR");
    let conf_target_dir = Path::new(&m.conf_target).parent().unwrap();
    assert_eq!(Path::new(&conf_dir), conf_target_dir);
    assert_eq!(
        conf_values(&conf, "password_file"),
        [format!("{conf_dir}/passwd")]
    );
    assert_eq!(conf_values(&conf, "acl_file"), [format!("{conf_dir}/acl")]);
    assert_eq!(default_of("ARNG_BROKER_SRC"), m.conf_dir_target);
    assert_eq!(
        conf_values(&conf, "persistence_location"),
        [format!("{}/", default_of("ARNG_BROKER_DATA_DIR"))]
    );
    assert_eq!(default_of("ARNG_BROKER_DATA_DIR"), m.data_target);
    assert_eq!(
        default_of("ARNG_BROKER_OWNER"),
        "1883:1883",
        "the image's mosquitto user"
    );
    // The listener is the port the services and the host mapping use.
    assert_eq!(conf_values(&conf, "listener"), ["1883"]);
}

/// Shell variable names in entrypoint.sh (`conf_dir=${ARNG_BROKER_CONF_DIR:-...}`).
fn var_to_shell(var: &str) -> &'static str {
    match var {
        "ARNG_BROKER_SRC" => "src",
        "ARNG_BROKER_CONF_DIR" => "conf_dir",
        "ARNG_BROKER_DATA_DIR" => "data_dir",
        "ARNG_BROKER_OWNER" => "owner",
        other => panic!("unknown variable {other}"),
    }
}

/// The uid:gid Debian's mosquitto drops to when started as root.
fn local_mosquitto_user() -> Option<String> {
    let out = Command::new("id").arg("mosquitto").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let num = |key: &str| -> Option<String> {
        let start = text.find(key)? + key.len();
        Some(
            text[start..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect(),
        )
    };
    Some(format!("{}:{}", num("uid=")?, num("gid=")?))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_entrypoint_files_start_mosquitto_with_the_mounted_config() {
    let c = compose();
    let m = broker_mounts(&c);
    let root = tempfile::Builder::new()
        .prefix("arng-compose-broker-")
        .tempdir()
        .unwrap();
    // The container's layout under a temp dir: /mosquitto/... -> <root>/mosquitto/...
    let rebase = |p: &str| format!("{}{p}", root.path().display());
    let conf_dir = rebase(
        Path::new(&m.conf_target)
            .parent()
            .unwrap()
            .to_str()
            .unwrap(),
    );
    let data_dir = rebase(&m.data_target);
    // In the container the files belong to uid 1883, the user Mosquitto drops to. Here
    // Mosquitto (started as root) drops to Debian's `mosquitto` user, so the files are
    // given to that user: the same situation, the same permissions. Not root: the
    // files stay ours and Mosquitto does not switch users.
    let owner = if is_root() {
        local_mosquitto_user().expect("a local mosquitto user (apt-get install mosquitto)")
    } else {
        let id = |f: &str| {
            String::from_utf8(Command::new("id").arg(f).output().unwrap().stdout)
                .unwrap()
                .trim()
                .to_owned()
        };
        format!("{}:{}", id("-u"), id("-g"))
    };
    let out = Command::new("sh")
        .arg(repo_root().join("deploy/mosquitto/entrypoint.sh"))
        .arg("true")
        .env("ARNG_BROKER_SRC", repo_root().join("mosquitto-conf"))
        .env("ARNG_BROKER_CONF_DIR", &conf_dir)
        .env("ARNG_BROKER_DATA_DIR", &data_dir)
        .env("ARNG_BROKER_OWNER", &owner)
        .env(
            "PATH",
            format!("{}:/usr/sbin", std::env::var("PATH").unwrap_or_default()),
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "entrypoint failed:\n{}", show(&out));
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    for f in ["passwd", "acl"] {
        let meta = std::fs::metadata(Path::new(&conf_dir).join(f)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{f} mode");
        assert_eq!(format!("{}:{}", meta.uid(), meta.gid()), owner, "{f} owner");
    }
    let passwd = std::fs::read_to_string(Path::new(&conf_dir).join("passwd")).unwrap();
    for line in std::fs::read_to_string(repo_root().join("mosquitto-conf/dev-accounts"))
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let user = line.split(':').next().unwrap();
        assert!(
            passwd
                .lines()
                .any(|l| l.starts_with(&format!("{user}:$7$"))),
            "{user} hashed (PBKDF2-SHA512) in passwd"
        );
        assert!(
            !passwd.contains(line),
            "clear-text password of {user} in passwd"
        );
    }

    // The mounted config, with only the container paths moved under the temp dir and
    // the listener on a loopback port.
    let port = free_port();
    let conf = std::fs::read_to_string(&m.conf_source).unwrap();
    let mut local = String::new();
    for line in conf.lines() {
        if line.starts_with("listener ") {
            local.push_str(&format!("listener {port} 127.0.0.1\n"));
        } else {
            local.push_str(&line.replace("/mosquitto/", &rebase("/mosquitto/")));
            local.push('\n');
        }
    }
    let conf_path = Path::new(&conf_dir).join("mosquitto.conf");
    std::fs::write(&conf_path, local).unwrap();
    // The broker user must be able to reach its files, as in the container.
    for d in [root.path().to_path_buf(), root.path().join("mosquitto")] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let log = root.path().join("broker.log");
    let _broker = KillOnDrop(
        Command::new(mosquitto())
            .arg("-c")
            .arg(&conf_path)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(root.path().join("broker.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "mosquitto did not listen:\n{}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            std::fs::read_to_string(root.path().join("broker.err")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Every development account logs in; a reading published by the simulator reaches
    // the ingest account: the passwords and the ACL both came through.
    let url = format!("mqtt://127.0.0.1:{port}");
    for line in std::fs::read_to_string(repo_root().join("mosquitto-conf/dev-accounts"))
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let user = line.split(':').next().unwrap();
        let (u, p) = account(user);
        let args = arng::config::MqttArgs {
            url: arng::config::parse_mqtt_url(&url).unwrap(),
            username: Some(u),
            password: Some(arng::config::Secret::new(p)),
            ..Default::default()
        };
        let r =
            arng::mqtt::connect(&args, &format!("compose-{user}"), Duration::from_secs(5)).await;
        assert!(
            r.is_ok(),
            "{user} refused by the broker: {:?}\n{}",
            r.err(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let broker_port = port;
    let sub = tokio::spawn(common::chain::collect_topic(
        mqtt_args_at(broker_port, "ingest"),
        "entrepot/+/+/v1".into(),
        Duration::from_secs(3),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    publish_at(
        broker_port,
        "simulator",
        "entrepot/nord/s1/v1",
        "{\"probe\":1}",
    )
    .await;
    let seen = sub.await.unwrap();
    assert_eq!(
        seen,
        [("entrepot/nord/s1/v1".to_owned(), "{\"probe\":1}".to_owned())],
        "simulator -> ingest through the entrypoint's ACL"
    );
}

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mosquitto() -> PathBuf {
    [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("mosquitto not found: run scripts/test.sh or apt-get install mosquitto")
}

fn mqtt_args_at(port: u16, user: &str) -> arng::config::MqttArgs {
    let (u, p) = account(user);
    arng::config::MqttArgs {
        url: arng::config::parse_mqtt_url(&format!("mqtt://127.0.0.1:{port}")).unwrap(),
        username: Some(u),
        password: Some(arng::config::Secret::new(p)),
        ..Default::default()
    }
}

async fn publish_at(port: u16, user: &str, topic: &str, payload: &str) {
    let (client, mut eventloop) = arng::mqtt::connect(
        &mqtt_args_at(port, user),
        "compose-pub",
        Duration::from_secs(5),
    )
    .await
    .expect("connect");
    client
        .publish(
            topic,
            rumqttc::QoS::AtLeastOnce,
            false,
            payload.as_bytes().to_vec(),
        )
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))) => break,
            Ok(Ok(_)) => {}
            other => panic!("publish not acknowledged: {other:?}"),
        }
    }
    let _ = client.disconnect().await;
}

fn show(out: &Output) -> String {
    format!(
        "--- exit: {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ----- the arng services, for real --------------------------------------------------

/// How the compose values are re-pointed at this machine: host names of the compose
/// network to the local servers, the ports the containers listen on to free ones,
/// container paths to a temp dir. Nothing else changes, so the values keep their
/// shape and go through the same parsing and validation.
#[derive(Clone)]
struct Localize {
    /// Substrings: URLs, addresses, paths.
    replacements: Vec<(String, String)>,
    /// Whole command-line arguments: ports (`--port 8000`).
    args: Vec<(String, String)>,
}

impl Localize {
    fn apply(&self, s: &str) -> String {
        let mut out = s.to_owned();
        for (from, to) in &self.replacements {
            out = out.replace(from, to);
        }
        out
    }

    fn apply_arg(&self, a: &str) -> String {
        match self.args.iter().find(|(from, _)| from == a) {
            Some((_, to)) => to.clone(),
            None => self.apply(a),
        }
    }
}

struct ServiceProc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl ServiceProc {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServiceProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- {} (compose service) log -----\n{}",
                self.name,
                self.log()
            );
        }
    }
}

fn start_service(c: &Value, name: &str, loc: &Localize, dir: &Path) -> ServiceProc {
    let s = service(c, name);
    let args: Vec<String> = list(&s["command"])
        .iter()
        .map(|a| loc.apply_arg(a))
        .collect();
    let env: Vec<(String, String)> = environment(s)
        .into_iter()
        .map(|(k, v)| (k, loc.apply(&v)))
        .collect();
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(arng_bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("ARNG_") || k.starts_with("INFLUX_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    let child = cmd
        .args(&args)
        .envs(env)
        .env("XDG_STATE_HOME", dir.join("state"))
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start arng for {name}: {e}"));
    let mut p = ServiceProc {
        name: name.to_owned(),
        child,
        log,
    };
    // A usage error (bad flag, bad value in the environment) ends the process at
    // once with code 2; a service that runs is still running after a moment.
    std::thread::sleep(Duration::from_millis(1500));
    if let Ok(Some(status)) = p.child.try_wait() {
        panic!(
            "compose service {name} (arng {}) exited at once with {status}{}:\n{}",
            args.join(" "),
            if status.code() == Some(2) {
                " (usage error)"
            } else {
                ""
            },
            p.log()
        );
    }
    p
}

/// Runs a healthcheck command of an arng service the way Docker would run it in the
/// container (arng on the PATH), re-pointed like the service.
fn run_healthcheck(c: &Value, name: &str, loc: &Localize) -> Output {
    let env: Vec<(String, String)> = environment(service(c, name))
        .into_iter()
        .map(|(k, v)| (k, loc.apply(&v)))
        .collect();
    let bin_dir = arng_bin().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = match healthcheck(service(c, name)) {
        Check::Exec(args) => {
            let args: Vec<String> = args.iter().map(|a| loc.apply_arg(a)).collect();
            let mut cmd = Command::new(&args[0]);
            cmd.args(&args[1..]);
            cmd
        }
        Check::Shell(s) => {
            let mut cmd = Command::new("sh");
            cmd.arg("-c").arg(loc.apply(&s));
            cmd
        }
    };
    cmd.envs(env).env("PATH", path);
    cmd.output().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn arng_services_run_the_chain_with_their_compose_settings() {
    let c = compose();
    let m = broker_mounts(&c);
    let conf_name = m
        .conf_source
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let broker = Mosquitto::start_with(&conf_name);
    let db = Influxd::start();
    let dir = tempfile::Builder::new()
        .prefix("arng-compose-")
        .tempdir()
        .unwrap();
    let api_port = free_port();
    let metrics_port = free_port();
    let loc = Localize {
        replacements: vec![
            ("mqtt://broker:1883".into(), broker.url()),
            ("http://influxdb:8086".into(), db.url()),
            ("0.0.0.0".into(), "127.0.0.1".into()),
            (
                "/var/lib/arng/spool".into(),
                dir.path().join("spool").display().to_string(),
            ),
            ("127.0.0.1:8000".into(), format!("127.0.0.1:{api_port}")),
            ("127.0.0.1:9100".into(), format!("127.0.0.1:{metrics_port}")),
        ],
        // `--port 8000`, `--metrics-port 9100`: the container ports, as arguments.
        args: vec![
            ("8000".into(), api_port.to_string()),
            ("9100".into(), metrics_port.to_string()),
        ],
    };
    // Compose's start order: ingest and api once broker and InfluxDB are up, the
    // sensor once ingest is healthy.
    let ingest = start_service(&c, "ingest", &loc, dir.path());
    let api = start_service(&c, "api", &loc, dir.path());
    wait_healthy(&c, "ingest", &loc, &[&ingest]);
    let sensor = start_service(&c, "sensor", &loc, dir.path());
    let procs = [&ingest, &api, &sensor];

    for zone in ["nord", "sud", "est"] {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if count_points(&db, "readings", "temp", &format!("r.zone == \"{zone}\"")).await > 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no reading of zone {zone} in InfluxDB after 40 s{}",
                logs(&procs)
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    wait_healthy(&c, "api", &loc, &procs);
    wait_healthy(&c, "sensor", &loc, &procs);
    let (status, body) = http_get(api_port, "/zones/nord/latest").unwrap();
    assert_eq!(
        status,
        200,
        "GET /zones/nord/latest: {body}{}",
        logs(&procs)
    );
    assert!(body.contains("\"sensor\":\"s1\""), "{body}");
    let all = logs(&procs);
    for mut p in [ingest, api, sensor] {
        let status = p.child.try_wait().unwrap();
        assert!(status.is_none(), "{} stopped: {status:?}{all}", p.name);
    }
}

fn logs(procs: &[&ServiceProc]) -> String {
    procs
        .iter()
        .map(|p| format!("\n----- {} -----\n{}", p.name, p.log()))
        .collect()
}

fn wait_healthy(c: &Value, name: &str, loc: &Localize, procs: &[&ServiceProc]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = run_healthcheck(c, name, loc);
        if out.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "healthcheck of {name} still failing after 30 s:\n{}{}",
            show(&out),
            logs(procs)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
