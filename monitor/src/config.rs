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
    detect::settings::{
        self, AlertsConfig, DestinationsConfig, DetectConfig, RulesConfig, ServiceConfig,
        StateConfig,
    },
    output::OutputFormat,
};

/// The embedded default configuration, as shipped (comments included).
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub agent: AgentConfig,
    pub state: StateConfig,
    pub detect: DetectConfig,
    pub services: Vec<ServiceConfig>,
    pub destinations: DestinationsConfig,
    pub rules: RulesConfig,
    pub alerts: AlertsConfig,
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
    fn missing_file_is_named() {
        let e = Config::load(Some(Path::new("/nonexistent/egress.toml")))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "reading config /nonexistent/egress.toml");
    }
}
