//! The agent's TOML configuration: an embedded, commented default (`config/default.toml`),
//! `--config PATH` to load a file, and errors that name the file, the line and the key.
//! Later sections (services, destinations, rules, sinks) join this file as they are built.

use std::{
    fmt, fs,
    ops::Range,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;
use toml::Spanned;

use crate::{
    contain::settings::ContainmentConfig,
    detect::settings::{
        self, AlertsConfig, DestinationsConfig, DetectConfig, RulesConfig, ServiceConfig,
        StateConfig,
    },
    export::settings::{self as sink_settings, SinkConfig},
    metrics::settings::MetricsConfig,
    output::OutputFormat,
};

/// The embedded default configuration, as shipped (comments included).
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub agent: AgentConfig,
    pub state: StateConfig,
    pub detect: DetectConfig,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceConfig>,
    pub destinations: DestinationsConfig,
    pub rules: RulesConfig,
    pub alerts: AlertsConfig,
    /// Where alert events go; without `[[sinks]]`, a JSON-lines file in `state.dir`.
    pub sinks: Vec<SinkConfig>,
    /// The Prometheus endpoint (off by default).
    pub metrics: MetricsConfig,
    /// Throttling or blocking flagged peers (dry run by default).
    pub containment: ContainmentConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            agent: AgentConfig::default(),
            state: StateConfig::default(),
            detect: DetectConfig::default(),
            services: Vec::new(),
            destinations: DestinationsConfig::default(),
            rules: RulesConfig::default(),
            alerts: AlertsConfig::default(),
            sinks: crate::export::settings::default_sinks(),
            metrics: MetricsConfig::default(),
            containment: ContainmentConfig::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    pub interval: Spanned<HumanDuration>,
    pub max_flows: Spanned<u32>,
    pub idle_timeout: Spanned<HumanDuration>,
    pub cgroup_mount: PathBuf,
    pub output: OutputFormat,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            interval: unspanned(HumanDuration(Duration::from_secs(1))),
            max_flows: unspanned(monitor_common::DEFAULT_MAX_FLOWS),
            idle_timeout: unspanned(HumanDuration(Duration::from_secs(300))),
            cgroup_mount: PathBuf::from("/sys/fs/cgroup/unified"),
            output: OutputFormat::Text,
        }
    }
}

fn unspanned<T>(v: T) -> Spanned<T> {
    Spanned::new(0..0, v)
}

/// A duration written the human way in the file: "1s", "500ms", "5m", "1h 30m".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    pub const fn hours(hours: u64) -> Self {
        Self(Duration::from_secs(hours * 3600))
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map(Self).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?}: {e} (write e.g. \"1s\", \"500ms\", \"5m\")"
            ))
        })
    }
}

/// A size in bytes, written "64MiB", "1.5GB" or a plain number in the file; printed back
/// exactly (the largest binary unit that divides it, else bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bytes(pub u64);

impl Bytes {
    pub const fn mib(n: u64) -> Self {
        Self(n << 20)
    }

    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        const UNITS: [(u64, &str); 4] = [
            (1 << 40, "TiB"),
            (1 << 30, "GiB"),
            (1 << 20, "MiB"),
            (1 << 10, "KiB"),
        ];
        match UNITS
            .iter()
            .find(|(unit, _)| self.0 != 0 && self.0.is_multiple_of(*unit))
        {
            Some((unit, name)) => s.collect_str(&format_args!("{}{name}", self.0 / unit)),
            None => s.serialize_u64(self.0),
        }
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(Self(n)),
            Raw::Text(text) => text
                .parse::<bytesize::ByteSize>()
                .map(|b| Self(b.as_u64()))
                .map_err(|e| {
                    serde::de::Error::custom(format!(
                        "invalid size {text:?}: {e} (write e.g. \"64MiB\", \"1GB\" or a number of bytes)"
                    ))
                }),
        }
    }
}

/// Where a configuration came from, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Embedded,
    File(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Embedded => f.write_str("<embedded default>"),
            Self::File(p) => write!(f, "{}", p.display()),
        }
    }
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("reading config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {origin}:{line}:{column}: {key}: {message}")]
    Invalid {
        origin: Origin,
        line: usize,
        column: usize,
        /// Dotted path of the offending key (`agent.interval`), or `-` for syntax errors.
        key: String,
        message: String,
    },
}

impl Config {
    /// Loads `path`, or the embedded default when `None`.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        match path {
            None => Self::parse(DEFAULT_TOML, &Origin::Embedded),
            Some(p) => {
                let text = fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_owned(),
                    source,
                })?;
                Self::parse(&text, &Origin::File(p.to_owned()))
            }
        }
    }

    /// Parses and validates a configuration text.
    pub fn parse(text: &str, origin: &Origin) -> Result<Self, ConfigError> {
        let invalid = |span: Option<Range<usize>>, key: String, message: String| {
            let (line, column) = span.map_or((0, 0), |s| line_column(text, s.start));
            ConfigError::Invalid {
                origin: origin.clone(),
                line,
                column,
                key,
                message,
            }
        };
        let de = toml::Deserializer::parse(text)
            .map_err(|e| invalid(e.span(), "-".to_owned(), e.message().trim().to_owned()))?;
        let config: Self = serde_path_to_error::deserialize(de).map_err(|e| {
            // `Spanned` adds a private segment to the path; users only know the key.
            let key = e
                .path()
                .to_string()
                .split('.')
                .filter(|segment| !segment.starts_with("$__"))
                .collect::<Vec<_>>()
                .join(".");
            let inner = e.into_inner();
            invalid(inner.span(), key, inner.message().trim().to_owned())
        })?;
        config
            .validate()
            .map_err(|(span, key, message)| invalid(Some(span), key.to_owned(), message))?;
        settings::validate(
            &config.detect,
            &config.state,
            &config.services,
            &config.destinations,
            &config.rules,
            &config.alerts,
        )
        .map_err(|(span, key, message)| invalid(Some(span), key, message))?;
        sink_settings::validate(&config.sinks)
            .map_err(|(span, key, message)| invalid(Some(span), key, message))?;
        config
            .metrics
            .validate()
            .map_err(|(span, key, message)| invalid(Some(span), key, message))?;
        config
            .containment
            .validate()
            .map_err(|(span, key, message)| invalid(Some(span), key, message))?;
        if config.agent.output != OutputFormat::None
            && let Some(sink) = config
                .sinks
                .iter()
                .find(|s| s.kind == sink_settings::SinkType::Stdout)
        {
            return Err(invalid(
                Some(sink.name.span()),
                "agent.output".to_owned(),
                "a stdout sink needs agent.output = \"none\" (samples and alerts would share \
                 stdout)"
                    .to_owned(),
            ));
        }
        Ok(config)
    }

    /// Checks the values serde cannot: ranges and relations between keys.
    fn validate(&self) -> Result<(), (Range<usize>, &'static str, String)> {
        let a = &self.agent;
        let interval = a.interval.get_ref().0;
        if interval < Duration::from_millis(10) || interval > Duration::from_secs(3600) {
            return Err((
                a.interval.span(),
                "agent.interval",
                format!(
                    "{} is out of range (10ms to 1h)",
                    humantime::format_duration(interval)
                ),
            ));
        }
        let max_flows = *a.max_flows.get_ref();
        if !(1..=16_777_216).contains(&max_flows) {
            return Err((
                a.max_flows.span(),
                "agent.max_flows",
                format!("{max_flows} is out of range (1 to 16777216)"),
            ));
        }
        let idle = a.idle_timeout.get_ref().0;
        if idle < interval {
            return Err((
                a.idle_timeout.span(),
                "agent.idle_timeout",
                format!(
                    "{} is shorter than agent.interval ({}): flows would be evicted between two polls",
                    humantime::format_duration(idle),
                    humantime::format_duration(interval)
                ),
            ));
        }
        Ok(())
    }

    /// The effective configuration as TOML (what `egress-monitor config` prints).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self)
            .unwrap_or_else(|e| format!("# cannot render the configuration: {e}\n"))
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(
            text,
            &Origin::File(PathBuf::from("/etc/egress-monitor/config.toml")),
        )
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn embedded_default_parses_to_the_defaults() {
        let c = Config::load(None).unwrap();
        assert_eq!(c.agent.interval.get_ref().0, Duration::from_secs(1));
        assert_eq!(
            *c.agent.max_flows.get_ref(),
            monitor_common::DEFAULT_MAX_FLOWS
        );
        assert_eq!(c.agent.idle_timeout.get_ref().0, Duration::from_secs(300));
        assert_eq!(c.agent.output, OutputFormat::Text);
        assert_eq!(c, Config::default(), "spans are not part of equality");
    }

    #[test]
    fn values_are_read() {
        let c =
            parse("[agent]\ninterval = \"250ms\"\nmax_flows = 4096\noutput = \"json\"\n").unwrap();
        assert_eq!(c.agent.interval.get_ref().0, Duration::from_millis(250));
        assert_eq!(*c.agent.max_flows.get_ref(), 4096);
        assert_eq!(c.agent.output, OutputFormat::Json);
        assert_eq!(
            c.agent.idle_timeout.get_ref().0,
            Duration::from_secs(300),
            "unset keys keep defaults"
        );
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_keys_name_file_line_and_key() {
        let e = error("[agent]\ninterval = \"1s\"\nintervall = \"2s\"\n");
        assert!(
            e.starts_with("config /etc/egress-monitor/config.toml:3:"),
            "{e}"
        );
        assert!(e.contains("intervall"), "{e}");
        let e = error("[agents]\n");
        assert!(e.contains(":1:") && e.contains("agents"), "{e}");
    }

    #[test]
    fn wrong_types_name_the_key() {
        let e = error("[agent]\n\nmax_flows = \"lots\"\n");
        assert!(e.contains(":3:") && e.contains("agent.max_flows"), "{e}");
        let e = error("[agent]\ninterval = \"soon\"\n");
        assert!(
            e.contains(":2:") && e.contains("agent.interval: invalid duration"),
            "{e}"
        );
        let e = error("[agent]\noutput = \"xml\"\n");
        assert!(e.contains(":2:") && e.contains("agent.output"), "{e}");
    }

    #[test]
    fn impossible_values_name_line_and_key() {
        let e = error("[agent]\nmax_flows = 0\n");
        assert!(
            e.contains(":2:") && e.contains("agent.max_flows: 0 is out of range"),
            "{e}"
        );
        let e = error("[agent]\ninterval = \"2s\"\nidle_timeout = \"1s\"\n");
        assert!(
            e.contains(":3:") && e.contains("agent.idle_timeout") && e.contains("shorter"),
            "{e}"
        );
        let e = error("[agent]\ninterval = \"2h\"\n");
        assert!(e.contains("agent.interval: 2h is out of range"), "{e}");
    }

    #[test]
    fn syntax_errors_give_the_line() {
        let e = error("[agent]\ninterval = \n");
        assert!(e.contains(":2:"), "{e}");
    }

    #[test]
    fn effective_config_round_trips() {
        let c = parse("[agent]\ninterval = \"5s\"\nmax_flows = 1000\n").unwrap();
        let text = c.to_toml();
        assert!(text.contains("interval = \"5s\""), "{text}");
        assert_eq!(parse(&text).unwrap(), c);
    }

    #[test]
    fn the_default_round_trips_through_the_printed_form() {
        let c = Config::load(None).unwrap();
        let text = c.to_toml();
        assert!(text.contains("1m = \"32MiB\""), "{text}");
        assert!(text.contains("learning_period = \"1day\""), "{text}");
        assert_eq!(parse(&text).unwrap(), c);
        assert_eq!(c.rules.unknown_volume.one_minute.as_u64(), 32 << 20);
    }

    #[test]
    fn detection_sections_are_read() {
        let c = parse(
            r#"
            [detect]
            learning_period = "2h"
            [[services]]
            name = "messaging"
            [[services.match]]
            unit = "nginx.service"
            [[services.match]]
            cmdline = "*synapse*"
            uid = 998
            [[destinations.allow]]
            cidr = "203.0.113.0/24"
            ports = [443]
            [[destinations.allow]]
            host = "*.example.org"
            [rules.peer_outlier]
            floor = "1GB"
            factor = 3
            [rules.slow_drip]
            threshold = 1000
            "#,
        )
        .unwrap();
        assert_eq!(
            c.detect.learning_period.get_ref().0,
            Duration::from_secs(7200)
        );
        assert_eq!(c.services[0].name.get_ref(), "messaging");
        assert_eq!(c.services[0].matchers[1].get_ref().uid, Some(998));
        assert_eq!(c.destinations.allow.len(), 2);
        assert_eq!(
            c.rules.peer_outlier.floor.get_ref().one_minute.as_u64(),
            1_000_000_000,
            "one size is the one-minute floor, as before the other windows"
        );
        assert!((c.rules.peer_outlier.factor.get_ref() - 3.0).abs() < f64::EPSILON);
        assert_eq!(c.rules.slow_drip.threshold.as_u64(), 1000);
        assert_eq!(parse(&c.to_toml()).unwrap(), c, "round trip with services");
    }

    #[test]
    fn sinks_default_and_errors() {
        let c = parse("").unwrap();
        assert_eq!(c.sinks.len(), 1, "the default alert file");
        let c = parse("sinks = []\n").unwrap();
        assert!(c.sinks.is_empty(), "all sinks off");
        let c = parse("[[sinks]]\nname = \"soc\"\ntype = \"file\"\npath = \"/var/log/a.ocsf\"\nformat = \"ocsf\"\nmax_size = \"10MiB\"\nkeep = 3\nfsync = \"never\"\n").unwrap();
        assert_eq!(c.sinks[0].format, crate::export::Format::Ocsf);
        assert_eq!(*c.sinks[0].keep.get_ref(), 3);
        assert_eq!(parse(&c.to_toml()).unwrap(), c);
        let e = error("[[sinks]]\nname = \"a\"\ntype = \"file\"\n");
        assert!(
            e.contains(":2:") && e.contains("sinks[0].path: a file sink needs a path"),
            "{e}"
        );
        let e = error("[[sinks]]\nname = \"a\"\ntype = \"carrier-pigeon\"\n");
        assert!(e.contains(":3:") && e.contains("sinks[0].type"), "{e}");
        let e = error(
            "[[sinks]]\nname = \"a\"\ntype = \"file\"\npath = \"x\"\n[[sinks]]\nname = \"a\"\ntype = \"file\"\npath = \"y\"\n",
        );
        assert!(e.contains(":6:") && e.contains("defined twice"), "{e}");
        let c = parse("[[sinks]]\nname = \"soc\"\ntype = \"syslog\"\naddress = \"127.0.0.1:6514\"\nprotocol = \"udp\"\nfacility = 4\nformat = \"cef\"\n").unwrap();
        assert_eq!(*c.sinks[0].facility.get_ref(), 4);
        assert_eq!(parse(&c.to_toml()).unwrap(), c);
        let e = error("[[sinks]]\nname = \"s\"\ntype = \"syslog\"\naddress = \"localhost\"\n");
        assert!(e.contains(":4:") && e.contains("is not host:port"), "{e}");
        let e = error("[[sinks]]\nname = \"s\"\ntype = \"syslog\"\n");
        assert!(
            e.contains("sinks[0].address: a syslog sink needs an address"),
            "{e}"
        );
        let e = error(
            "[[sinks]]\nname = \"s\"\ntype = \"syslog\"\naddress = \"h:514\"\nfacility = 24\n",
        );
        assert!(
            e.contains(":5:") && e.contains("facilities are 0 to 23"),
            "{e}"
        );
        let e = error("[[sinks]]\nname = \"a\"\ntype = \"file\"\npath = \"x\"\nmax_size = 10\n");
        assert!(e.contains(":5:") && e.contains("sinks[0].max_size"), "{e}");
    }

    #[test]
    fn delivery_stdout_and_metrics_settings() {
        let c = parse("[[sinks]]\nname = \"f\"\ntype = \"file\"\npath = \"x\"\nbatch_max = 50\nretry_initial = \"2s\"\nretry_max = \"10m\"\nmax_backlog = 5000\n").unwrap();
        assert_eq!(*c.sinks[0].batch_max.get_ref(), 50);
        assert_eq!(c.sinks[0].retry_max.get_ref().0, Duration::from_secs(600));
        assert_eq!(parse(&c.to_toml()).unwrap(), c);
        for (bad, line, says) in [
            ("batch_max = 0", ":5:", "sinks[0].batch_max: 1 to 10000"),
            (
                "retry_initial = \"10ms\"",
                ":5:",
                "sinks[0].retry_initial: at least 100ms",
            ),
            (
                "retry_max = \"0s\"",
                ":5:",
                "sinks[0].retry_max: must not be shorter",
            ),
            (
                "max_backlog = 10",
                ":5:",
                "sinks[0].max_backlog: must hold at least one batch",
            ),
            (
                "client_cert = \"c.pem\"",
                ":5:",
                "client_cert and client_key go together",
            ),
            (
                "ocsf_network_activity = true",
                ":2:",
                "ocsf_network_activity: needs format = \"ocsf\"",
            ),
        ] {
            let e = error(&format!(
                "[[sinks]]\nname = \"f\"\ntype = \"file\"\npath = \"x\"\n{bad}\n"
            ));
            assert!(e.contains(line) && e.contains(says), "{bad}: {e}");
        }
        let stdout = "[[sinks]]\nname = \"out\"\ntype = \"stdout\"\nformat = \"ecs\"\n";
        let e = error(stdout);
        assert!(
            e.contains(":2:") && e.contains("agent.output = \"none\""),
            "{e}"
        );
        let c = parse(&format!("[agent]\noutput = \"none\"\n{stdout}")).unwrap();
        assert_eq!(c.sinks[0].kind, sink_settings::SinkType::Stdout);

        assert_eq!(parse("").unwrap().metrics.address(), None, "off by default");
        let c = parse("[metrics]\nlisten = \"127.0.0.1:9464\"\n").unwrap();
        assert_eq!(c.metrics.address(), Some("127.0.0.1:9464".parse().unwrap()));
        let e = error("[metrics]\nlisten = \"localhost:9464\"\n");
        assert!(
            e.contains(":2:") && e.contains("metrics.listen") && e.contains("not ip:port"),
            "{e}"
        );
    }

    /// (file, line, what the error must say).
    const BAD_DETECTION_CONFIGS: &[(&str, &str, &str)] = &[
        (
            "[rules.peer_outlier]\nquantile = 1.5\n",
            ":2:",
            "rules.peer_outlier.quantile: 1.5 is not a quantile",
        ),
        (
            "[rules.peer_outlier]\n\nfactor = 0.5\n",
            ":3:",
            "rules.peer_outlier.factor",
        ),
        (
            "[rules.peer_outlier]\nfactor = 2.0\nnewcomer_factor = 2.5\n",
            ":3:",
            "rules.peer_outlier.newcomer_factor: 2.5 is above rules.peer_outlier.factor (2)",
        ),
        (
            "[rules.peer_outlier]\nnewcomer_factor = 0.5\n",
            ":2:",
            "rules.peer_outlier.newcomer_factor: 0.5 must be a number from 1 to 1000",
        ),
        (
            "[rules.slow_drip]\nthreshold = \"lots\"\n",
            ":2:",
            "rules.slow_drip.threshold: invalid size",
        ),
        (
            "[rules.unknown_volume]\n2m = \"1MiB\"\n",
            ":2:",
            "unknown field `2m`",
        ),
        (
            "[destinations]\ninternal = [\"10.0.0.0/33\"]\n",
            ":2:",
            "destinations.internal[0]: \"10.0.0.0/33\" is not an address",
        ),
        (
            "[[destinations.allow]]\ncidr = \"1.2.3.4\"\nhost = \"a.org\"\n",
            ":2:",
            "either cidr or host",
        ),
        (
            "[[destinations.allow]]\nports = [443]\n",
            ":1:",
            "needs cidr or host",
        ),
        (
            "[[destinations.allow]]\nhost = \"bad host\"\n",
            ":2:",
            "destinations.allow[0].host",
        ),
        (
            "[[services]]\nname = \"x\"\n[[services.match]]\nexe = \"/usr/[bin\"\n",
            ":3:",
            "services[0].match[0].exe: invalid glob",
        ),
        (
            "[[services]]\nname = \"x\"\n[[services.match]]\n",
            ":3:",
            "empty matcher",
        ),
        (
            "[[services]]\nname = \"x\"\n",
            ":1:",
            "services[0]: missing field `match`",
        ),
        (
            "[[services]]\nname = \"x\"\n[[services.match]]\ncomm = \"a\"\n[[services]]\nname = \"x\"\n[[services.match]]\ncomm = \"b\"\n",
            ":6:",
            "defined twice",
        ),
        (
            "[[services]]\nname = \"x\"\n[[services.match]]\nuid = -1\n",
            ":4:",
            "services[0].match[0].uid",
        ),
        (
            "[rules.new_destinations]\nwindow = \"24h\"\n",
            ":2:",
            "rules.new_destinations.window",
        ),
        (
            "[rules.peer_outlier]\nwindow = \"5m\"\n",
            ":2:",
            "rules.peer_outlier.window",
        ),
        (
            "[alerts]\nresolve_after = \"10s\"\n",
            ":2:",
            "alerts.resolve_after",
        ),
        (
            "[alerts]\nmax_new_per_minute = 0\n",
            ":2:",
            "alerts.max_new_per_minute",
        ),
        (
            "[detect]\nlearning_period = \"100days\"\n",
            ":2:",
            "detect.learning_period",
        ),
        (
            "[rules.slow_drip]\nseverity = \"urgent\"\n",
            ":2:",
            "rules.slow_drip.severity",
        ),
    ];

    #[test]
    fn detection_errors_name_line_and_key() {
        for (text, line, needle) in BAD_DETECTION_CONFIGS {
            let e = error(text);
            assert!(
                e.starts_with("config /etc/egress-monitor/config.toml")
                    && e.contains(line)
                    && e.contains(needle),
                "{text:?} gave: {e}"
            );
        }
    }

    #[test]
    fn missing_file_is_named() {
        let e = Config::load(Some(Path::new("/nonexistent/egress.toml")))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "reading config /nonexistent/egress.toml");
    }
}
