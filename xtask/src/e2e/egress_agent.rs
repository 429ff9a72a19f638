//! The agent under test: its effective configuration as it reads it, started as a child
//! (root) with its log in a file, ready once it has attached, stopped with SIGTERM by pid.

use std::{
    fs,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::daemon::Daemon;
use crate::cmd;

/// What the agent logs once its programs count egress.
pub const ATTACHED: &str = "attached: counting egress";

/// Loading and attaching the BPF programs: a second or two here; more under load.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);

/// Bytes of a size as the configuration writes it: a number, or a number and a unit
/// ("32MiB", "1GB", "512 KiB").
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// `rules.peer_outlier.floor."1m"` of an effective configuration (`egress-monitor config`):
/// the lowest bar a client's minute is judged against (the bar itself while the clients'
/// population is too small to have a quantile, as after the scenario's short learning).
pub fn peer_outlier_floor_1m(config_toml: &str) -> Result<u64> {
    let v: toml::Value = toml::from_str(config_toml).context("parsing the effective config")?;
    let raw = v
        .get("rules")
        .and_then(|r| r.get("peer_outlier"))
        .and_then(|r| r.get("floor"))
        .and_then(|r| r.get("1m"));
    match raw {
        Some(toml::Value::Integer(n)) => u64::try_from(*n).context("a negative threshold"),
        Some(toml::Value::String(s)) => parse_size(s).with_context(|| format!("size {s:?}")),
        other => bail!("rules.peer_outlier.floor.1m is {other:?}"),
    }
}

/// The agent's own reading of `config` (`egress-monitor --config PATH config`): it refuses
/// an unknown key, and the harness takes the threshold from it rather than assuming one.
pub fn effective_config(bin: &Path, config: &Path) -> Result<String> {
    cmd::output(Command::new(bin).arg("--config").arg(config).arg("config"))
        .context("egress-monitor refused the scenario's configuration")
}

/// Starts `egress-monitor --config CONFIG run --output none`, its log to `log`, and waits
/// until it has attached.
pub fn start(bin: &Path, config: &Path, log: &Path) -> Result<(Daemon, Duration)> {
    let mut d = Daemon::spawn(
        "egress-monitor",
        Command::new(bin)
            .arg("--config")
            .arg(config)
            .args(["run", "--output", "none"])
            .env("RUST_LOG", "info"),
        log,
    )?;
    let started = Instant::now();
    d.wait_until(ATTACH_TIMEOUT, || {
        fs::read_to_string(log).is_ok_and(|t| t.contains(ATTACHED))
    })
    .with_context(|| format!("the agent did not attach (log {})", log.display()))?;
    Ok((d, started.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("32MiB"), Some(32 << 20));
        assert_eq!(parse_size("1GB"), Some(1_000_000_000));
        assert_eq!(parse_size("512 KiB"), Some(512 << 10));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("3 parsecs"), None);
        assert_eq!(parse_size("99999999999999TiB"), None, "overflow");
    }

    #[test]
    fn threshold_from_the_effective_config() {
        let c =
            "[rules.peer_outlier]\nenabled = true\nfloor = { 1m = \"48MiB\", 10m = \"128MiB\" }\n";
        assert_eq!(peer_outlier_floor_1m(c).unwrap(), 48 << 20);
        assert_eq!(
            peer_outlier_floor_1m("[rules.peer_outlier.floor]\n1m = 1000\n").unwrap(),
            1000
        );
        assert!(peer_outlier_floor_1m("[rules.peer_outlier]\nfloor = {}\n").is_err());
        assert!(peer_outlier_floor_1m("[rules]\n").is_err());
    }
}
