//! `[containment]`: whether and how a flagged peer is throttled or blocked. The default is
//! `dry_run`: every decision is made, stored and exported as "would throttle", and no packet
//! is touched until an operator writes `mode = "enforce"`.

use std::{ops::Range, time::Duration};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::{
    config::{Bytes, HumanDuration},
    detect::rules::{RuleId, Severity},
};

/// Slowest throttle: below it a TCP connection is as good as blocked (say `block` then).
pub const MIN_RATE: u64 = 1024;
/// Most containments one service may have at once (the kernel's table is small).
pub const MAX_PER_SERVICE_LIMIT: u32 = 64;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// No containment is decided; switching to it lifts every active one.
    Off,
    /// Decided, stored and exported ("would throttle"); nothing reaches the kernel.
    #[default]
    DryRun,
    /// Decided and applied by the kernel's egress program.
    Enforce,
}

impl Mode {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::DryRun => "dry_run",
            Self::Enforce => "enforce",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Throttle,
    Block,
}

/// `[[containment.actions]]`: the first entry that matches an alert decides what is done
/// about its peer; an alert no entry matches is only an alert.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionConfig {
    /// Matches alerts of this rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<RuleId>,
    /// Matches alerts of at least this severity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_severity: Option<Severity>,
    pub action: Spanned<ActionKind>,
    /// Throttle only: bytes per second the peer may still receive from the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Spanned<Bytes>>,
}

impl ActionConfig {
    pub fn matches(&self, rule: RuleId, severity: Severity) -> bool {
        self.rule.is_none_or(|r| r == rule) && self.min_severity.is_none_or(|s| severity >= s)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContainmentConfig {
    pub mode: Mode,
    /// Lifts every containment at once and starts none, whatever the mode (a reload applies
    /// it: the way to stop everything without a restart).
    pub kill_switch: bool,
    /// How long a containment lasts unless its alert is still open (each update renews it).
    pub ttl: Spanned<HumanDuration>,
    /// Active containments one service may have; past it, new ones are refused (logged).
    pub max_per_service: Spanned<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ActionConfig>,
}

impl Default for ContainmentConfig {
    fn default() -> Self {
        Self {
            mode: Mode::DryRun,
            kill_switch: false,
            ttl: Spanned::new(0..0, HumanDuration::hours(1)),
            max_per_service: Spanned::new(0..0, 4),
            actions: vec![ActionConfig {
                rule: None,
                min_severity: Some(Severity::High),
                action: Spanned::new(0..0, ActionKind::Throttle),
                rate: Some(Spanned::new(0..0, Bytes(256 << 10))),
            }],
        }
    }
}

impl ContainmentConfig {
    pub fn ttl(&self) -> Duration {
        self.ttl.get_ref().0
    }

    pub fn max_per_service(&self) -> u32 {
        *self.max_per_service.get_ref()
    }

    /// The action for an alert of `rule` at `severity`, if any.
    pub fn action_for(&self, rule: RuleId, severity: Severity) -> Option<&ActionConfig> {
        self.actions.iter().find(|a| a.matches(rule, severity))
    }

    /// Ranges and relations serde cannot check.
    pub fn validate(&self) -> Result<(), (Range<usize>, String, String)> {
        let ttl = self.ttl();
        if ttl < Duration::from_mins(1) || ttl > Duration::from_hours(7 * 24) {
            return Err((
                self.ttl.span(),
                "containment.ttl".into(),
                format!(
                    "{} is out of range (1m to 7d)",
                    humantime::format_duration(ttl)
                ),
            ));
        }
        let max = self.max_per_service();
        if !(1..=MAX_PER_SERVICE_LIMIT).contains(&max) {
            return Err((
                self.max_per_service.span(),
                "containment.max_per_service".into(),
                format!("{max} is out of range (1 to {MAX_PER_SERVICE_LIMIT})"),
            ));
        }
        for (i, a) in self.actions.iter().enumerate() {
            let key = |k: &str| format!("containment.actions[{i}].{k}");
            if a.rule.is_none() && a.min_severity.is_none() {
                return Err((
                    a.action.span(),
                    key("action"),
                    "an action needs `rule` or `min_severity` (which alerts it answers)".into(),
                ));
            }
            match (a.action.get_ref(), &a.rate) {
                (ActionKind::Throttle, None) => {
                    return Err((
                        a.action.span(),
                        key("rate"),
                        "throttle needs a rate in bytes per second (e.g. rate = \"256KiB\")".into(),
                    ));
                }
                (ActionKind::Throttle, Some(rate)) if rate.get_ref().as_u64() < MIN_RATE => {
                    return Err((
                        rate.span(),
                        key("rate"),
                        format!(
                            "{} B/s is below {MIN_RATE} B/s: that is a block (action = \"block\")",
                            rate.get_ref().as_u64()
                        ),
                    ));
                }
                (ActionKind::Block, Some(rate)) => {
                    return Err((
                        rate.span(),
                        key("rate"),
                        "a block has no rate (remove it, or action = \"throttle\")".into(),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}
