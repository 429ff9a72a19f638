//! SIGHUP: the running agent reads its configuration file again and applies it without a
//! restart. The kernel programs, their maps and the collector are untouched (no byte is
//! missed, no counter restarts); the detector keeps its services, peers, windows, baselines
//! and open alerts and takes the new rules, services, destinations and alert settings; the
//! sinks and the metrics endpoint restart only when their settings changed. A file that does
//! not parse or validate changes nothing: the agent goes on with the previous configuration
//! and logs why.

use std::path::Path;

use crate::{config::Config, detection::LiveDetector, export::settings::SinkType};

/// What differs between two configurations, by the keys an operator edits.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Applied by the running agent.
    pub applied: Vec<&'static str>,
    /// Read only at start: the running agent goes on with the previous value.
    pub at_next_start: Vec<&'static str>,
}

impl Changes {
    pub fn between(old: &Config, new: &Config) -> Self {
        let mut c = Self::default();
        let mut applied = |changed: bool, key| {
            if changed {
                c.applied.push(key);
            }
        };
        applied(old.detect != new.detect, "detect");
        applied(old.services != new.services, "services");
        applied(old.destinations != new.destinations, "destinations");
        applied(old.rules != new.rules, "rules");
        applied(old.alerts != new.alerts, "alerts");
        applied(old.sinks != new.sinks, "sinks");
        applied(old.metrics != new.metrics, "metrics");
        applied(
            old.state.checkpoint_every != new.state.checkpoint_every,
            "state.checkpoint_every",
        );
        applied(
            old.state.keep_resolved != new.state.keep_resolved,
            "state.keep_resolved",
        );
        let (a, b) = (&old.agent, &new.agent);
        for (changed, key) in [
            (a.interval != b.interval, "agent.interval"),
            (a.max_flows != b.max_flows, "agent.max_flows"),
            (a.idle_timeout != b.idle_timeout, "agent.idle_timeout"),
            (a.cgroup_mount != b.cgroup_mount, "agent.cgroup_mount"),
            (a.output != b.output, "agent.output"),
            (old.state.dir != new.state.dir, "state.dir"),
        ] {
            if changed {
                c.at_next_start.push(key);
            }
        }
        c
    }
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(
        "a stdout sink is configured but samples are written to stdout (run with --output none)"
    )]
    StdoutShared,
}

/// Reads the configuration at `path` (the embedded default when `None`) and applies it to the
/// running agent. `current` becomes what now runs. Everything is logged; an error means the
/// previous configuration is still in force.
pub fn on_hangup(
    path: Option<&Path>,
    current: &mut Config,
    detection: &mut LiveDetector,
    samples_on_stdout: bool,
) -> Result<Changes, ReloadError> {
    let mut new = Config::load(path)?;
    if samples_on_stdout && new.sinks.iter().any(|s| s.kind == SinkType::Stdout) {
        return Err(ReloadError::StdoutShared);
    }
    let changes = Changes::between(current, &new);
    for key in &changes.at_next_start {
        tracing::warn!(
            key,
            "configuration reload: {key} changed; it is read only at start, the running agent \
             keeps the previous value until it is restarted"
        );
    }
    if let Err(e) = detection.reload(current, &new) {
        // The previous sinks were started again: what runs is the old [[sinks]].
        tracing::error!(
            error = %crate::kernel::loader::error_chain(&e),
            "configuration reload: the new [[sinks]] cannot start; the previous sinks go on"
        );
        new.sinks.clone_from(&current.sinks);
    }
    *current = new;
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Origin;

    fn parse(text: &str) -> Config {
        Config::parse(text, &Origin::Embedded).unwrap()
    }

    #[test]
    fn changes_name_what_is_applied_and_what_waits_for_a_restart() {
        let old = parse("");
        assert_eq!(Changes::between(&old, &parse("")), Changes::default());
        let new = parse(
            "[agent]\ninterval = \"5s\"\n[state]\ndir = \"/tmp/elsewhere\"\n\
             checkpoint_every = \"30s\"\n\
             [rules.unknown_volume]\n1m = \"1MiB\"\n\
             [[destinations.allow]]\ncidr = \"192.0.2.0/24\"\n\
             [[services]]\nname = \"messaging\"\n[[services.match]]\ncomm = \"nginx\"\n",
        );
        let c = Changes::between(&old, &new);
        assert_eq!(
            c.applied,
            [
                "services",
                "destinations",
                "rules",
                "state.checkpoint_every"
            ]
        );
        assert_eq!(c.at_next_start, ["agent.interval", "state.dir"]);
    }

    #[test]
    fn the_same_settings_written_differently_are_no_change() {
        let a = parse("[rules.unknown_volume]\n1m = \"1MiB\"\n");
        let b = parse("# comment\n[rules.unknown_volume]\n1m = 1048576\n");
        assert_eq!(Changes::between(&a, &b), Changes::default());
    }
}
