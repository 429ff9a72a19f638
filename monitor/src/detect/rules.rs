//! The rules: stable ids, severities and their MITRE ATT&CK mapping. The evaluation itself is
//! in the detector, where the windows are; this file is the catalogue SIEMs see.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A rule. The serialized name (`unknown_volume`, ...) is the rule's stable id: it is in the
/// config (`[rules.unknown_volume]`), the database and every exported alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleId {
    /// 1: volume to one unknown destination over 1 min / 10 min / 1 h.
    UnknownVolume,
    /// 2: one peer far above the service's distribution of per-peer volumes.
    PeerOutlier,
    /// 3: the service's total far above its own baseline for that hour of day.
    ServiceBaseline,
    /// 4: many never-seen destinations in one window.
    NewDestinations,
    /// 5: cumulative volume over 24 h to one destination the service connected to, never
    /// learned.
    SlowDrip,
    /// 6: one network prefix (several clients of one provider) far above the service's
    /// prefix groups.
    PrefixOutlier,
    /// 7: a heavy peer or prefix (NAT gateway, federation server) far above its own curve.
    PeerRise,
    /// 8: the service's volume to clients first seen in the last 24 h far above its own curve.
    NewClientVolume,
}

/// MITRE ATT&CK tactic and technique of a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Attack {
    pub tactic_id: &'static str,
    pub tactic: &'static str,
    pub technique_id: &'static str,
    pub technique: &'static str,
}

const EXFILTRATION: (&str, &str) = ("TA0010", "Exfiltration");

const fn exfiltration(technique_id: &'static str, technique: &'static str) -> Attack {
    Attack {
        tactic_id: EXFILTRATION.0,
        tactic: EXFILTRATION.1,
        technique_id,
        technique,
    }
}

impl RuleId {
    pub const ALL: [Self; 8] = [
        Self::UnknownVolume,
        Self::PeerOutlier,
        Self::ServiceBaseline,
        Self::NewDestinations,
        Self::SlowDrip,
        Self::PrefixOutlier,
        Self::PeerRise,
        Self::NewClientVolume,
    ];

    pub const fn id(self) -> &'static str {
        match self {
            Self::UnknownVolume => "unknown_volume",
            Self::PeerOutlier => "peer_outlier",
            Self::ServiceBaseline => "service_baseline",
            Self::NewDestinations => "new_destinations",
            Self::SlowDrip => "slow_drip",
            Self::PrefixOutlier => "prefix_outlier",
            Self::PeerRise => "peer_rise",
            Self::NewClientVolume => "new_client_volume",
        }
    }

    /// The rule's number in the documentation (1 to 8).
    pub const fn number(self) -> u8 {
        match self {
            Self::UnknownVolume => 1,
            Self::PeerOutlier => 2,
            Self::ServiceBaseline => 3,
            Self::NewDestinations => 4,
            Self::SlowDrip => 5,
            Self::PrefixOutlier => 6,
            Self::PeerRise => 7,
            Self::NewClientVolume => 8,
        }
    }

    pub const fn title(self) -> &'static str {
        match self {
            Self::UnknownVolume => "High volume to an unknown destination",
            Self::PeerOutlier => "One peer receives far more than the service's other peers",
            Self::ServiceBaseline => "Service egress far above its baseline for this time of day",
            Self::NewDestinations => "Burst of never-seen destinations",
            Self::SlowDrip => {
                "Slow drip: cumulative volume to one unknown destination over 24 hours"
            }
            Self::PrefixOutlier => {
                "One network prefix receives far more than the service's other prefixes"
            }
            Self::PeerRise => {
                "A known heavy peer receives far more than its own usual for this time of day"
            }
            Self::NewClientVolume => {
                "Service egress to new clients far above its usual for this hour"
            }
        }
    }

    /// Why each technique: unknown destination = a channel the service does not normally
    /// use (T1048); a peer pulling bulk data through the service's own web API (T1567); the
    /// whole service sending far more than usual, typically scripted (T1020); fanning out to
    /// many new hosts (T1048 again: new channels); staying under thresholds with small
    /// pieces (T1030). Rules 6 to 8 find the same pull through the service's own web API as
    /// rule 2, spread over a provider's addresses, hidden behind a known NAT gateway, or
    /// rotated over new client addresses: T1567 like rule 2.
    pub const fn attack(self) -> Attack {
        match self {
            Self::UnknownVolume | Self::NewDestinations => {
                exfiltration("T1048", "Exfiltration Over Alternative Protocol")
            }
            Self::PeerOutlier | Self::PrefixOutlier | Self::PeerRise | Self::NewClientVolume => {
                exfiltration("T1567", "Exfiltration Over Web Service")
            }
            Self::ServiceBaseline => exfiltration("T1020", "Automated Exfiltration"),
            Self::SlowDrip => exfiltration("T1030", "Data Transfer Size Limits"),
        }
    }

    /// Whether alerts of this rule are about one peer (else about the whole service).
    pub const fn per_peer(self) -> bool {
        !matches!(
            self,
            Self::ServiceBaseline | Self::NewDestinations | Self::NewClientVolume
        )
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_serialized_names_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for (i, rule) in RuleId::ALL.into_iter().enumerate() {
            assert_eq!(serde_json::to_value(rule).unwrap(), rule.id());
            assert_eq!(usize::from(rule.number()), i + 1);
            assert!(seen.insert(rule.id()));
            assert_eq!(rule.attack().tactic_id, "TA0010");
            assert!(rule.attack().technique_id.starts_with('T'));
        }
    }
}
