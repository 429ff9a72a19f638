//! The agent's configuration for the scenario (`target/e2e/agent.toml`): the embedded
//! defaults (every rule threshold included) plus the homeserver as one watched service,
//! loopback-only "internal" networks, and the alerts to a real syslog receiver.

use std::{path::Path, time::Duration};

/// What the scenario decides.
pub struct Settings<'a> {
    pub state_dir: &'a Path,
    pub learning: Duration,
    /// rsyslogd's `host:port`.
    pub syslog: &'a str,
    /// The harness's own copy of every alert event (the agent's JSON), relative to the state
    /// directory or absolute.
    pub json_file: &'a Path,
    /// `containment.mode` (`dry_run`, `enforce`).
    pub containment: &'a str,
}

/// The service's name in every alert.
pub const SERVICE: &str = "messaging";
/// Sink names (each has its own delivery cursor in the state database).
pub const SYSLOG_SINK: &str = "soc-syslog";
pub const FILE_SINK: &str = "harness-json";

/// TOML basic string: quotes and backslashes escaped (paths are the only free text).
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub fn render(s: &Settings<'_>) -> String {
    format!(
        r#"# Written by `cargo xtask e2e`: the embedded defaults (`egress-monitor config`) with
# these keys changed. Rule thresholds are the defaults on purpose: the scenario checks the
# product as shipped (unknown_volume: 32MiB in 1m, ...).

[agent]
# Alerts only; nothing on stdout.
output = "none"

[state]
# Fresh for each run: nothing learned before it.
dir = {state}

[detect]
# The scenario's learning time (a day in production).
learning_period = "{learning}s"
# Only the homeserver is judged: the harness's own clients, rsyslogd and the build tools
# are other programs of this machine, not the monitored service.
group_unmatched = false

# The homeserver as deployed: nginx in front (master and workers run /usr/sbin/nginx) and
# Synapse behind it (a Python interpreter; its command line names the module).
[[services]]
name = "{service}"
[[services.match]]
exe = "/usr/sbin/nginx"
[[services.match]]
cmdline = "*synapse.app.homeserver*"

[destinations]
# Only 127.0.0.1 (and ::1) is "this machine": nginx <-> Synapse and the harness's
# administration stay internal. Every other 127.0.0.x is a simulated host on the Internet:
# each test client binds its own source address, so nginx's answers to it are egress to
# an external peer, exactly as for a real client.
internal = ["127.0.0.1/32", "::1/128"]

# Containment of the homeserver's alerted peers in the run's mode, with the shipped actions
# (severity >= high: throttle to 256 KiB/s) and rails.
[containment]
mode = "{containment}"

# The SOC's syslog receiver (a real rsyslogd on loopback), OCSF Detection Findings.
[[sinks]]
name = "{syslog_sink}"
type = "syslog"
protocol = "tcp"
address = {syslog}
format = "ocsf"

# The harness's diagnostics: the agent's own alert events, as JSON lines.
[[sinks]]
name = "{file_sink}"
type = "file"
format = "json"
path = {json}
"#,
        state = quoted(&s.state_dir.display().to_string()),
        learning = s.learning.as_secs().max(1),
        service = SERVICE,
        syslog_sink = SYSLOG_SINK,
        syslog = quoted(s.syslog),
        file_sink = FILE_SINK,
        json = quoted(&s.json_file.display().to_string()),
        containment = s.containment,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_is_toml_with_the_scenarios_keys() {
        let text = render(&Settings {
            state_dir: Path::new("/t/e2e/state \"x\""),
            learning: Duration::from_secs(60),
            syslog: "127.0.0.1:5514",
            json_file: Path::new("alerts.jsonl"),
            containment: "enforce",
        });
        let v: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(v["agent"]["output"].as_str(), Some("none"));
        assert_eq!(v["state"]["dir"].as_str(), Some("/t/e2e/state \"x\""));
        assert_eq!(v["detect"]["learning_period"].as_str(), Some("60s"));
        assert_eq!(v["detect"]["group_unmatched"].as_bool(), Some(false));
        assert_eq!(v["containment"]["mode"].as_str(), Some("enforce"));
        let svc = v["services"].as_array().unwrap();
        assert_eq!(svc.len(), 1);
        assert_eq!(svc[0]["name"].as_str(), Some("messaging"));
        let m = svc[0]["match"].as_array().unwrap();
        assert_eq!(m[0]["exe"].as_str(), Some("/usr/sbin/nginx"));
        assert_eq!(m[1]["cmdline"].as_str(), Some("*synapse.app.homeserver*"));
        let internal: Vec<&str> = v["destinations"]["internal"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(toml::Value::as_str)
            .collect();
        assert_eq!(internal, ["127.0.0.1/32", "::1/128"]);
        let sinks = v["sinks"].as_array().unwrap();
        assert_eq!(sinks.len(), 2);
        assert_eq!(sinks[0]["type"].as_str(), Some("syslog"));
        assert_eq!(sinks[0]["protocol"].as_str(), Some("tcp"));
        assert_eq!(sinks[0]["format"].as_str(), Some("ocsf"));
        assert_eq!(sinks[0]["address"].as_str(), Some("127.0.0.1:5514"));
        assert_eq!(sinks[1]["type"].as_str(), Some("file"));
        assert_eq!(sinks[1]["format"].as_str(), Some("json"));
        assert!(v.get("rules").is_none(), "the default thresholds");
    }
}
