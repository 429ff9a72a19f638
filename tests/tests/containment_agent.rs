//! Containment by the running agent, end to end on the real kernel: an alert on a watched
//! service's peer throttles that peer's TCP download in the kernel (`mode = "enforce"`) while a
//! allowlisted peer of the same server keeps full speed; `contain lift` and `contain add` reach the running agent
//! through the state database; a reload to `mode = "off"`, SIGTERM, SIGKILL and a TTL expiry
//! each leave nothing throttled; in the default `dry_run` the same alert touches no packet and
//! is exported as "would throttle".
//!
//! The watched service is a `tcp-blast` server (the `traffic` helper) in a cgroup of the
//! test's own; clients are this process, bound to their own loopback addresses. The agent
//! attaches to the cgroup root as in production (tests run one at a time).

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Command, Output},
    thread,
    time::{Duration, Instant},
};

use integration_tests::{
    Agent, StateDir, agent_bin, cgroup2_root,
    downloads::{Download, MIB, TestCgroup, mib, rates, server},
    pause, require_root, scaled, traffic_exe,
};
use serde_json::Value;

/// What `[[containment.actions]]` throttles an alerted peer to.
const RATE: u64 = MIB;
/// Alerted after learning: throttled.
const STRANGER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 76);
/// Downloads all along: allowlisted, never contained.
const REGULAR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 77);
/// Not throttled: the throttle holds a flow within 1.3 x its rate, loopback does hundreds of
/// MiB/s per flow here and tens in QEMU without KVM.
const FULL_SPEED: f64 = 5.0 * RATE as f64;
const LEARNING: Duration = Duration::from_secs(3);

/// The served peers are the service's clients: only `peer_outlier` judges them (48 MiB in a
/// minute over the floor, the population being too small for a quantile), and it alone
/// decides a containment (throttle to [`RATE`]); the regular peer is allowlisted (the rails
/// never contain it), the `tcp-blast` server is service `blast`, containment in `mode` (none:
/// the embedded default, `dry_run`). Without `alerts`, `peer_outlier` is off too: only
/// operators contain (an open alert would renew the containment, past its TTL).
fn config_toml(mode: Option<&str>, text_file: &Path, alerts: bool) -> String {
    let mode = mode.map_or_else(String::new, |m| format!("mode = \"{m}\"\n"));
    format!(
        r#"[detect]
learning_period = "{learning}s"
[destinations]
internal = []
[[destinations.allow]]
cidr = "{REGULAR}/32"
[rules.unknown_volume]
enabled = false
[rules.peer_outlier]
enabled = {alerts}
[rules.prefix_outlier]
enabled = false
[rules.peer_rise]
enabled = false
[rules.new_client_volume]
enabled = false
[rules.service_baseline]
enabled = false
[rules.new_destinations]
enabled = false
[rules.slow_drip]
enabled = false

[[services]]
name = "blast"
[[services.match]]
exe = "{exe}"

[containment]
{mode}
[[containment.actions]]
rule = "peer_outlier"
action = "throttle"
rate = "1MiB"

[[sinks]]
name = "alerts-json"
type = "file"
format = "json"
path = "alerts.jsonl"

[[sinks]]
name = "alerts-text"
type = "file"
format = "text"
path = "{text}"
"#,
        learning = LEARNING.as_secs(),
        exe = traffic_exe(),
        text = text_file.display(),
    )
}

/// A service cgroup of the test's own, its server, the agent's state and configuration.
struct Rig {
    state: StateDir,
    config: PathBuf,
    alerts: bool,
    addr: SocketAddr,
    // Drop order: the server leaves the cgroups before they are removed.
    _server: integration_tests::Traffic,
    _service: TestCgroup,
    _parent: TestCgroup,
}

impl Rig {
    fn new(tag: &str, mode: Option<&str>, alerts: bool) -> Self {
        require_root();
        let parent = TestCgroup::create(
            Path::new(&cgroup2_root())
                .join(format!("egress-contain-agent-{}-{tag}", std::process::id())),
        );
        let service = TestCgroup::create(parent.path().join("blast.service"));
        let (server, addr) = server(&service);
        let state = StateDir::new();
        let config = state.path().join("config.toml");
        let text = state.path().join("alerts.txt");
        fs::write(&config, config_toml(mode, &text, alerts)).expect("write the configuration");
        Self {
            state,
            config,
            alerts,
            addr,
            _server: server,
            _service: service,
            _parent: parent,
        }
    }

    fn start(&self) -> Agent {
        Agent::start(&[
            "--config",
            self.config.to_str().expect("UTF-8"),
            "--interval",
            "200ms",
            "--state-dir",
            self.state.arg(),
        ])
    }

    /// Rewrites the configuration with containment in `mode` (the agent reads it on SIGHUP).
    fn set_mode(&self, mode: &str) {
        let text = self.state.path().join("alerts.txt");
        fs::write(&self.config, config_toml(Some(mode), &text, self.alerts)).expect("rewrite");
    }

    /// `egress-monitor contain ARGS` against this rig's configuration and state.
    fn contain(&self, args: &[&str]) -> Output {
        let out = Command::new(agent_bin())
            .arg("--config")
            .arg(&self.config)
            .arg("contain")
            .args(args)
            .args(["--state-dir", self.state.arg()])
            .output()
            .expect("run egress-monitor contain");
        assert!(
            out.status.success(),
            "contain {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Every containment (`contain list --all --json`), newest first.
    fn containments(&self) -> Vec<Value> {
        let out = self.contain(&["list", "--all", "--json"]);
        String::from_utf8(out.stdout)
            .expect("UTF-8")
            .lines()
            .map(|l| serde_json::from_str(l).expect("containment JSON"))
            .collect()
    }

    /// `contain add` for the stranger, `ttl` long; returns its id.
    fn add(&self, ttl: &str) -> String {
        let out = self.contain(&[
            "add",
            "--service",
            "blast",
            "--peer",
            &STRANGER.to_string(),
            "--rate",
            "1MiB",
            "--for",
            ttl,
            "--reason",
            "test: by hand",
        ]);
        let text = String::from_utf8(out.stdout).expect("UTF-8");
        text.strip_prefix("started ")
            .and_then(|t| t.split_whitespace().next())
            .unwrap_or_else(|| panic!("contain add printed {text:?}"))
            .to_owned()
    }

    /// The exported events of the default-format sink (`alerts.jsonl`).
    fn exported(&self) -> Vec<Value> {
        fs::read_to_string(self.state.path().join("alerts.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("exported JSON"))
            .collect()
    }
}

fn is_containment(l: &Value, event: &str) -> bool {
    l["message"] == format!("containment {event}")
}

/// The download's rate over `window`, after `settle` (TCP's reaction to a new limit).
fn rate_after(d: &Download, settle: Duration, window: Duration) -> f64 {
    thread::sleep(settle);
    rates(&[d], window)[0]
}

fn assert_throttled(rate: f64, what: &str) {
    let ratio = rate / RATE as f64;
    assert!(
        (0.7..=1.3).contains(&ratio),
        "{what}: {} for a {} containment ({ratio:.2} of it)",
        mib(rate),
        mib(RATE as f64)
    );
}

fn assert_full_speed(rate: f64, what: &str) {
    assert!(rate > FULL_SPEED, "{what}: only {}", mib(rate));
}

/// Bytes per second the agent reported to `peer` in its poll windows from `from` on.
fn counted_rate(agent: &Agent, peer: Ipv4Addr, from: jiff::Timestamp) -> f64 {
    let windows: Vec<_> = agent
        .samples_so_far()
        .into_iter()
        .filter(|s| s.window_start >= from && s.remote.is_some_and(|r| r.addr == peer))
        .collect();
    let (Some(first), Some(last)) = (
        windows.iter().map(|s| s.window_start).min(),
        windows.iter().map(|s| s.window_end).max(),
    ) else {
        return 0.0;
    };
    let secs = last.duration_since(first).as_secs_f64();
    windows.iter().map(|s| s.bytes).sum::<u64>() as f64 / secs.max(0.001)
}

/// Waits (bounded) until the stranger's download is at full speed again; returns how long
/// that took and the rate.
fn until_full_speed(d: &Download, limit: Duration) -> (Duration, f64) {
    let t0 = Instant::now();
    loop {
        let r = rates(&[d], Duration::from_millis(500))[0];
        if r > FULL_SPEED || t0.elapsed() > scaled(limit) {
            return (t0.elapsed(), r);
        }
    }
}

/// An alert on the stranger throttles it to the rate while the allowlisted peer keeps full speed;
/// `contain lift` gives full speed back and the still-open alert does not contain it again;
/// `contain add` throttles it again; SIGKILL leaves nothing throttled.
#[test]
fn an_alerted_peer_is_throttled_by_the_agent_and_an_operator_can_lift_it() {
    let rig = Rig::new("alert", Some("enforce"), true);
    let agent = rig.start();
    let regular = Download::start(REGULAR, rig.addr);
    pause(LEARNING + Duration::from_millis(700));
    let stranger = Download::start(STRANGER, rig.addr);
    let started =
        agent.wait_for_log_where(Duration::from_secs(15), |l| is_containment(l, "started"));
    // (`network`: a field named `target` would be the log line's module in JSON logs.)
    assert_eq!(started["network"], format!("{STRANGER}/32"), "{started}");
    assert!(
        started["action"]
            .as_str()
            .unwrap_or_default()
            .starts_with("throttle"),
        "{started}"
    );
    // TCP's reaction to the new limit, then five seconds of both downloads at once.
    thread::sleep(Duration::from_secs(2));
    let measured_from = jiff::Timestamp::now();
    let r = rates(&[&stranger, &regular], Duration::from_secs(5));
    let (throttled, regular_rate) = (r[0], r[1]);
    // What the agent counted meanwhile is what left: the throttle's drops (TCP sends them
    // again) are not egress. Its polls after `measured_from`, a second after the window.
    pause(Duration::from_secs(1));
    let counted = counted_rate(&agent, STRANGER, measured_from);
    println!(
        "alerted peer {} (counted {}), allowlisted peer {}",
        mib(throttled),
        mib(counted),
        mib(regular_rate)
    );
    assert!(
        counted < 1.3 * RATE as f64,
        "the agent counted {} to the throttled peer, which received {}",
        mib(counted),
        mib(throttled)
    );
    assert_throttled(throttled, "the alerted peer");
    assert_full_speed(regular_rate, "the allowlisted peer beside the throttle");

    let list = rig.containments();
    assert_eq!(list.len(), 1, "{list:?}");
    let c = &list[0];
    assert_eq!(c["state"], "active", "{c}");
    assert_eq!(c["enforcement"], "enforced", "{c}");
    assert_eq!(c["decided_by"]["kind"], "policy", "{c}");
    assert!(c["alert_id"].is_string(), "{c}");
    let id = c["id"].as_str().expect("id").to_owned();

    rig.contain(&["lift", &id[..8], "--reason", "test: a false positive"]);
    let (took, lifted) = until_full_speed(&stranger, Duration::from_secs(5));
    println!("after contain lift: {} within {took:?}", mib(lifted));
    assert_full_speed(lifted, "after contain lift");
    // The alert stays open and keeps being updated: the operator's lift stands.
    let still = rate_after(&stranger, Duration::from_secs(2), Duration::from_secs(1));
    assert_full_speed(still, "two seconds after contain lift");
    assert_eq!(
        agent
            .logs_so_far()
            .iter()
            .filter(|l| is_containment(l, "started"))
            .count(),
        1,
        "contained again after the operator's lift"
    );

    // By hand, while the agent runs.
    let by_hand = rig.add("10m");
    let again = rate_after(&stranger, Duration::from_secs(2), Duration::from_secs(3));
    println!("after contain add {by_hand}: {}", mib(again));
    assert_throttled(again, "after contain add");

    agent.signal(nix::sys::signal::Signal::SIGKILL);
    let (took, killed) = until_full_speed(&stranger, Duration::from_secs(5));
    println!("after SIGKILL: {} within {took:?}", mib(killed));
    assert_full_speed(killed, "after SIGKILL");
    let _ = agent.stop_after_kill();
    drop((stranger, regular));
}

/// `mode = "off"` by reload lifts at once; SIGTERM leaves nothing throttled; a restart takes
/// the stored containment in again, and its TTL expiry lifts it.
#[test]
fn mode_off_sigterm_and_the_ttl_each_leave_nothing_throttled() {
    let rig = Rig::new("off", Some("enforce"), false);
    let agent = rig.start();
    pause(LEARNING);
    // The service's socket must be seen before the kernel can scope the rule to its cgroup.
    let stranger = Download::start(STRANGER, rig.addr);
    let _ = rig.add("1h");
    let throttled = rate_after(&stranger, Duration::from_secs(3), Duration::from_secs(3));
    assert_throttled(throttled, "after contain add");

    rig.set_mode("off");
    agent.signal(nix::sys::signal::Signal::SIGHUP);
    let (took, off) = until_full_speed(&stranger, Duration::from_secs(5));
    println!(
        "throttled {}; mode off: {} within {took:?}",
        mib(throttled),
        mib(off)
    );
    assert_full_speed(off, "after the reload to mode off");
    let lifted = agent.wait_for_log_where(Duration::from_secs(5), |l| is_containment(l, "lifted"));
    assert_eq!(
        lifted["reason"], "containment.mode changed to off",
        "{lifted}"
    );

    rig.set_mode("enforce");
    agent.signal(nix::sys::signal::Signal::SIGHUP);
    pause(Duration::from_secs(1));
    let short = rig.add("1m");
    let added_at = Instant::now();
    let again = rate_after(&stranger, Duration::from_secs(3), Duration::from_secs(2));
    assert_throttled(again, "after the reload to enforce and contain add");
    let run = agent.stop();
    assert!(run.status.success(), "{:?}", run.status);
    let (took, stopped) = until_full_speed(&stranger, Duration::from_secs(5));
    println!("after SIGTERM: {} within {took:?}", mib(stopped));
    assert_full_speed(stopped, "after SIGTERM");

    // Stored, not ended: a restarted agent enforces it again until its TTL.
    let agent = rig.start();
    let restored = rate_after(&stranger, Duration::from_secs(3), Duration::from_secs(2));
    assert_throttled(restored, "after a restart, before the TTL");
    let expired =
        agent.wait_for_log_where(Duration::from_secs(75), |l| is_containment(l, "expired"));
    assert_eq!(expired["containment"], short, "{expired}");
    let (took, after_ttl) = until_full_speed(&stranger, Duration::from_secs(5));
    println!(
        "restored {}; expired {:?} after contain add, then {} within {took:?}",
        mib(restored),
        added_at.elapsed(),
        mib(after_ttl)
    );
    assert_full_speed(after_ttl, "after the TTL");
    let _ = agent.stop();
    let states: Vec<String> = rig
        .containments()
        .iter()
        .map(|c| c["state"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(states, ["expired", "lifted"], "newest first");
    drop(stranger);
}

/// In the default `dry_run`, the same alert decides the same containment, stores and exports
/// it as "would throttle", and the download keeps full speed.
#[test]
fn in_dry_run_an_alert_touches_no_packet_and_is_exported_as_would_throttle() {
    let rig = Rig::new("dry", None, true);
    let agent = rig.start();
    // The service's first answers start its learning period.
    let regular = Download::start(REGULAR, rig.addr);
    pause(LEARNING + Duration::from_millis(700));
    let stranger = Download::start(STRANGER, rig.addr);
    let started =
        agent.wait_for_log_where(Duration::from_secs(15), |l| is_containment(l, "started"));
    assert!(
        started["action"]
            .as_str()
            .unwrap_or_default()
            .starts_with("would throttle"),
        "{started}"
    );
    let r = rate_after(&stranger, Duration::from_secs(2), Duration::from_secs(3));
    println!("dry run: the alerted peer at {}", mib(r));
    assert_full_speed(r, "in dry run");
    let _ = agent.stop();
    let list = rig.containments();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["enforcement"], "dry_run", "{}", list[0]);
    let exported = rig.exported();
    assert!(
        exported
            .iter()
            .any(|e| e["containment"]["enforcement"] == "dry_run"),
        "no dry-run containment in alerts.jsonl: {exported:?}"
    );
    let text = fs::read_to_string(rig.state.path().join("alerts.txt")).expect("text sink");
    assert!(
        text.lines()
            .any(|l| l.contains("would throttle") && l.contains(&STRANGER.to_string())),
        "{text}"
    );
    drop((stranger, regular));
}
