//! The detection part of the TOML configuration: services, destinations, rules and alerts.
//! Parsed by serde (unknown keys refused), then checked by [`validate`] for what serde cannot
//! see (ranges, globs, CIDRs); every error names the key and, through `Spanned`, the line.

use std::{ops::Range, path::PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

pub use super::rule_settings::RulesConfig;
use crate::config::HumanDuration;

/// `[detect]`: learning.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectConfig {
    /// How long a service is observed, without alerts, before rules arm. Destinations seen
    /// during that time become `learned` for that service; baselines start from it.
    pub learning_period: Spanned<HumanDuration>,
    /// Processes that match no `[[services]]` entry form one service per identity
    /// (container, unit, executable). When false they are not analysed at all.
    pub group_unmatched: bool,
    /// Whether a service first seen after the host's own learning period (which starts with
    /// the first sample the agent ever saw) gets a learning period too. Off by default: a
    /// process that appears later, an attacker's tool for one, is judged at once (every
    /// destination `unknown`). Configured `[[services]]` always learn.
    pub learn_new_services: bool,
    /// Prefix lengths of the groups that sum clients by network (rule `prefix_outlier`, and
    /// heavy prefixes against their own curve): IPv4 and IPv6, at most two each, longest
    /// first. Empty: no groups of that family.
    pub ipv4_prefixes: Vec<Spanned<u8>>,
    pub ipv6_prefixes: Vec<Spanned<u8>>,
    /// After learning, a peer teaches its population nothing while one of its windows is above
    /// this fraction of its bar (the lower watermark: an attacker staying just under the bar
    /// for days does not raise it).
    pub learn_below: Spanned<f64>,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            learning_period: unspanned(HumanDuration::hours(24)),
            group_unmatched: true,
            learn_new_services: false,
            ipv4_prefixes: vec![unspanned(24)],
            ipv6_prefixes: vec![unspanned(64), unspanned(48)],
            learn_below: unspanned(0.5),
        }
    }
}

impl DetectConfig {
    /// The prefix lengths in force, longest first.
    pub fn prefixes(&self) -> (Vec<u8>, Vec<u8>) {
        let sorted = |list: &[Spanned<u8>]| {
            let mut v: Vec<u8> = list.iter().map(|s| *s.get_ref()).collect();
            v.sort_unstable_by(|a, b| b.cmp(a));
            v
        };
        (sorted(&self.ipv4_prefixes), sorted(&self.ipv6_prefixes))
    }
}

/// `[state]`: where the database lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// Directory of `state.db` (learned destinations, baselines, alerts).
    pub dir: PathBuf,
    /// How often the detector's windows are saved while running (also saved on stop).
    pub checkpoint_every: Spanned<HumanDuration>,
    /// Resolved alerts (with their history) older than this are deleted from the database.
    pub keep_resolved: Spanned<HumanDuration>,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/var/lib/egress-monitor"),
            checkpoint_every: unspanned(HumanDuration::secs(60)),
            keep_resolved: unspanned(HumanDuration::hours(90 * 24)),
        }
    }
}

/// One `[[services]]` entry: processes matching any of `match` form the service `name`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub name: Spanned<String>,
    #[serde(rename = "match")]
    pub matchers: Vec<Spanned<MatcherConfig>>,
}

/// All keys given must match (AND). Strings are globs (`*`, `?`, `[...]`) except `uid`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatcherConfig {
    /// systemd unit, e.g. `nginx.service`, `matrix-synapse.service`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// cgroup v2 path, e.g. `/system.slice/docker-*.scope`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// Executable path, e.g. `/usr/sbin/nginx`, `/opt/venvs/*/bin/python3*`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// Kernel command name (15 bytes at most), e.g. `nginx`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    /// The command line joined with spaces, e.g. `*synapse.app.homeserver*`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// User name, e.g. `www-data`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Container id (full or a glob such as `3f2a*`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
}

impl MatcherConfig {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// `[destinations]`: how peers are classed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DestinationsConfig {
    /// Networks of class `internal` (never alerted on). Replaces the default list.
    pub internal: Vec<Spanned<String>>,
    /// How often allowlisted host names are resolved again.
    pub resolve_every: Spanned<HumanDuration>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<Spanned<AllowConfig>>,
}

impl Default for DestinationsConfig {
    fn default() -> Self {
        Self {
            internal: [
                "127.0.0.0/8",
                "::1/128",
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "169.254.0.0/16",
                "fe80::/10",
                "fc00::/7",
            ]
            .into_iter()
            .map(|s| unspanned(s.to_owned()))
            .collect(),
            resolve_every: unspanned(HumanDuration::secs(300)),
            allow: Vec::new(),
        }
    }
}

/// One `[[destinations.allow]]` entry: exactly one of `cidr` and `host`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AllowConfig {
    /// An address or network, `203.0.113.7` or `2001:db8::/32`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr: Option<Spanned<String>>,
    /// A host name (resolved periodically and matched against the names the host resolved,
    /// see passive DNS) or a suffix pattern `*.example.org`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<Spanned<String>>,
    /// Only these remote ports (any when empty).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// Only for these services (all when empty).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
}

/// `[alerts]`: lifecycle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// An open alert whose condition has not held for this long is resolved.
    pub resolve_after: Spanned<HumanDuration>,
    /// An open alert is re-emitted (updated) at most this often while its totals grow.
    pub update_every: Spanned<HumanDuration>,
    /// New alerts per minute beyond which further ones are counted and logged, not raised.
    pub max_new_per_minute: Spanned<u32>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            resolve_after: unspanned(HumanDuration::secs(900)),
            update_every: unspanned(HumanDuration::secs(60)),
            max_new_per_minute: unspanned(30),
        }
    }
}

pub(super) fn unspanned<T>(v: T) -> Spanned<T> {
    Spanned::new(0..0, v)
}

/// A validation failure: where, which key, what.
pub type Invalid = (Range<usize>, String, String);

pub(super) fn invalid(
    span: Range<usize>,
    key: impl Into<String>,
    message: impl Into<String>,
) -> Invalid {
    (span, key.into(), message.into())
}

/// Checks what serde cannot: globs compile, CIDRs parse, ranges hold.
pub fn validate(
    detect: &DetectConfig,
    state: &StateConfig,
    services: &[ServiceConfig],
    destinations: &DestinationsConfig,
    rules: &RulesConfig,
    alerts: &AlertsConfig,
) -> Result<(), Invalid> {
    let learning = detect.learning_period.get_ref().0;
    if learning.as_secs() > 90 * 86_400 {
        return Err(invalid(
            detect.learning_period.span(),
            "detect.learning_period",
            "longer than 90 days",
        ));
    }
    for (list, family, range, key) in [
        (
            &detect.ipv4_prefixes,
            "IPv4",
            8..=31u8,
            "detect.ipv4_prefixes",
        ),
        (
            &detect.ipv6_prefixes,
            "IPv6",
            16..=127u8,
            "detect.ipv6_prefixes",
        ),
    ] {
        if list.len() > 2 {
            return Err(invalid(
                list[2].span(),
                key,
                "at most two prefix lengths per family (each one is a group per client to keep)",
            ));
        }
        for (i, len) in list.iter().enumerate() {
            if !range.contains(len.get_ref()) {
                return Err(invalid(
                    len.span(),
                    format!("{key}[{i}]"),
                    format!(
                        "/{} is not a useful {family} group ({} to {})",
                        len.get_ref(),
                        range.start(),
                        range.end()
                    ),
                ));
            }
            if list[..i].iter().any(|o| o.get_ref() == len.get_ref()) {
                return Err(invalid(
                    len.span(),
                    format!("{key}[{i}]"),
                    format!("/{} is listed twice", len.get_ref()),
                ));
            }
        }
    }
    let below = *detect.learn_below.get_ref();
    if !(below > 0.0 && below <= 1.0) {
        return Err(invalid(
            detect.learn_below.span(),
            "detect.learn_below",
            format!("{below} must be a fraction of the bar, above 0 and at most 1"),
        ));
    }
    if state.checkpoint_every.get_ref().0.as_secs() == 0 {
        return Err(invalid(
            state.checkpoint_every.span(),
            "state.checkpoint_every",
            "must be at least 1s",
        ));
    }
    if state.keep_resolved.get_ref().0.as_secs() < 3600 {
        return Err(invalid(
            state.keep_resolved.span(),
            "state.keep_resolved",
            "must be at least 1h",
        ));
    }
    validate_services(services)?;
    validate_destinations(destinations)?;
    super::rule_settings::validate_rules(rules)?;
    validate_alerts(alerts)
}

fn validate_services(services: &[ServiceConfig]) -> Result<(), Invalid> {
    for (i, service) in services.iter().enumerate() {
        let key = format!("services[{i}]");
        if service.name.get_ref().trim().is_empty() {
            return Err(invalid(service.name.span(), format!("{key}.name"), "empty"));
        }
        if let Some(dup) = services[..i]
            .iter()
            .find(|s| s.name.get_ref() == service.name.get_ref())
        {
            return Err(invalid(
                service.name.span(),
                format!("{key}.name"),
                format!(
                    "service {:?} is defined twice (merge the match lists)",
                    dup.name.get_ref()
                ),
            ));
        }
        if service.matchers.is_empty() {
            return Err(invalid(
                service.name.span(),
                format!("{key}.match"),
                "a service needs at least one [[services.match]]",
            ));
        }
        for (j, m) in service.matchers.iter().enumerate() {
            let mkey = format!("{key}.match[{j}]");
            if m.get_ref().is_empty() {
                return Err(invalid(
                    m.span(),
                    mkey,
                    "an empty matcher would match every process",
                ));
            }
            if let Err((field, e)) = super::services::compile_matcher(m.get_ref()) {
                return Err(invalid(m.span(), format!("{mkey}.{field}"), e));
            }
        }
    }
    Ok(())
}

fn validate_destinations(destinations: &DestinationsConfig) -> Result<(), Invalid> {
    for (i, net) in destinations.internal.iter().enumerate() {
        if let Err(e) = super::classes::parse_net(net.get_ref()) {
            return Err(invalid(
                net.span(),
                format!("destinations.internal[{i}]"),
                e,
            ));
        }
    }
    if destinations.resolve_every.get_ref().0.as_secs() < 1 {
        return Err(invalid(
            destinations.resolve_every.span(),
            "destinations.resolve_every",
            "must be at least 1s",
        ));
    }
    for (i, entry) in destinations.allow.iter().enumerate() {
        let key = format!("destinations.allow[{i}]");
        let allow = entry.get_ref();
        match (&allow.cidr, &allow.host) {
            (Some(cidr), None) => {
                if let Err(e) = super::classes::parse_net(cidr.get_ref()) {
                    return Err(invalid(cidr.span(), format!("{key}.cidr"), e));
                }
            }
            (None, Some(host)) => {
                if let Err(e) = super::classes::check_host_pattern(host.get_ref()) {
                    return Err(invalid(host.span(), format!("{key}.host"), e));
                }
            }
            (Some(cidr), Some(_)) => {
                return Err(invalid(
                    cidr.span(),
                    key,
                    "give either cidr or host, not both (use two entries)",
                ));
            }
            (None, None) => {
                return Err(invalid(entry.span(), key, "needs cidr or host"));
            }
        }
    }
    Ok(())
}

fn validate_alerts(a: &AlertsConfig) -> Result<(), Invalid> {
    if a.resolve_after.get_ref().0.as_secs() < 60 {
        return Err(invalid(
            a.resolve_after.span(),
            "alerts.resolve_after",
            "must be at least 1m (shorter would resolve alerts between two windows)",
        ));
    }
    if a.update_every.get_ref().0.as_secs() < 1 {
        return Err(invalid(
            a.update_every.span(),
            "alerts.update_every",
            "must be at least 1s",
        ));
    }
    if *a.max_new_per_minute.get_ref() == 0 {
        return Err(invalid(
            a.max_new_per_minute.span(),
            "alerts.max_new_per_minute",
            "0 would silence every alert (disable rules instead)",
        ));
    }
    Ok(())
}
