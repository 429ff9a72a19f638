//! Command line of `egress-monitor`.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::output::OutputFormat;

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
}

/// Options shared by every command that attaches to the kernel.
#[derive(Clone, Debug, Args)]
pub struct CollectArgs {
    /// Poll interval (e.g. 1s, 500ms).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Maximum (socket, destination) flows tracked at once in the kernel. Beyond it bytes are
    /// still counted, as unattributed volume.
    #[arg(long, default_value_t = monitor_common::DEFAULT_MAX_FLOWS, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_flows: u32,
    /// A flow with no packet for this long is removed from the kernel table (counted).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Where to mount cgroup2 if the host has no cgroup v2 hierarchy mounted.
    #[arg(long, default_value = "/sys/fs/cgroup/unified")]
    pub cgroup_mount: PathBuf,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub collect: CollectArgs,
    /// Output format of the samples on stdout.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
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
    fn run_defaults() {
        let cli = Cli::try_parse_from(["egress-monitor", "run", "--output", "json"]).unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert_eq!(run.output, OutputFormat::Json);
        assert_eq!(run.collect.interval, Duration::from_secs(1));
        assert_eq!(run.collect.max_flows, monitor_common::DEFAULT_MAX_FLOWS);
        let err = Cli::try_parse_from(["egress-monitor", "run", "--max-flows", "0"]).unwrap_err();
        assert!(err.to_string().contains("--max-flows"), "{err}");
    }
}
