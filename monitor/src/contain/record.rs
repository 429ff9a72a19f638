//! A containment as stored and exported: what is done to which peer of which service, why,
//! who decided it, and until when; and the events of its life (started, renewed, lifted,
//! expired, refused), which go to every sink like alert events.

use std::net::IpAddr;

use ipnet::IpNet;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::detect::rules::RuleId;

/// Namespace of containment ids (UUID v5).
const CONTAINMENT_NAMESPACE: Uuid = Uuid::from_u128(0x6567_7265_7373_2d6d_6f6e_6974_6f72_0003);

/// What is done to the peer's traffic from the service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Action {
    /// At most this many bytes per second to the peer (token bucket in the kernel).
    Throttle { bytes_per_sec: u64 },
    /// Nothing to the peer, and its new connections to the service refused.
    Block,
}

impl Action {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Throttle { .. } => "throttle",
            Self::Block => "block",
        }
    }

    /// `throttle 256 KiB/s`, `block`.
    pub fn describe(self) -> String {
        match self {
            Self::Throttle { bytes_per_sec } => format!(
                "throttle {}/s",
                bytesize::ByteSize::b(bytes_per_sec).display().iec()
            ),
            Self::Block => "block".to_owned(),
        }
    }
}

/// Whether the kernel applies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Enforcement {
    /// Decided and recorded only ("would throttle"): `containment.mode = "dry_run"`, or a
    /// kernel that refused the enforcing program.
    DryRun,
    /// Applied by the kernel's egress (and, for a block, ingress) program.
    Enforced,
}

impl Enforcement {
    pub const fn name(self) -> &'static str {
        match self {
            Self::DryRun => "dry_run",
            Self::Enforced => "enforced",
        }
    }
}

/// Who or what decided a step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Decider {
    /// The agent's policy (`[[containment.actions]]`), answering an alert.
    Policy,
    /// An operator, through `egress-monitor contain` (the login name, or the uid).
    Operator { user: String },
}

impl Decider {
    pub fn name(&self) -> String {
        match self {
            Self::Policy => "policy".to_owned(),
            Self::Operator { user } => format!("operator {user}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainmentState {
    Active,
    /// Lifted before its TTL: alert resolved, learned or suppressed, `contain lift`, mode off,
    /// kill switch.
    Lifted,
    /// Its TTL ran out without its alert renewing it.
    Expired,
}

impl ContainmentState {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Lifted => "lifted",
            Self::Expired => "expired",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Containment {
    pub id: Uuid,
    pub service: String,
    /// The peer (`/32`, `/128`) or the prefix group's network.
    pub target: IpNet,
    pub action: Action,
    pub enforcement: Enforcement,
    pub state: ContainmentState,
    /// The alert it answers (none for one an operator started by hand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<RuleId>,
    pub reason: String,
    pub decided_by: Decider,
    pub started_at: Timestamp,
    /// The latest renewal (the start until renewed).
    pub renewed_at: Timestamp,
    pub expires_at: Timestamp,
    pub renewals: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<Decider>,
    /// What the kernel held back so far (enforced only; 0 in dry run).
    #[serde(default)]
    pub dropped_bytes: u64,
    #[serde(default)]
    pub dropped_packets: u64,
}

/// What starts a containment; the rest of a new one follows from it.
pub struct Start {
    pub service: String,
    pub target: IpNet,
    pub action: Action,
    pub enforcement: Enforcement,
    pub alert: Option<(Uuid, RuleId)>,
    pub reason: String,
    pub decided_by: Decider,
    pub at: Timestamp,
    pub expires_at: Timestamp,
}

impl Containment {
    /// A new active containment.
    pub fn start(s: Start) -> Self {
        Self {
            id: Self::id_for(&s.service, &s.target, s.at),
            service: s.service,
            target: s.target,
            action: s.action,
            enforcement: s.enforcement,
            state: ContainmentState::Active,
            alert_id: s.alert.map(|(id, _)| id),
            rule: s.alert.map(|(_, rule)| rule),
            reason: s.reason,
            decided_by: s.decided_by,
            started_at: s.at,
            renewed_at: s.at,
            expires_at: s.expires_at,
            renewals: 0,
            ended_at: None,
            end_reason: None,
            ended_by: None,
            dropped_bytes: 0,
            dropped_packets: 0,
        }
    }

    /// A stable id per (service, target, start): a replayed decision gets the same id.
    pub fn id_for(service: &str, target: &IpNet, started_at: Timestamp) -> Uuid {
        Uuid::new_v5(
            &CONTAINMENT_NAMESPACE,
            format!("{service}|{target}|{}", started_at.as_millisecond()).as_bytes(),
        )
    }

    pub fn is_active(&self) -> bool {
        self.state == ContainmentState::Active
    }

    /// Whether `addr` is in the target.
    pub fn covers(&self, addr: IpAddr) -> bool {
        self.target.contains(&addr)
    }

    /// `would throttle 256 KiB/s` in dry run, `throttle 256 KiB/s` when enforced.
    pub fn verb(&self) -> String {
        match self.enforcement {
            Enforcement::DryRun => format!("would {}", self.action.describe()),
            Enforcement::Enforced => self.action.describe(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainmentEventKind {
    Started,
    Renewed,
    Lifted,
    Expired,
    /// An operator's request the safety rails refused (the reason says which); the policy's
    /// own refusals are logged and counted, not exported (an attacker could make them many).
    Refused,
}

impl ContainmentEventKind {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Renewed => "renewed",
            Self::Lifted => "lifted",
            Self::Expired => "expired",
            Self::Refused => "refused",
        }
    }
}

/// One step of a containment's life, with the containment as it is after the step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainmentEvent {
    pub event: ContainmentEventKind,
    pub at: Timestamp,
    pub containment: Containment,
}
