//! A real Synapse from the Python Package Index: a virtualenv under `target/e2e/venv`, a generated configuration
//! patched for a loopback-only, federation-less, unthrottled homeserver on SQLite, and the
//! server started as a child process.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_norway::{Mapping, Value};

use super::daemon::Daemon;
use crate::{bootstrap, cmd};

/// The Synapse release installed with pip (the newest that installs on Debian bookworm's
/// Python 3.11 here, 2026-11).
pub const VERSION: &str = "1.163.2";

/// The homeserver's name (never resolved: nothing federates).
pub const SERVER_NAME: &str = "e2e.test";

/// Debian's interpreter when present (its `python3-venv` provides `ensurepip`), else the
/// first `python3` on PATH.
fn python() -> PathBuf {
    let debian = Path::new("/usr/bin/python3");
    if debian.exists() {
        debian.to_owned()
    } else {
        PathBuf::from("python3")
    }
}

/// Synapse's dependencies, pinned (`pip install -c`): what a working venv held.
pub const CONSTRAINTS: &str = include_str!("synapse-constraints.txt");

/// What installing took, for the report.
pub struct Install {
    pub python: PathBuf,
    /// `None` when the venv already had the pinned versions.
    pub pip_secs: Option<f64>,
    pub venv_bytes: u64,
}

/// Why installing failed: the Python Package Index (or Debian's venv package) could not be
/// reached, or something else.
#[derive(Debug)]
pub enum InstallError {
    Unreachable(String),
    Failed(anyhow::Error),
}

/// The marker a finished install leaves in the venv: the constraints it was made with (a
/// venv from other pins, or a half-made one, is made again).
const MARKER: &str = "e2e-constraints.txt";

/// Creates `venv` and installs the pinned Synapse with the pinned dependencies into it,
/// unless a previous install with the same pins is there.
pub fn install(venv: &Path) -> Result<Install, InstallError> {
    let py = venv.join("bin").join("python");
    let marker = venv.join(MARKER);
    if fs::read_to_string(&marker).is_ok_and(|m| m == CONSTRAINTS)
        && version_of(&py).as_deref() == Some(VERSION)
    {
        eprintln!(
            "    matrix-synapse {VERSION} (pinned dependencies) already in {}",
            venv.display()
        );
        return Ok(Install {
            python: py,
            pip_secs: None,
            venv_bytes: dir_bytes(venv),
        });
    }
    let base = python();
    let has_venv = Command::new(&base)
        .args(["-c", "import ensurepip, venv"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_venv {
        eprintln!(
            "    {} has no venv/ensurepip: installing python3-venv",
            base.display()
        );
        bootstrap::apt_install(&["python3-venv"])
            .map_err(|e| InstallError::Unreachable(format!("python3-venv (Debian): {e:#}")))?;
    }
    let failed = |e: anyhow::Error| InstallError::Failed(e);
    let _ = fs::remove_dir_all(venv);
    cmd::run(Command::new(&base).arg("-m").arg("venv").arg(venv)).map_err(failed)?;
    let constraints = venv.join("constraints.txt");
    fs::write(&constraints, CONSTRAINTS).map_err(|e| failed(e.into()))?;
    let started = Instant::now();
    let out = Command::new(venv.join("bin").join("pip"))
        .args(["install", "-q", "--disable-pip-version-check", "-c"])
        .arg(&constraints)
        .arg(format!("matrix-synapse=={VERSION}"))
        .output()
        .map_err(|e| failed(anyhow::Error::new(e).context("starting pip")))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        let tail = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
        return Err(if unreachable_index(&text) {
            InstallError::Unreachable(format!(
                "matrix-synapse {VERSION} from the Python Package Index (not reachable): {tail}"
            ))
        } else {
            InstallError::Failed(anyhow::anyhow!(
                "pip install matrix-synapse=={VERSION} failed: {tail}"
            ))
        });
    }
    let installed = version_of(&py);
    if installed.as_deref() != Some(VERSION) {
        return Err(failed(anyhow::anyhow!(
            "pip installed matrix-synapse but it reports version {installed:?}"
        )));
    }
    fs::write(&marker, CONSTRAINTS).map_err(|e| failed(e.into()))?;
    Ok(Install {
        python: py,
        pip_secs: Some(started.elapsed().as_secs_f64()),
        venv_bytes: dir_bytes(venv),
    })
}

/// `synapse.__version__` as `python` imports it.
fn version_of(python: &Path) -> Option<String> {
    Command::new(python)
        .args(["-c", "import synapse; print(synapse.__version__)"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()
                .map(str::to_owned)
        })
}

/// Whether pip's output says the index could not be reached (as opposed to a refused pin or
/// a failed build). Offline, pip finds no version at all of the first requirement.
pub fn unreachable_index(pip_output: &str) -> bool {
    const MARKERS: [&str; 9] = [
        "(from versions: none)",
        "NewConnectionError",
        "Failed to establish a new connection",
        "Temporary failure in name resolution",
        "Name or service not known",
        "Network is unreachable",
        "ConnectTimeoutError",
        "ProxyError",
        "Max retries exceeded",
    ];
    MARKERS.iter().any(|m| pip_output.contains(m))
}

/// Bytes of the regular files under `dir` (symlinks not followed).
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// Where the homeserver keeps everything: config, keys, database, media, logs.
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn config(&self) -> PathBuf {
        self.dir.join("homeserver.yaml")
    }
}

/// Runs Synapse's own `--generate-config` (keys, secrets, log config) into a fresh `dir`.
pub fn generate(python: &Path, dir: &Path) -> Result<Layout> {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir)?;
    let layout = Layout {
        dir: dir.to_owned(),
    };
    cmd::run(
        Command::new(python)
            .args(["-m", "synapse.app.homeserver", "--generate-config"])
            .args(["--server-name", SERVER_NAME, "--report-stats=no"])
            .arg("--config-path")
            .arg(layout.config())
            .current_dir(dir),
    )?;
    Ok(layout)
}

/// What the patched configuration needs to know.
pub struct Settings<'a> {
    pub port: u16,
    pub data_dir: &'a Path,
    pub public_baseurl: &'a str,
}

/// A rate limit no population run reaches.
fn unlimited() -> Value {
    let mut m = Mapping::new();
    m.insert("per_second".into(), 100_000.into());
    m.insert("burst_count".into(), 100_000.into());
    Value::Mapping(m)
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Mapping(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
}

/// Patches the generated `homeserver.yaml`: client API only, on 127.0.0.1:`port` only; SQLite
/// and media under `data_dir`; no federation, key servers, URL previews, stats or public
/// registration (the shared secret `--generate-config` wrote is kept for the admin API);
/// rate limits and the upload size far above what a bulk population sends.
pub fn patch_config(generated: &str, s: &Settings<'_>) -> Result<String> {
    let mut doc: Value = serde_norway::from_str(generated).context("parsing homeserver.yaml")?;
    let Value::Mapping(root) = &mut doc else {
        bail!("homeserver.yaml is not a mapping");
    };
    let Some(secret) = root
        .get("registration_shared_secret")
        .and_then(Value::as_str)
    else {
        bail!("the generated homeserver.yaml has no registration_shared_secret");
    };
    let secret = secret.to_owned();
    let data = |name: &str| Value::from(s.data_dir.join(name).display().to_string());
    let listener = map(vec![
        ("port", s.port.into()),
        ("bind_addresses", Value::Sequence(vec!["127.0.0.1".into()])),
        ("type", "http".into()),
        ("tls", false.into()),
        ("x_forwarded", true.into()),
        (
            "resources",
            Value::Sequence(vec![map(vec![
                ("names", Value::Sequence(vec!["client".into()])),
                ("compress", false.into()),
            ])]),
        ),
    ]);
    let per_kind = |kinds: &[&str]| map(kinds.iter().map(|k| (*k, unlimited())).collect());
    let settings: Vec<(&str, Value)> = vec![
        ("listeners", Value::Sequence(vec![listener])),
        (
            "database",
            map(vec![
                ("name", "sqlite3".into()),
                ("args", map(vec![("database", data("homeserver.db"))])),
            ]),
        ),
        ("media_store_path", data("media_store")),
        ("pid_file", data("homeserver.pid")),
        ("public_baseurl", s.public_baseurl.into()),
        ("registration_shared_secret", secret.into()),
        ("enable_registration", false.into()),
        ("report_stats", false.into()),
        ("enable_metrics", false.into()),
        ("url_preview_enabled", false.into()),
        ("federation_domain_whitelist", Value::Sequence(vec![])),
        ("trusted_key_servers", Value::Sequence(vec![])),
        ("suppress_key_server_warning", true.into()),
        ("max_upload_size", "100M".into()),
        ("rc_message", unlimited()),
        ("rc_registration", unlimited()),
        ("rc_media_create", unlimited()),
        ("rc_room_creation", unlimited()),
        (
            "rc_login",
            per_kind(&["address", "account", "failed_attempts"]),
        ),
        ("rc_joins", per_kind(&["local", "remote"])),
        (
            "rc_invites",
            per_kind(&["per_room", "per_user", "per_issuer"]),
        ),
    ];
    for (k, v) in settings {
        root.insert(k.into(), v);
    }
    serde_norway::to_string(&doc).context("writing homeserver.yaml")
}

/// The shared secret of a (patched) configuration.
pub fn shared_secret(config: &str) -> Result<String> {
    let doc: Value = serde_norway::from_str(config)?;
    doc.get("registration_shared_secret")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .context("no registration_shared_secret")
}

/// Starts the homeserver the way Debian's and the official packaging do
/// (`<venv>/bin/python -m synapse.app.homeserver --config-path ...`), in `layout.dir`.
pub fn start(python: &Path, layout: &Layout) -> Result<Daemon> {
    Daemon::spawn(
        "synapse",
        Command::new(python)
            .args(["-m", "synapse.app.homeserver", "--config-path"])
            .arg(layout.config())
            .current_dir(&layout.dir),
        &layout.dir.join("synapse.stdout.log"),
    )
}

/// Start-up may migrate a fresh SQLite database: give it time on a slow machine.
pub const START_TIMEOUT: Duration = Duration::from_secs(120);

#[cfg(test)]
mod tests {
    use super::*;

    const GENERATED: &str = r#"
server_name: "e2e.test"
pid_file: /somewhere/homeserver.pid
listeners:
  - port: 8008
    tls: false
    type: http
    x_forwarded: true
    bind_addresses: ['::1', '127.0.0.1']
    resources:
      - names: [client, federation]
        compress: false
database:
  name: sqlite3
  args:
    database: /somewhere/homeserver.db
log_config: "/x/e2e.test.log.config"
media_store_path: /somewhere/media_store
registration_shared_secret: "a:b;c=d&e"
report_stats: false
macaroon_secret_key: "m"
signing_key_path: "/x/e2e.test.signing.key"
trusted_key_servers:
  - server_name: "matrix.org"
"#;

    #[test]
    fn patched_config_is_loopback_only_unthrottled_and_keeps_the_secrets() {
        let out = patch_config(
            GENERATED,
            &Settings {
                port: 12345,
                data_dir: Path::new("/data"),
                public_baseurl: "http://127.0.0.1:9999/",
            },
        )
        .unwrap();
        let v: Value = serde_norway::from_str(&out).unwrap();
        let listeners = v["listeners"].as_sequence().unwrap();
        assert_eq!(listeners.len(), 1);
        assert_eq!(listeners[0]["port"].as_u64(), Some(12345));
        assert_eq!(
            listeners[0]["bind_addresses"],
            Value::Sequence(vec!["127.0.0.1".into()])
        );
        let names = &listeners[0]["resources"][0]["names"];
        assert_eq!(
            names,
            &Value::Sequence(vec!["client".into()]),
            "no federation resource"
        );
        assert_eq!(v["database"]["name"].as_str(), Some("sqlite3"));
        assert_eq!(
            v["database"]["args"]["database"].as_str(),
            Some("/data/homeserver.db")
        );
        assert_eq!(v["media_store_path"].as_str(), Some("/data/media_store"));
        assert_eq!(v["trusted_key_servers"], Value::Sequence(vec![]));
        assert_eq!(v["federation_domain_whitelist"], Value::Sequence(vec![]));
        assert_eq!(v["rc_message"]["per_second"].as_u64(), Some(100_000));
        assert_eq!(
            v["rc_login"]["failed_attempts"]["burst_count"].as_u64(),
            Some(100_000)
        );
        assert_eq!(v["max_upload_size"].as_str(), Some("100M"));
        assert_eq!(v["enable_registration"].as_bool(), Some(false));
        // Kept from the generated file.
        assert_eq!(shared_secret(&out).unwrap(), "a:b;c=d&e");
        assert_eq!(v["macaroon_secret_key"].as_str(), Some("m"));
        assert_eq!(
            v["signing_key_path"].as_str(),
            Some("/x/e2e.test.signing.key")
        );
        assert_eq!(v["server_name"].as_str(), Some(SERVER_NAME));
    }

    #[test]
    fn pip_failures_are_told_apart() {
        // What pip 23 printed here with the index unreachable (PIP_INDEX_URL to a closed
        // port), constraints given: the resolver then fails instead of finding no version.
        let offline = "WARNING: Retrying (Retry(total=0, connect=None, read=None, redirect=None, status=None)) after connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPConnection object at 0x7f1ec5c69490>: Failed to establish a new connection: [Errno 111] Connection refused')': /simple/matrix-synapse/\nERROR: Cannot install matrix-synapse==1.163.2 because these package versions have conflicting dependencies.\nERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution/#dealing-with-dependency-conflicts";
        assert!(
            !unreachable_index("ERROR: ResolutionImpossible: for help visit"),
            "a real conflict"
        );
        assert!(unreachable_index(offline));
        let bad_pin = "ERROR: Could not find a version that satisfies the requirement attrs==99 (from versions: 25.1.0, 26.1.0)\nERROR: No matching distribution found for attrs==99";
        assert!(!unreachable_index(bad_pin));
        let build = "error: subprocess-exited-with-error\n  Building wheel for x (pyproject.toml) did not run successfully.";
        assert!(!unreachable_index(build));
    }

    #[test]
    fn the_constraints_pin_synapse_and_only_pin() {
        let pins: Vec<&str> = CONSTRAINTS
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .collect();
        assert!(pins.len() > 20, "the whole dependency tree: {}", pins.len());
        assert!(
            pins.iter().all(|l| l
                .split_once("==")
                .is_some_and(|(n, v)| !n.is_empty() && !v.is_empty())),
            "exact pins only"
        );
        assert!(pins.contains(&format!("matrix-synapse=={VERSION}").as_str()));
    }

    #[test]
    fn a_config_without_secret_is_refused() {
        let s = Settings {
            port: 1,
            data_dir: Path::new("/d"),
            public_baseurl: "http://127.0.0.1:2/",
        };
        assert!(patch_config("server_name: x\n", &s).is_err());
        assert!(patch_config("- a\n", &s).is_err());
    }
}
