//! Command line of `egress-monitor`.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{
    config::Config, detect::rules::RuleId, output::OutputFormat,
    replay::homeserver::Scenario as HomeserverScenario,
};

#[derive(Debug, Parser)]
#[command(
    name = "egress-monitor",
    version,
    about = "Per-process, per-destination egress accounting in the kernel (eBPF)"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Log filter (tracing-subscriber syntax), overrides `RUST_LOG`.
    #[arg(long, global = true)]
    pub log: Option<String>,
    /// Configuration file (TOML); without it, the embedded default. Options given on the
    /// command line override the file.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: count egress per process and destination, print `FlowSample`s.
    Run(RunArgs),
    /// Live table of the top talkers.
    Top(TopArgs),
    /// Check what this kernel and these privileges allow, and why something will not work.
    Doctor(DoctorArgs),
    /// Print the effective configuration (the embedded default, or `--config PATH`).
    Config,
    /// Run recorded `FlowSample` JSON lines (what `run --output json` prints) through the
    /// detector on their own time, and print the alerts. Needs no privilege.
    Replay(ReplayArgs),
    /// Run the week-long homeserver scenarios (attacks and benign events) through the
    /// detector for a few seeds and print what it caught, how soon, and its false alerts.
    /// Needs no privilege.
    Efficacy(EfficacyArgs),
    /// List, show, acknowledge or suppress alerts (in the state database).
    #[command(subcommand)]
    Alerts(AlertsCommand),
    /// List, start or lift containments (throttled or blocked peers, in the state database;
    /// a running agent applies them at its next poll).
    #[command(subcommand)]
    Contain(ContainCommand),
    /// Print a synthetic two-day trace of a messaging server (`FlowSample` JSON lines), for
    /// `replay`: `normal`, `bulk-download`, `upload` or `slow-drip`.
    #[command(hide = true)]
    Synthesize(SynthesizeArgs),
}

/// Where the state database lives; `--state-dir` overrides `state.dir` of the config.
#[derive(Clone, Debug, Default, Args)]
pub struct StateArgs {
    /// Directory of the state database [config: `state.dir`, default /var/lib/egress-monitor].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

impl StateArgs {
    pub fn dir(&self, config: &Config) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| config.state.dir.clone())
    }
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The trace: JSON lines, `-` for standard input.
    pub file: PathBuf,
    /// Keep the detector's state in this directory, so learning carries over between
    /// replays (default: in memory, forgotten at the end).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Alert output: readable lines or `AlertEvent` JSON lines.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "command-line flags: each is a switch of its own"
)]
pub struct EfficacyArgs {
    /// Days of each trace (day 1 is the learning day; attacks are on day 3).
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(3..=60))]
    pub days: u32,
    /// Seeds, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub seeds: Vec<u64>,
    /// Only these scenarios (repeatable; default: all).
    #[arg(long = "scenario", value_enum)]
    pub scenarios: Vec<HomeserverScenario>,
    /// Print the table as markdown (what the README carries).
    #[arg(long, conflicts_with = "json")]
    pub markdown: bool,
    /// Print the whole report (every alert of every run) as JSON.
    #[arg(long)]
    pub json: bool,
    /// Print one markdown row for the whole run (attacks caught, missed, false alerts),
    /// for comparing population shapes; `--summary-header` prints the header too.
    #[arg(long, conflicts_with_all = ["json", "markdown"])]
    pub summary: bool,
    #[arg(long, requires = "summary")]
    pub summary_header: bool,
    /// Also list every alert of every run (about the event, or false).
    #[arg(long)]
    pub details: bool,
    /// Runs at once (default: the available cores).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub threads: Option<u32>,
    #[command(flatten)]
    pub population: PopulationArgs,
}

/// How many clients and servers a homeserver trace has.
#[derive(Debug, Clone, Copy, Args)]
pub struct PopulationArgs {
    /// Ministry NAT gateways.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(0..=200))]
    pub nats: u32,
    /// Home clients (stable-ish addresses).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub homes: u32,
    /// Phones a day, each on a new address every day.
    #[arg(long, default_value_t = 420, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub mobiles: u32,
    /// Federation servers Synapse connects to.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub federation: u32,
}

impl PopulationArgs {
    pub fn population(&self) -> crate::replay::homeserver::Population {
        crate::replay::homeserver::Population {
            nats: self.nats as usize,
            homes: self.homes as usize,
            mobiles: self.mobiles as usize,
            federation: self.federation as usize,
            ..Default::default()
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Alerts, newest first.
    List(AlertsListArgs),
    /// One alert in full, with its history (the id or a unique prefix of it).
    Show {
        id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Acknowledge an open alert: it stays open but sends no more updates.
    Ack {
        id: String,
        /// Also make the alert's peer a learned destination of its service.
        #[arg(long)]
        learn: bool,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Stop alerting for an alert's (rule, service, peer), or for what the options select;
    /// open alerts it covers are closed.
    Suppress(AlertsSuppressArgs),
    /// Suppressions in force, with their ids.
    Suppressions {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Lift a suppression (its id from `alerts suppressions`).
    Unsuppress {
        id: i64,
        #[command(flatten)]
        state: StateArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum ContainCommand {
    /// Containments, newest first: the active ones, or with `--all` the ended ones too.
    List {
        #[arg(long)]
        all: bool,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArgs,
    },
    /// One containment in full, with its history (the id or a unique prefix of it).
    Show {
        id: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Start a containment by hand: the same rails as the policy's (a configured service, no
    /// internal, allowlisted or learned destination, at most `max_per_service`), and the
    /// mode of `[containment]` (in dry run it is recorded, never applied).
    Add(ContainAddArgs),
    /// Lift an active containment (its id from `contain list`).
    Lift {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        state: StateArgs,
    },
}

#[derive(Debug, Args)]
pub struct ContainAddArgs {
    /// A service of `[[services]]`.
    #[arg(long)]
    pub service: String,
    /// The peer (`198.51.100.7`) or a network (`198.51.100.0/24`).
    #[arg(long, value_parser = parse_target)]
    pub peer: ipnet::IpNet,
    /// Throttle to this many bytes per second (`256KiB`, `1MB`).
    #[arg(long, value_parser = parse_rate, required_unless_present = "block", conflicts_with = "block")]
    pub rate: Option<u64>,
    /// Block instead: nothing to the peer, its new connections refused.
    #[arg(long)]
    pub block: bool,
    /// How long (the TTL; `contain lift` ends it sooner).
    #[arg(long = "for", value_parser = parse_duration, value_name = "DURATION", default_value = "1h")]
    pub duration: Duration,
    /// Why (stored and exported with it).
    #[arg(long)]
    pub reason: String,
    #[command(flatten)]
    pub state: StateArgs,
}

/// An address (a /32 or /128) or a network; host bits are refused, not silently cleared.
pub fn parse_target(s: &str) -> Result<ipnet::IpNet, String> {
    if let Ok(addr) = s.parse::<std::net::IpAddr>() {
        return Ok(ipnet::IpNet::from(addr));
    }
    let net: ipnet::IpNet = s
        .parse()
        .map_err(|_| format!("{s:?} is neither an address nor a network (198.51.100.0/24)"))?;
    if net.trunc() != net {
        return Err(format!(
            "{s:?} has host bits set: did you mean {}?",
            net.trunc()
        ));
    }
    Ok(net)
}

/// A rate in bytes per second: `256KiB`, `1MB`, or a number.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let bytes = s
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("{s:?} is not a size ({e}); write e.g. 256KiB"))?;
    if bytes < crate::contain::settings::MIN_RATE {
        return Err(format!(
            "{bytes} B/s is below {} B/s: use --block",
            crate::contain::settings::MIN_RATE
        ));
    }
    Ok(bytes)
}

#[derive(Debug, Args)]
pub struct AlertsListArgs {
    #[arg(long, value_enum)]
    pub status: Option<StatusArg>,
    /// Rule id (`unknown_volume`, `peer_outlier`, `service_baseline`, `new_destinations`,
    /// `slow_drip`).
    #[arg(long, value_parser = parse_rule)]
    pub rule: Option<RuleId>,
    #[arg(long)]
    pub service: Option<String>,
    /// At most this many (0: all).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StatusArg {
    Open,
    Resolved,
}

#[derive(Debug, Args)]
pub struct AlertsSuppressArgs {
    /// Suppress this alert's (rule, service, peer).
    #[arg(required_unless_present_any = ["rule", "service", "peer"])]
    pub id: Option<String>,
    #[arg(long, value_parser = parse_rule, conflicts_with = "id")]
    pub rule: Option<RuleId>,
    #[arg(long, conflicts_with = "id")]
    pub service: Option<String>,
    #[arg(long, conflicts_with = "id")]
    pub peer: Option<std::net::IpAddr>,
    /// For how long (e.g. 24h, 7d); forever without it.
    #[arg(long = "for", value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Debug, Args)]
pub struct SynthesizeArgs {
    /// A two-day trace's scenario (normal, bulk-download, upload, slow-drip); with
    /// `--homeserver`, a homeserver week's (see `efficacy`).
    pub scenario: String,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The realistic homeserver trace (NAT gateways, roaming phones, federation...).
    #[arg(long)]
    pub homeserver: bool,
    /// Days of the homeserver trace (day 1 is the learning day).
    #[arg(long, default_value_t = 7, requires = "homeserver", value_parser = clap::value_parser!(u32).range(1..=60))]
    pub days: u32,
    #[command(flatten)]
    pub population: PopulationArgs,
}

pub fn parse_rule(s: &str) -> Result<RuleId, String> {
    RuleId::ALL
        .into_iter()
        .find(|r| r.id() == s)
        .ok_or_else(|| {
            let ids: Vec<&str> = RuleId::ALL.iter().map(|r| r.id()).collect();
            format!("unknown rule {s:?} (rules: {})", ids.join(", "))
        })
}

/// Options shared by every command that attaches to the kernel. Each overrides the same key
/// of the configuration's `[agent]` table.
#[derive(Clone, Debug, Default, Args)]
pub struct CollectArgs {
    /// Poll interval (e.g. 1s, 500ms) [config: `agent.interval`, default 1s].
    #[arg(long, value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// Maximum (socket, destination) flows tracked at once in the kernel; beyond it bytes are
    /// still counted, as unattributed volume [config: `agent.max_flows`, default 131072].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_flows: Option<u32>,
    /// A flow with no packet for this long is removed from the kernel table, counted
    /// [config: `agent.idle_timeout`, default 5m].
    #[arg(long, value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// Where to mount cgroup2 if the host has none mounted [config: `agent.cgroup_mount`].
    #[arg(long)]
    pub cgroup_mount: Option<PathBuf>,
}

/// What the agent runs with: the configuration, overridden by the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub interval: Duration,
    pub max_flows: u32,
    pub idle_timeout: Duration,
    pub cgroup_mount: PathBuf,
}

impl CollectArgs {
    pub fn resolve(&self, config: &Config) -> Settings {
        let a = &config.agent;
        Settings {
            interval: self.interval.unwrap_or(a.interval.get_ref().0),
            max_flows: self.max_flows.unwrap_or(*a.max_flows.get_ref()),
            idle_timeout: self.idle_timeout.unwrap_or(a.idle_timeout.get_ref().0),
            cgroup_mount: self
                .cgroup_mount
                .clone()
                .unwrap_or_else(|| a.cgroup_mount.clone()),
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub collect: CollectArgs,
    #[command(flatten)]
    pub state: StateArgs,
    /// Move the state database aside (renamed `state.db.reset-<time>`, never deleted) and
    /// start with an empty one: the recovery from a corrupt or unreadable state.
    #[arg(long)]
    pub reset_state: bool,
    /// Output format of the samples on stdout [config: `agent.output`, default text].
    #[arg(long, value_enum)]
    pub output: Option<OutputFormat>,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub collect: CollectArgs,
    /// Rows shown.
    #[arg(long, default_value_t = 25)]
    pub limit: usize,
    /// Stop after this many refreshes (default: until Ctrl-C).
    #[arg(long)]
    pub iterations: Option<u64>,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the checks as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))?;
    if d.is_zero() {
        return Err(format!("duration {s:?} must be greater than zero"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(
            parse_duration("0s")
                .unwrap_err()
                .contains("greater than zero")
        );
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .contains("invalid duration")
        );
    }

    #[test]
    fn run_defaults_come_from_the_config_and_flags_override_it() {
        let cli = Cli::try_parse_from(["egress-monitor", "run", "--output", "json"]).unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert_eq!(run.output, Some(OutputFormat::Json));
        let config = Config::load(None).unwrap();
        let s = run.collect.resolve(&config);
        assert_eq!(s.interval, Duration::from_secs(1));
        assert_eq!(s.max_flows, monitor_common::DEFAULT_MAX_FLOWS);
        let cli = Cli::try_parse_from([
            "egress-monitor",
            "run",
            "--interval",
            "3s",
            "--max-flows",
            "7",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        let s = run.collect.resolve(&config);
        assert_eq!((s.interval, s.max_flows), (Duration::from_secs(3), 7));
        assert_eq!(s.idle_timeout, Duration::from_secs(300));
        let err = Cli::try_parse_from(["egress-monitor", "run", "--max-flows", "0"]).unwrap_err();
        assert!(err.to_string().contains("--max-flows"), "{err}");
    }

    #[test]
    fn efficacy_defaults_and_lists() {
        let cli = Cli::try_parse_from(["egress-monitor", "efficacy"]).unwrap();
        let Command::Efficacy(e) = cli.command else {
            panic!("not efficacy")
        };
        assert_eq!((e.days, e.seeds.as_slice()), (7, &[1, 2, 3][..]));
        assert!(e.scenarios.is_empty() && !e.markdown && !e.json);
        let cli = Cli::try_parse_from([
            "egress-monitor",
            "efficacy",
            "--days",
            "4",
            "--seeds",
            "7,8",
            "--scenario",
            "nat-rise",
            "--scenario",
            "low-and-slow",
            "--markdown",
        ])
        .unwrap();
        let Command::Efficacy(e) = cli.command else {
            panic!("not efficacy")
        };
        assert_eq!(e.days, 4);
        assert_eq!(e.seeds, vec![7, 8]);
        assert_eq!(
            e.scenarios,
            vec![HomeserverScenario::NatRise, HomeserverScenario::LowAndSlow]
        );
        assert!(Cli::try_parse_from(["egress-monitor", "efficacy", "--days", "2"]).is_err());
    }
}
