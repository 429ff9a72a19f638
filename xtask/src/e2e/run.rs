//! `cargo xtask e2e`: the product's acceptance scenario. A real Synapse behind a real nginx,
//! watched as one service by the release agent, whose alerts go to a real rsyslogd. Normal
//! clients (each its own 127.0.0.x host) use the server through the learning period, a
//! restart of both servers and after; then a hijacked account from a new address pulls the
//! room's history and every media file. Passes when the agent's OCSF alert about that
//! address reaches rsyslogd in time with the right service, rule and a plausible byte
//! count, no other alert was raised, and the agent stops cleanly.

use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use super::{
    agent_config, containment, daemon,
    daemon::Daemon,
    egress_agent,
    latency::Phase,
    options::{Options, PatientOptions},
    prereq, report, rsyslog,
    scenario::{self, Amounts},
    servers::{Restart, Servers},
    synapse,
    traffic::{self, Account, Attack, Population, World},
    verdict::{self, Expect, PatientExpect},
    watch::{POLL, Watch, now_ms},
};
use crate::{bootstrap::Tools, build, cmd};

/// The attacker's host: an address no client used while the agent learned.
pub const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 66);
/// The hijacked account (also in use by its owner, the client at 127.0.0.11).
const HIJACKED: usize = 1;
/// The patient attacker's host (full preset) and account (the client at 127.0.0.12's).
pub const PATIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 77);
const PATIENT_ACCOUNT: usize = 2;
/// The learning period runs from the service's first packet (the first answer to a client,
/// just after the agent attached) and rules arm at the next evaluation: margin for both.
const LEARNING_MARGIN: Duration = Duration::from_secs(5);
/// Bound on the attacker's whole run: with `persist`, how long it keeps downloading.
const ATTACK_DEADLINE: Duration = Duration::from_secs(180);
/// After the restart, requests still in flight across it are slow or fail: the normal phase's
/// latencies start this much later.
const RESTART_SETTLE: Duration = Duration::from_secs(5);
/// The rule the attack must trip: the attacker is a client nginx served, judged against the
/// service's clients.
const RULE: &str = "peer_outlier";

/// The outcome: `json` is what `target/e2e/report.json` holds.
pub struct Report {
    pub json: Value,
}

impl Report {
    /// The alert in one line.
    pub fn headline(&self) -> String {
        let a = &self.json["alert"];
        format!(
            "{} alert about {} at rsyslogd {:.1} s after the attack started, no false alert",
            a["rule"].as_str().unwrap_or("?"),
            self.json["attack"]["address"].as_str().unwrap_or("?"),
            a["latency_received_ms"].as_f64().unwrap_or(f64::NAN) / 1e3
        )
    }
}

fn account(i: usize) -> Account {
    Account {
        user: format!("user{i}"),
        password: format!("pw-user{i}-e2e"),
    }
}

/// The agent as configured for the run.
struct AgentSetup {
    config: PathBuf,
    json_sink: PathBuf,
    /// `peer_outlier`'s 1-minute floor, as the agent reads its configuration.
    threshold: u64,
    /// What an alerted peer is throttled to (`[[containment.actions]]`).
    rate: u64,
}

/// A fresh state directory and `agent.toml`, checked by the agent itself.
fn configure_agent(dir: &Path, bin: &Path, opts: &Options, syslog: &str) -> Result<AgentSetup> {
    let state = dir.join("state");
    let _ = fs::remove_dir_all(&state);
    fs::create_dir_all(&state)?;
    let config = dir.join("agent.toml");
    let json_sink = state.join("alerts.jsonl");
    fs::write(
        &config,
        agent_config::render(&agent_config::Settings {
            state_dir: &state,
            learning: opts.learning,
            syslog,
            json_file: &json_sink,
            containment: opts.containment.name(),
        }),
    )?;
    let effective = egress_agent::effective_config(bin, &config)?;
    Ok(AgentSetup {
        threshold: egress_agent::peer_outlier_floor_1m(&effective)?,
        rate: containment::throttle_rate(&effective)?,
        config,
        json_sink,
    })
}

/// What the normal phases measured.
struct Normal {
    bytes_learning: u64,
    bytes_after_learning: u64,
    restart: Restart,
    restart_errors: u64,
    /// Clients that completed a round after the restart.
    survivors: usize,
    messages_at_learning_end: usize,
    messages_before_attack: usize,
}

/// Learning with the clients already running, then the restart, then normal use.
fn normal_phases(
    opts: &Options,
    t_attached: Instant,
    servers: &mut Servers,
    clients: &Population,
    watch: &mut Watch<'_>,
    agent: &mut Daemon,
) -> Result<Normal> {
    cmd::step(
        &format!(
            "learning: {} normal clients for {} s (+{} s margin)",
            opts.clients,
            opts.learning.as_secs(),
            LEARNING_MARGIN.as_secs()
        ),
        || watch.hold(t_attached + opts.learning + LEARNING_MARGIN, agent),
    )?;
    let bytes_learning = clients.received();
    let messages_at_learning_end = watch.lines.len();
    let errors_before = clients.errors();
    clients.latencies.enter(Phase::Restart);
    let restart = cmd::step(
        "restart Synapse and nginx (new pids, same ports and data)",
        || servers.restart(),
    )?;
    let ok_at_restart = clients.ok_counts();
    let t_restarted = Instant::now();
    watch.hold(t_restarted + RESTART_SETTLE, agent)?;
    clients.latencies.enter(Phase::AfterLearning);
    cmd::step(
        &format!(
            "normal traffic after learning, {} s",
            opts.after_learning.as_secs()
        ),
        || watch.hold(t_restarted + opts.after_learning, agent),
    )?;
    let survivors = clients
        .ok_counts()
        .iter()
        .zip(&ok_at_restart)
        .filter(|(now, then)| now > then)
        .count();
    Ok(Normal {
        bytes_learning,
        bytes_after_learning: clients.received() - bytes_learning,
        restart,
        restart_errors: clients.errors() - errors_before,
        survivors,
        messages_at_learning_end,
        messages_before_attack: watch.lines.len(),
    })
}

/// What the attack phases did.
struct Attacks {
    attack: Attack,
    attack_start_ms: i64,
    /// The patient attacker and its start (Unix ms), when the preset has one.
    patient: Option<(traffic::Patient, i64)>,
}

/// The attacker, normal traffic for the grace period, then the patient attacker.
fn attacks(
    opts: &Options,
    (world, latencies): (&Arc<World>, &super::latency::Latencies),
    users: usize,
    watch: &mut Watch<'_>,
    agent: &mut Daemon,
) -> Result<Attacks> {
    latencies.enter(Phase::Attack);
    let (attack, attack_start_ms) = attack_phase(opts, &world.base, &world.room, watch, agent)?;
    latencies.enter(Phase::Grace);
    cmd::step(
        &format!(
            "normal traffic goes on {} s after the attack",
            opts.grace.as_secs()
        ),
        || watch.hold(Instant::now() + opts.grace, agent),
    )?;
    latencies.enter(Phase::Patient);
    let patient = match opts.patient {
        Some(p) => Some(patient_phase(p, world, users, watch, agent)?),
        None => None,
    };
    Ok(Attacks {
        attack,
        attack_start_ms,
        patient,
    })
}

/// The patient attacker must stay under the 1-minute bar, or the phase proves nothing; and
/// its downloads must work until its own alert (one failing before it is something else
/// cutting it off: a containment of another peer's prefix, the server).
fn impatience(patient: Option<&(traffic::Patient, i64)>, bar: u64) -> Vec<String> {
    let Some((p, _)) = patient else {
        return Vec::new();
    };
    let mut failures = Vec::new();
    if p.max_minute >= bar {
        failures.push(format!(
            "the patient attacker took {} bytes in one minute, not under the {bar}-byte bar",
            p.max_minute
        ));
    }
    if let Some(why) = &p.cut_short {
        failures.push(format!(
            "the patient attacker's download failed before its alert, after {:.1} MB in {:.0} s: {why}",
            p.received as f64 / 1e6,
            p.secs
        ));
    }
    failures
}

/// What the verdict expects of the run.
fn expectations<'a>(
    opts: &Options,
    setup: &AgentSetup,
    (attacker, attack, attack_start_ms): (&'a str, &Attack, i64),
    (patient_ip, patient): (&'a str, Option<&(traffic::Patient, i64)>),
) -> Expect<'a> {
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    Expect {
        service: agent_config::SERVICE,
        rule: RULE,
        attacker,
        attack_start_ms,
        attacker_received: attack.received,
        threshold: setup.threshold,
        max_latency_ms: ms(opts.alert_within),
        patient: match (patient, opts.patient) {
            (Some((_, start_ms)), Some(p)) => Some(PatientExpect {
                address: patient_ip,
                start_ms: *start_ms,
                max_latency_ms: ms(p.alert_within),
            }),
            _ => None,
        },
    }
}

/// The attacker in its own thread while rsyslogd is watched; returns once it is done and
/// the alert came or the time allowed for it passed. Also returns its start (Unix ms).
fn attack_phase(
    opts: &Options,
    base: &str,
    room: &str,
    watch: &mut Watch<'_>,
    agent: &mut Daemon,
) -> Result<(Attack, i64)> {
    eprintln!(
        "==> attack: {} logs in from {ATTACKER} and takes everything{} (containment: {})",
        account(HIJACKED).user,
        if opts.persist {
            format!(", again and again for {} s", ATTACK_DEADLINE.as_secs())
        } else {
            String::new()
        },
        opts.containment.name()
    );
    let start_ms = now_ms();
    let started = Instant::now();
    let attacker = {
        let (base, room, persist) = (base.to_owned(), room.to_owned(), opts.persist);
        thread::spawn(move || {
            let who = account(HIJACKED);
            traffic::attack(&base, &room, ATTACKER, &who, ATTACK_DEADLINE, persist)
        })
    };
    let attacker_ip = ATTACKER.to_string();
    let detected = |w: &Watch<'_>| {
        w.findings()
            .iter()
            .any(|f| f.peer.as_deref() == Some(attacker_ip.as_str()) && f.rule == RULE)
    };
    loop {
        watch.hold(Instant::now() + POLL, agent)?;
        if attacker.is_finished() && (detected(watch) || started.elapsed() > opts.alert_within) {
            break;
        }
        // A request begun just before the deadline may take its whole timeout.
        if started.elapsed() > ATTACK_DEADLINE + Duration::from_secs(45) {
            bail!("the attacker did not finish in {ATTACK_DEADLINE:?}");
        }
    }
    let attack = attacker
        .join()
        .map_err(|_| anyhow::anyhow!("the attacker's thread panicked"))?
        .context("the attack")?;
    eprintln!(
        "    attacker: {} pages, {} images ({} downloads{}), {:.1} MB received in {:.1} s; alert {}",
        attack.pages,
        attack.media,
        attack.downloads,
        if attack.complete {
            ""
        } else {
            ", not all images"
        },
        attack.received as f64 / 1e6,
        attack.secs,
        if detected(watch) {
            "received"
        } else {
            "NOT received"
        }
    );
    Ok((attack, start_ms))
}

fn clients_json(clients: &Population) -> Vec<Value> {
    clients
        .clients
        .iter()
        .map(|c| {
            json!({"addr": c.addr.to_string(), "user": c.user, "received": c.counters.received(),
                   "sent": c.counters.sent(), "rounds_ok": c.stats.ok.load(Relaxed),
                   "errors": c.stats.errors.load(Relaxed), "logins": c.stats.logins.load(Relaxed), "addresses": c.stats.addresses.load(Relaxed),
                   "thumbnails": c.stats.thumbnails.load(Relaxed), "posts": c.stats.posts.load(Relaxed)})
        })
        .collect()
}

/// The agent's alert events from its JSON file sink, in short (diagnostics).
fn json_sink_events(path: &Path) -> Vec<Value> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|e| {
            let a = &e["alert"];
            json!({"event": e["event"], "at": e["at"], "rule": a["rule"], "service": a["service"],
                   "peer": a["peer"]["addr"], "bytes": a["bytes"], "window": a["window"]})
        })
        .collect()
}

/// How the agent ran.
struct AgentFacts {
    pid: u32,
    rss_kb: Option<u64>,
    /// CPU time since it attached.
    cpu_secs: Option<f64>,
    /// Time since it attached.
    secs: f64,
    exit: Option<String>,
    /// `Ok` when it exited 0.
    exit_ok: Result<(), String>,
    stop_secs: f64,
}

/// Everything the report says.
struct Outcome<'a> {
    opts: &'a Options,
    failures: &'a [String],
    install_secs: f64,
    synapse: &'a synapse::Install,
    attach: Duration,
    users: usize,
    pop: &'a scenario::Population,
    normal: &'a Normal,
    bytes_attack_phase: u64,
    clients: Vec<Value>,
    attack: &'a Attack,
    attack_start_ms: i64,
    patient: Option<&'a traffic::Patient>,
    receiver: &'a rsyslog::Receiver,
    setup: &'a AgentSetup,
    max_bytes: u64,
    verdict: &'a verdict::Verdict,
    findings: &'a [verdict::Finding],
    watch: &'a Watch<'a>,
    agent: AgentFacts,
    total_secs: f64,
    servers_at_attack: Value,
    containment: &'a containment::Outcome,
    latencies: Value,
}

fn report_json(o: &Outcome<'_>) -> Value {
    json!({
        "preset": o.opts.name,
        "passed": o.failures.is_empty(),
        "failures": o.failures,
        "options": {
            "messages": o.opts.messages, "media": o.opts.media, "media_min": o.opts.media_min,
            "media_max": o.opts.media_max, "clients": o.opts.clients,
            "learning_secs": o.opts.learning.as_secs(), "after_learning_secs": o.opts.after_learning.as_secs(),
            "alert_within_secs": o.opts.alert_within.as_secs(), "grace_secs": o.opts.grace.as_secs(),
            "containment": o.opts.containment.name(), "attacker_persists": o.opts.persist,
        },
        "durations_secs": {
            "install": o.install_secs,
            "agent_attach": o.attach.as_secs_f64(),
            "populate": o.pop.secs,
            "attack": o.attack.secs,
            "total": o.total_secs,
        },
        "synapse": {
            "version": synapse::VERSION,
            "pip_install_secs": o.synapse.pip_secs,
            "venv_bytes": o.synapse.venv_bytes,
        },
        "population": {
            "users": o.users, "messages": o.pop.messages, "media": o.pop.media,
            "media_bytes": o.pop.media_bytes,
        },
        "bytes_received": {
            "normal_learning": o.normal.bytes_learning,
            "normal_after_learning": o.normal.bytes_after_learning,
            "normal_during_attack_and_grace": o.bytes_attack_phase,
            "attacker": o.attack.received,
            "attacker_media_bodies": o.attack.media_bytes,
            "attacker_history_pages": o.attack.page_bytes,
        },
        "clients": o.clients,
        "restart": {
            "synapse_pids": [o.normal.restart.old_pids[0], o.normal.restart.new_pids[0]],
            "nginx_pids": [o.normal.restart.old_pids[1], o.normal.restart.new_pids[1]],
            "down_secs": o.normal.restart.down_secs,
            "client_errors": o.normal.restart_errors,
            "clients_served_after": o.normal.survivors,
        },
        "attack": {
            "address": ATTACKER.to_string(), "account": account(HIJACKED).user,
            "start_ms": o.attack_start_ms, "pages": o.attack.pages, "images": o.attack.media,
            "received": o.attack.received, "sent": o.attack.sent, "secs": o.attack.secs,
            "downloads": o.attack.downloads, "complete": o.attack.complete,
            "timeline_ms_bytes": o.attack.timeline,
        },
        "containment": containment::json(o.containment),
        "normal_latency_by_phase": o.latencies,
        "servers_at_attack": o.servers_at_attack,
        "rsyslogd": {"pid": o.receiver.daemon.pid(), "address": o.receiver.address()},
        "threshold_peer_outlier_floor_1m": o.setup.threshold,
        "max_bytes_accepted": o.max_bytes,
        "alert": o.verdict.detection,
        "patient_attack": o.patient,
        "patient_alert": o.verdict.patient,
        "alerts_by_rule": o.verdict.alerts_by_rule,
        "attacker_rules": o.verdict.attacker_rules,
        "false_alerts": o.verdict.false_alerts,
        "syslog": {
            "messages": o.watch.lines.len(),
            "by_msgid": o.watch.by_msgid(),
            "before_learning_end": o.normal.messages_at_learning_end,
            "before_attack": o.normal.messages_before_attack,
            "findings": o.findings,
        },
        "json_sink": json_sink_events(&o.setup.json_sink),
        "agent": {
            "pid": o.agent.pid,
            "rss_kb_at_end": o.agent.rss_kb,
            "cpu_secs": o.agent.cpu_secs,
            "cpu_percent": o.agent.cpu_secs.map(|c| 100.0 * c / o.agent.secs),
            "exit": o.agent.exit,
            "stop_secs": o.agent.stop_secs,
        },
    })
}

/// Installed, built, started and populated; nothing watched yet.
struct Ground {
    installed: prereq::Installed,
    install_secs: f64,
    bin: PathBuf,
    receiver: rsyslog::Receiver,
    servers: Servers,
    users: usize,
    pop: scenario::Population,
}

fn prepare(root: &Path, tools: &Tools, dir: &Path, opts: &Options) -> Result<Ground> {
    let t = Instant::now();
    fs::create_dir_all(dir)?;
    let installed = prereq::prerequisites(dir)?;
    let install_secs = t.elapsed().as_secs_f64();
    let bin = build::release(root, tools)?;
    let receiver = cmd::step("rsyslogd, the SOC's receiver, on loopback", || {
        rsyslog::start(&installed.rsyslogd, &dir.join("rsyslog"))
    })?;
    let servers = Servers::start(dir, &installed.synapse.python)?;
    let users = usize::from(opts.clients).max(HIJACKED + 1);
    let pop = cmd::step("populate the public room through nginx", || {
        scenario::populate(
            &servers.base,
            &servers.admin_base,
            &servers.secret,
            Amounts {
                users,
                messages: opts.messages,
                media: opts.media,
                media_min: opts.media_min,
                media_max: opts.media_max,
            },
        )
    })?;
    Ok(Ground {
        installed,
        install_secs,
        bin,
        receiver,
        servers,
        users,
        pop,
    })
}

/// The normal population: client `i` on 127.0.0.(10 + i), logged in as user `i` (mod
/// `users`).
fn start_clients(
    base: &str,
    pop: &scenario::Population,
    opts: &Options,
    users: usize,
) -> (Arc<World>, Population) {
    let world = Arc::new(World {
        base: base.to_owned(),
        room: pop.room.clone(),
        media: pop.media_uris.clone(),
    });
    let hosts = (0..opts.clients)
        .map(|i| {
            (
                Ipv4Addr::new(127, 0, 0, 10 + i),
                account(usize::from(i) % users),
            )
        })
        .collect();
    let clients = Population::start(&world, hosts, opts.roam_every);
    (world, clients)
}

/// The patient attacker in its own thread while rsyslogd is watched, until its alert comes
/// or the time allowed for it passes. Returns what it did and its start (Unix ms).
fn patient_phase(
    p: PatientOptions,
    world: &Arc<World>,
    users: usize,
    watch: &mut Watch<'_>,
    agent: &mut Daemon,
) -> Result<(traffic::Patient, i64)> {
    eprintln!(
        "==> patient attacker: {} from {PATIENT}, {} MiB a minute (under every 1-minute bar)",
        account(PATIENT_ACCOUNT % users).user,
        p.per_minute >> 20
    );
    let start_ms = now_ms();
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = {
        let (world, stop) = (Arc::clone(world), Arc::clone(&stop));
        let account = account(PATIENT_ACCOUNT % users);
        let deadline = p.alert_within + Duration::from_secs(30);
        thread::spawn(move || {
            traffic::patient_attack(&world, PATIENT, &account, p.per_minute, deadline, &stop)
        })
    };
    let address = PATIENT.to_string();
    let detected = |w: &Watch<'_>| {
        w.findings()
            .iter()
            .any(|f| f.peer.as_deref() == Some(address.as_str()) && f.rule == RULE)
    };
    while !detected(watch) && started.elapsed() < p.alert_within && !attacker.is_finished() {
        watch.hold(Instant::now() + POLL, agent)?;
    }
    stop.store(true, Relaxed);
    let patient = attacker
        .join()
        .map_err(|_| anyhow::anyhow!("the patient attacker's thread panicked"))?
        .context("the patient attacker")?;
    eprintln!(
        "    patient attacker: {:.1} MB in {:.0} s (busiest minute {:.1} MB); alert {}{}",
        patient.received as f64 / 1e6,
        patient.secs,
        patient.max_minute as f64 / 1e6,
        if detected(watch) {
            "received"
        } else {
            "NOT received"
        },
        patient
            .cut_short
            .as_deref()
            .map_or(String::new(), |why| format!(
                "; a download failed first: {why}"
            ))
    );
    Ok((patient, start_ms))
}

/// SIGTERM to the agent, after its last resource use is read.
fn stop_agent(agent: &mut Daemon, cpu_at_attach: f64, t_attached: Instant) -> AgentFacts {
    let pid = agent.pid();
    let rss_kb = daemon::rss_kb(pid);
    let cpu_secs = daemon::cpu_secs(pid).map(|c| c - cpu_at_attach);
    let secs = t_attached.elapsed().as_secs_f64();
    let (stop, status) = agent.stop_status();
    AgentFacts {
        pid,
        rss_kb,
        cpu_secs,
        secs,
        exit: status.map(|s| s.to_string()),
        exit_ok: match status {
            Some(s) if s.success() => Ok(()),
            Some(s) => Err(s.to_string()),
            None => Err("ignored SIGTERM for 15 s, killed".to_owned()),
        },
        stop_secs: stop.as_secs_f64(),
    }
}

/// Writes and prints the report; fails naming each failed expectation.
fn conclude(dir: &Path, report: Value, failures: &[String]) -> Result<Report> {
    let out = dir.join("report.json");
    fs::write(&out, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", out.display()))?;
    println!("{}", report::summary(&report));
    eprintln!("==> report written to {}", out.display());
    if !failures.is_empty() {
        bail!(
            "e2e scenario failed ({} expectation(s)):\n  - {}",
            failures.len(),
            failures.join("\n  - ")
        );
    }
    Ok(Report { json: report })
}

/// Who serves the attacker: nginx's workers (the alert must name one of them), and the
/// servers' pids for the report.
fn who_serves(servers: &Servers) -> (Vec<u32>, Value) {
    let workers = daemon::children(servers.nginx.pid());
    let json = json!({
        "master": servers.nginx.pid(),
        "workers": workers,
        "synapse": servers.synapse.pid(),
    });
    (workers, json)
}

/// The containment phase's outcome and failures (see [`containment::judge`]).
fn judge_containment(
    opts: &Options,
    setup: &AgentSetup,
    watch: &Watch<'_>,
    attack: &Attack,
    clients: &Population,
) -> (containment::Outcome, Vec<String>) {
    containment::judge(
        watch,
        &containment::Facts {
            mode: opts.containment,
            rate: setup.rate,
            target: &ATTACKER.to_string(),
            timeline: &attack.timeline,
            complete: attack.complete,
            latencies: &clients.latencies,
        },
    )
}

/// Runs the scenario. `Err` when it could not run ([`prereq::unavailable`] tells a missing
/// prerequisite, to skip, from a failure) or when an expectation failed (the report is
/// written first; the error names each failed expectation).
pub fn run(root: &Path, tools: &Tools, opts: &Options) -> Result<Report> {
    let t_run = Instant::now();
    let dir = root.join("target").join("e2e");
    let Ground {
        installed,
        install_secs,
        bin,
        receiver,
        mut servers,
        users,
        pop,
    } = prepare(root, tools, &dir, opts)?;

    let setup = configure_agent(&dir, &bin, opts, &receiver.address())?;
    let (mut agent, attach) = cmd::step("start the agent (release build, root)", || {
        egress_agent::start(&bin, &setup.config, &dir.join("agent.log"))
    })?;
    let cpu_at_attach = daemon::cpu_secs(agent.pid()).unwrap_or(0.0);
    let t_attached = Instant::now();

    let (world, mut clients) = start_clients(&servers.base, &pop, opts, users);
    let mut watch = Watch::new(&receiver);

    let normal = normal_phases(
        opts,
        t_attached,
        &mut servers,
        &clients,
        &mut watch,
        &mut agent,
    )?;
    let (nginx_workers, nginx_at_attack) = who_serves(&servers);
    let Attacks {
        attack,
        attack_start_ms,
        patient,
    } = attacks(
        opts,
        (&world, &clients.latencies),
        users,
        &mut watch,
        &mut agent,
    )?;
    let bytes_attack_phase =
        clients.received() - normal.bytes_learning - normal.bytes_after_learning;
    let client_report = clients_json(&clients);
    clients.stop();

    let agent_facts = stop_agent(&mut agent, cpu_at_attach, t_attached);
    // What the agent sent while stopping.
    watch.drain(Duration::from_secs(2));
    drop(servers);

    let findings = watch.findings();
    let (attacker_ip, patient_ip) = (ATTACKER.to_string(), PATIENT.to_string());
    let expect = expectations(
        opts,
        &setup,
        (&attacker_ip, &attack, attack_start_ms),
        (&patient_ip, patient.as_ref()),
    );
    let v = verdict::judge(&findings, &expect);
    let sd_mismatches = watch.sd_mismatches();
    let (contained, contain_failures) = judge_containment(opts, &setup, &watch, &attack, &clients);
    let mut failures = v.failures.clone();
    failures.extend(contain_failures);
    failures.extend(impatience(patient.as_ref(), setup.threshold));
    failures.extend(report::failures(&report::Checks {
        agent_exit: agent_facts.exit_ok.clone(),
        clients: usize::from(opts.clients),
        survivors: normal.survivors,
        attack_received: attack.received,
        threshold: setup.threshold,
        images_found: attack.media,
        images_posted: pop.media,
        sd_mismatches: &sd_mismatches,
        alert_pid: v.detection.as_ref().and_then(|d| d.pid),
        nginx_workers: &nginx_workers,
    }));

    let report = report_json(&Outcome {
        opts,
        failures: &failures,
        install_secs,
        synapse: &installed.synapse,
        attach,
        users,
        pop: &pop,
        normal: &normal,
        bytes_attack_phase,
        clients: client_report,
        attack: &attack,
        attack_start_ms,
        patient: patient.as_ref().map(|(p, _)| p),
        receiver: &receiver,
        setup: &setup,
        max_bytes: expect.max_bytes(),
        verdict: &v,
        findings: &findings,
        watch: &watch,
        agent: agent_facts,
        total_secs: t_run.elapsed().as_secs_f64(),
        servers_at_attack: nginx_at_attack,
        containment: &contained,
        latencies: clients.latencies.json(),
    });
    conclude(&dir, report, &failures)
}
