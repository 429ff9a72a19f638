//! The containment phase's verdict: the agent decided a containment for the attacker and
//! exported it to the SOC (OCSF Network Remediation Activity at rsyslogd); in `enforce`, the
//! attacker got at most what it had when the containment started plus the rate for the rest
//! of its run (plus a stated slack); in `dry_run`, it was not slowed at all and the export
//! says "would throttle"; either way the normal clients did not feel it.

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use serde_json::Value;

use super::{
    egress_agent::parse_size,
    latency::{self, Latencies, Phase},
    options::ContainMode,
    rsyslog,
    watch::Watch,
};

/// OCSF Network Remediation Activity.
const REMEDIATION_CLASS: u64 = 7004;
/// What the attacker may read beyond rate x time after the containment began: the bucket's
/// burst (half a second of the rate, the agent's choice) and what had already left before
/// it, sitting unread in the attacker's socket (loopback's autotuned receive buffers: the
/// first full run's attacker read 6.3 MB more than the rate allowed, all of it in the first
/// seconds; `tcp_rmem` allows 32 MiB here).
pub const SLACK: u64 = 8 << 20;
/// After this long the attacker has read what was in flight: from then on it gets the rate.
pub const SETTLE_MS: i64 = 10_000;
/// What the steady part may exceed rate x time by: the burst and one image in progress.
pub const STEADY_SLACK: u64 = 1 << 20;

/// The rate the scenario's alerts throttle to: the first throttle of
/// `[[containment.actions]]` in the agent's effective configuration (the shipped default's:
/// severity >= high, the rule the attacker trips).
pub fn throttle_rate(config_toml: &str) -> Result<u64> {
    let v: toml::Value = toml::from_str(config_toml).context("parsing the effective config")?;
    let actions = v
        .get("containment")
        .and_then(|c| c.get("actions"))
        .and_then(toml::Value::as_array)
        .context("no [[containment.actions]] in the effective config")?;
    for a in actions {
        if a.get("action").and_then(toml::Value::as_str) == Some("throttle") {
            return match a.get("rate") {
                Some(toml::Value::Integer(n)) => u64::try_from(*n).context("a negative rate"),
                Some(toml::Value::String(s)) => {
                    parse_size(s).with_context(|| format!("rate {s:?}"))
                }
                other => bail!("containment.actions rate is {other:?}"),
            };
        }
    }
    bail!("no throttle among [[containment.actions]]")
}

/// The attacker's containment as the SOC received it.
#[derive(Clone, Debug, Serialize)]
pub struct Exported {
    /// The agent's time of the start (Unix ms).
    pub at_ms: i64,
    /// When rsyslogd had it (the harness's clock, Unix ms).
    pub received_ms: i64,
    /// `enforced` or `dry_run`.
    pub status_code: String,
    pub status: String,
    pub message: String,
    pub containment: String,
}

/// The first containment start about `target` (`127.0.0.66`) among rsyslogd's messages.
pub fn exported_start(watch: &Watch<'_>, target: &str) -> Option<Exported> {
    watch.lines.iter().find_map(|(seen, line)| {
        let p = rsyslog::parse(line).ok()?.payload?;
        let about = p["observables"]
            .as_array()?
            .iter()
            .any(|o| o["name"] == "unmapped.target" && o["value"] == target);
        // Activity 1: Isolate (a start); renewals and lifts follow with other activities.
        (p["class_uid"].as_u64() == Some(REMEDIATION_CLASS) && p["activity_id"] == 1 && about).then(
            || Exported {
                at_ms: p["time"].as_i64().unwrap_or_default(),
                received_ms: *seen,
                status_code: p["status_code"].as_str().unwrap_or_default().to_owned(),
                status: p["status"].as_str().unwrap_or_default().to_owned(),
                message: p["message"].as_str().unwrap_or_default().to_owned(),
                containment: p["command_uid"].as_str().unwrap_or_default().to_owned(),
            },
        )
    })
}

/// Bytes received by `at_ms` on a (Unix ms, bytes so far) timeline: the last sample at or
/// before it (the attacker's bytes before the containment began).
pub fn received_by(timeline: &[(i64, u64)], at_ms: i64) -> u64 {
    timeline
        .iter()
        .take_while(|(t, _)| *t <= at_ms)
        .last()
        .map_or(0, |(_, b)| *b)
}

/// What the containment phase measured.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub mode: &'static str,
    pub rate: u64,
    pub exported: Option<Exported>,
    /// Attacker bytes by the containment's start, after it, and what enforcement allowed
    /// after it (rate x remaining time + slack).
    pub before: u64,
    pub after: u64,
    pub allowed_after: Option<u64>,
    pub remaining_secs: f64,
    /// The attacker's average rate after the start.
    pub after_rate: f64,
    /// Its bytes and rate from [`SETTLE_MS`] after the start to the end: the throttle itself.
    pub steady: u64,
    pub steady_rate: f64,
}

/// The inputs of the verdict.
pub struct Facts<'a> {
    pub mode: ContainMode,
    pub rate: u64,
    pub target: &'a str,
    pub timeline: &'a [(i64, u64)],
    /// The attacker read everything at least once.
    pub complete: bool,
    pub latencies: &'a Latencies,
}

/// Judges the phase: the outcome and the failed expectations.
pub fn judge(watch: &Watch<'_>, f: &Facts<'_>) -> (Outcome, Vec<String>) {
    let mut failures = Vec::new();
    let exported = exported_start(watch, f.target);
    let end = f.timeline.last().copied().unwrap_or_default();
    let (before, remaining_ms) = exported.as_ref().map_or((end.1, 0), |e| {
        (received_by(f.timeline, e.at_ms), end.0 - e.at_ms)
    });
    let remaining_secs = remaining_ms.max(0) as f64 / 1e3;
    let after = end.1.saturating_sub(before);
    let settled_at = exported.as_ref().map_or(end.0, |e| e.at_ms + SETTLE_MS);
    let steady = end.1.saturating_sub(received_by(f.timeline, settled_at));
    let steady_secs = (end.0 - settled_at).max(0) as f64 / 1e3;
    let mut allowed_after = None;
    match (&exported, f.mode) {
        (None, _) => failures.push(format!(
            "no containment of {} reached rsyslogd (OCSF class {REMEDIATION_CLASS}, Isolate)",
            f.target
        )),
        (Some(e), ContainMode::Enforce) => {
            if e.status_code != "enforced" {
                failures.push(format!(
                    "the attacker's containment is {:?}, not enforced: {}",
                    e.status_code, e.message
                ));
            }
            let allowed = (f.rate as f64 * remaining_secs) as u64 + SLACK;
            allowed_after = Some(allowed);
            if after > allowed {
                failures.push(format!(
                    "the throttled attacker received {after} bytes in the {remaining_secs:.0} s \
                     after its containment began, over {allowed} ({} B/s x time + {SLACK})",
                    f.rate
                ));
            }
            let steady_allowed = (f.rate as f64 * steady_secs) as u64 + STEADY_SLACK;
            if steady > steady_allowed {
                failures.push(format!(
                    "once settled, the throttled attacker received {steady} bytes in \
                     {steady_secs:.0} s, over {steady_allowed} ({} B/s x time + {STEADY_SLACK})",
                    f.rate
                ));
            }
        }
        (Some(e), ContainMode::DryRun) => {
            if e.status_code != "dry_run" || !e.message.contains("would throttle") {
                failures.push(format!(
                    "the dry-run containment was exported as {:?}: {}",
                    e.status_code, e.message
                ));
            }
            if !f.complete {
                failures.push(
                    "in dry run the attacker did not get everything: something slowed it".into(),
                );
            }
        }
    }
    let normal = f.latencies.summary(Phase::AfterLearning);
    let attack = f.latencies.summary(Phase::Attack);
    if f.mode == ContainMode::Enforce {
        failures.extend(latency::unchanged(normal, attack));
    } else if attack.failures > 0 {
        failures.push(format!(
            "{} normal client request(s) failed during the attack",
            attack.failures
        ));
    }
    let outcome = Outcome {
        mode: f.mode.name(),
        rate: f.rate,
        exported,
        before,
        after,
        allowed_after,
        remaining_secs,
        after_rate: if remaining_secs > 0.0 {
            after as f64 / remaining_secs
        } else {
            0.0
        },
        steady,
        steady_rate: if steady_secs > 0.0 {
            steady as f64 / steady_secs
        } else {
            0.0
        },
    };
    (outcome, failures)
}

/// The outcome for the report.
pub fn json(o: &Outcome) -> Value {
    serde_json::to_value(o).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_the_first_throttle_of_the_effective_config() {
        let c = "[containment]\nmode = \"enforce\"\n[[containment.actions]]\nrule = \"x\"\n\
                 action = \"block\"\n[[containment.actions]]\naction = \"throttle\"\n\
                 rate = \"256KiB\"\n";
        assert_eq!(throttle_rate(c).unwrap(), 256 << 10);
        assert!(throttle_rate("[containment]\n").is_err());
        assert!(throttle_rate("[[containment.actions]]\naction = \"block\"\n").is_err());
    }

    #[test]
    fn bytes_by_a_time_are_the_last_sample_at_or_before_it() {
        let t = [(1000, 10), (1250, 20), (1500, 40)];
        assert_eq!(received_by(&t, 999), 0);
        assert_eq!(received_by(&t, 1250), 20);
        assert_eq!(received_by(&t, 1499), 20);
        assert_eq!(received_by(&t, 9999), 40);
    }
}
