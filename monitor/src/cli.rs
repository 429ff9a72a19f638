//! Command line of `egress-monitor`.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{config::Config, output::OutputFormat};

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
}
