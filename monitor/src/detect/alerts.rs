//! Alerts and their lifecycle: open -> updated (growing totals, at most every
//! `update_every`) -> resolved (condition quiet for `resolve_after`). Deduplicated per
//! (rule, service, peer); new alerts rate-limited (deferred, not dropped: a condition that
//! still holds opens its alert in the next minute); operators acknowledge (no more updates)
//! or suppress (no alerts for the key until a time).

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    classes::DestinationClass,
    rules::{RuleId, Severity},
    window::WindowLen,
};
use crate::flow::Owner;

/// Namespace of alert ids (UUID v5): ids are derived from what the alert is, so a replay
/// gives the same ids every time.
const ALERT_NAMESPACE: Uuid = Uuid::from_u128(0x6567_7265_7373_2d6d_6f6e_6974_6f72_0001);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Open,
    Resolved,
}

impl AlertStatus {
    /// The name in JSON and in the database (`open`, `resolved`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Resolved => "resolved",
        }
    }
}

/// The peer an alert is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub addr: IpAddr,
    /// Remote port of the latest flow to the peer.
    pub port: u16,
    /// Name the host resolved for the address (passive DNS), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub class: DestinationClass,
    /// Set when the alert is about a prefix group: `addr` is then the network's first address
    /// and this its length (`/24`, `/64`, `/48`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_len: Option<u8>,
    /// Prefix groups: the addresses of the prefix seen since the group was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<u32>,
}

impl Peer {
    /// `198.51.100.7`, or `198.51.100.0/24` for a prefix group.
    pub fn addr_text(&self) -> String {
        match self.prefix_len {
            Some(len) => format!("{}/{len}", self.addr),
            None => self.addr.to_string(),
        }
    }
}

/// What a rule judged the volume against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reference {
    /// A threshold of the configuration (rules 1, 4, 5; and a population's floor).
    Configured,
    /// The population of the service's clients (per-client volumes for the window).
    Clients,
    /// The same population, for a newcomer (a client first seen in the last 24 hours, whose
    /// IPv6 /64 is new too): its quantile with the newcomer's factor, not the tolerance an
    /// established client gets.
    Newcomers,
    /// The population of the destinations the service learned.
    Destinations,
    /// The population of the service's prefix groups.
    Prefixes,
    /// The peer's (or prefix's) own curve for this time of day.
    OwnCurve,
    /// The service's own per-minute totals for this hour of day (rule 3).
    ServiceCurve,
    /// The service's own hourly volume to new clients for this hour of day (rule 8).
    NewClientCurve,
}

impl Reference {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Configured => "configured",
            Self::Clients => "clients",
            Self::Newcomers => "newcomers",
            Self::Destinations => "destinations",
            Self::Prefixes => "prefixes",
            Self::OwnCurve => "own_curve",
            Self::ServiceCurve => "service_curve",
            Self::NewClientCurve => "new_client_curve",
        }
    }

    /// In words, for messages and SIEM fields.
    pub const fn describe(self) -> &'static str {
        match self {
            Self::Configured => "configured threshold",
            Self::Clients => "population of the service's clients",
            Self::Newcomers => "population of the service's clients, as a newcomer",
            Self::Destinations => "population of the service's learned destinations",
            Self::Prefixes => "population of the service's prefix groups",
            Self::OwnCurve => "the peer's own curve for this time of day",
            Self::ServiceCurve => "the service's own curve for this hour of day",
            Self::NewClientCurve => {
                "the service's hourly volume to new clients for this hour of day"
            }
        }
    }
}

/// The ATT&CK mapping, owned so alerts deserialize from the database.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttackRef {
    pub tactic_id: String,
    pub tactic: String,
    pub technique_id: String,
    pub technique: String,
}

impl From<RuleId> for AttackRef {
    fn from(rule: RuleId) -> Self {
        let a = rule.attack();
        Self {
            tactic_id: a.tactic_id.into(),
            tactic: a.tactic.into(),
            technique_id: a.technique_id.into(),
            technique: a.technique.into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdKind {
    /// A configured value.
    Absolute,
    /// Quantile x factor of a learned distribution (or the floor, when larger).
    Baseline,
    /// Rule 4: a number of destinations, not bytes.
    Count,
}

/// What the observed value was compared with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    /// The threshold that was crossed: bytes per window (destinations for `count`).
    pub bytes: u64,
    pub kind: ThresholdKind,
    /// The learned quantile value, for baselines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantile: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    /// Windows the baseline was learned from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<u64>,
    /// What the volume was judged against (absent in alerts stored before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<Reference>,
    /// The service's activity over the judged window, relative to its usual for the hour
    /// (1 = usual), by which the learned part of the bar was multiplied; for rule 3, the
    /// service's breadth (clients this minute against a minute of the last hour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<f64>,
}

impl Threshold {
    /// A configured threshold.
    pub fn configured(bytes: u64) -> Self {
        Self {
            bytes,
            kind: ThresholdKind::Absolute,
            baseline_bytes: None,
            quantile: None,
            factor: None,
            samples: None,
            reference: Some(Reference::Configured),
            activity: None,
        }
    }
}

/// An alert, as stored and exported (the agent's own alert schema, see the README).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable id: the same alert keeps it through updates and resolution.
    pub id: Uuid,
    pub rule: RuleId,
    pub title: String,
    pub severity: Severity,
    pub attack: AttackRef,
    pub status: AlertStatus,
    pub acknowledged: bool,
    pub service: String,
    /// The process of the heaviest sample that found the condition true (the one that sent
    /// the most to the peer, or for the service, in one poll). Not the latest: a pre-forked
    /// server's master answers each new connection's SYN with a few bytes of its own, after
    /// its worker's megabytes in the same poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<Arc<Owner>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<Peer>,
    pub window: WindowLen,
    /// Bytes and packets in the window at the latest evaluation.
    pub bytes: u64,
    pub packets: u64,
    /// Largest window volume seen while open.
    pub peak_bytes: u64,
    /// Bytes of every sample that found the condition true since the alert opened: what the
    /// episode has sent so far (grows with each update).
    pub total_bytes: u64,
    pub threshold: Threshold,
    /// Rule 4: destinations first seen in the window, and a few of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_destinations: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<IpAddr>,
    /// First and latest traffic that the alert is about (the peer's, or the condition's).
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub opened_at: Timestamp,
    pub updated_at: Timestamp,
    /// The latest time the rule's condition held (the alert resolves `resolve_after` later).
    pub last_exceeded: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<Timestamp>,
    /// Update events emitted so far.
    pub updates: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertEventKind {
    Opened,
    Updated,
    Resolved,
    Acknowledged,
    Suppressed,
}

impl AlertEventKind {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Opened => "opened",
            Self::Updated => "updated",
            Self::Resolved => "resolved",
            Self::Acknowledged => "acknowledged",
            Self::Suppressed => "suppressed",
        }
    }
}

/// One step of an alert's life, with the alert as it is after the step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    pub event: AlertEventKind,
    pub at: Timestamp,
    pub alert: Alert,
}

/// Dedup key: (rule, service, peer or prefix).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AlertKey {
    pub rule: RuleId,
    pub service: Arc<str>,
    pub peer: Option<IpAddr>,
    /// The prefix length when `peer` is a prefix group's network.
    pub prefix: Option<u8>,
}

/// A condition a rule found true now; the book turns it into an alert event or nothing.
#[derive(Clone, Debug)]
pub struct Condition {
    pub key: AlertKey,
    pub severity: Severity,
    pub process: Option<Arc<Owner>>,
    pub peer: Option<Peer>,
    pub window: WindowLen,
    pub bytes: u64,
    pub packets: u64,
    /// Bytes of the sample that found the condition true.
    pub sample_bytes: u64,
    pub threshold: Threshold,
    pub new_destinations: Option<u64>,
    pub examples: Vec<IpAddr>,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
}

/// Operator suppression: no alerts for matching keys until `until` (forever when `None`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suppression {
    pub rule: Option<RuleId>,
    pub service: Option<String>,
    pub peer: Option<IpAddr>,
    pub until: Option<Timestamp>,
}

impl Suppression {
    pub fn covers(&self, key: &AlertKey, now: Timestamp) -> bool {
        self.until.is_none_or(|u| now < u)
            && self.rule.is_none_or(|r| r == key.rule)
            && self.service.as_deref().is_none_or(|s| s == &*key.service)
            && self.peer.is_none_or(|p| Some(p) == key.peer)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifecycle {
    pub resolve_after_secs: i64,
    pub update_every_secs: i64,
    pub max_new_per_minute: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AlertStats {
    pub opened: u64,
    pub updated: u64,
    pub resolved: u64,
    /// Conditions not raised because a suppression covered them.
    pub suppressed: u64,
    /// Openings deferred because `max_new_per_minute` was reached.
    pub rate_limited: u64,
}

#[derive(Clone, Debug)]
struct Tracked {
    alert: Alert,
    last_emitted: Timestamp,
    emitted_total: u64,
    /// Bytes of the sample whose process the alert names (0 after a restart: the next
    /// sample names it).
    process_bytes: u64,
}

/// The open alerts and the operator's decisions.
#[derive(Clone, Debug)]
pub struct AlertBook {
    lifecycle: Lifecycle,
    open: HashMap<AlertKey, Tracked>,
    suppressions: Vec<Suppression>,
    minute: i64,
    opened_this_minute: u32,
    pub stats: AlertStats,
}

impl AlertBook {
    pub fn new(lifecycle: Lifecycle) -> Self {
        Self {
            lifecycle,
            open: HashMap::new(),
            suppressions: Vec::new(),
            minute: i64::MIN,
            opened_this_minute: 0,
            stats: AlertStats::default(),
        }
    }

    /// New lifecycle settings (a configuration reload); open alerts stay open and follow them.
    pub fn set_lifecycle(&mut self, lifecycle: Lifecycle) {
        self.lifecycle = lifecycle;
    }

    pub fn open_alerts(&self) -> impl Iterator<Item = &Alert> {
        self.open.values().map(|t| &t.alert)
    }

    /// Restores an open alert from the state database (after a restart).
    pub fn restore(&mut self, alert: Alert) {
        let key = AlertKey {
            rule: alert.rule,
            service: Arc::from(alert.service.as_str()),
            peer: alert.peer.as_ref().map(|p| p.addr),
            prefix: alert.peer.as_ref().and_then(|p| p.prefix_len),
        };
        self.open.insert(
            key,
            Tracked {
                last_emitted: alert.updated_at,
                emitted_total: alert.total_bytes,
                process_bytes: 0,
                alert,
            },
        );
    }

    pub fn set_suppressions(&mut self, suppressions: Vec<Suppression>) {
        self.suppressions = suppressions;
    }

    /// A rule's condition holds at `now`: opens, updates or ignores.
    pub fn raise(&mut self, c: Condition, now: Timestamp) -> Option<AlertEvent> {
        if let Some(t) = self.open.get_mut(&c.key) {
            let a = &mut t.alert;
            a.last_exceeded = now;
            a.bytes = c.bytes;
            a.packets = c.packets;
            a.peak_bytes = a.peak_bytes.max(c.bytes);
            a.total_bytes = a.total_bytes.saturating_add(c.sample_bytes);
            a.last_seen = c.last_seen;
            a.threshold = c.threshold;
            a.window = c.window;
            a.new_destinations = c.new_destinations.or(a.new_destinations);
            if !c.examples.is_empty() {
                a.examples = c.examples;
            }
            if c.process.is_some() && c.sample_bytes >= t.process_bytes {
                a.process = c.process;
                t.process_bytes = c.sample_bytes;
            }
            if let (Some(p), Some(new)) = (&mut a.peer, c.peer) {
                p.port = new.port;
                p.class = new.class;
                p.name = new.name.or(p.name.take());
                p.members = new.members.or(p.members);
            }
            let due =
                now.as_second() - t.last_emitted.as_second() >= self.lifecycle.update_every_secs;
            // Growing totals: at least 10 % more than the last emitted, so a long alert
            // reports its progress without an update per trickle.
            let grown = a.total_bytes > t.emitted_total + t.emitted_total / 10;
            if a.acknowledged || !due || !grown {
                return None;
            }
            a.updated_at = now;
            a.updates += 1;
            t.last_emitted = now;
            t.emitted_total = a.total_bytes;
            self.stats.updated += 1;
            return Some(AlertEvent {
                event: AlertEventKind::Updated,
                at: now,
                alert: a.clone(),
            });
        }
        if self.suppressions.iter().any(|s| s.covers(&c.key, now)) {
            self.stats.suppressed += 1;
            return None;
        }
        let minute = now.as_second().div_euclid(60);
        if minute != self.minute {
            self.minute = minute;
            self.opened_this_minute = 0;
        }
        if self.opened_this_minute >= self.lifecycle.max_new_per_minute {
            self.stats.rate_limited += 1;
            return None;
        }
        self.opened_this_minute += 1;
        let alert = Alert {
            id: alert_id(&c.key, now),
            rule: c.key.rule,
            title: c.key.rule.title().to_owned(),
            severity: c.severity,
            attack: c.key.rule.into(),
            status: AlertStatus::Open,
            acknowledged: false,
            service: c.key.service.to_string(),
            process: c.process,
            peer: c.peer,
            window: c.window,
            bytes: c.bytes,
            packets: c.packets,
            peak_bytes: c.bytes,
            total_bytes: c.sample_bytes,
            threshold: c.threshold,
            new_destinations: c.new_destinations,
            examples: c.examples,
            first_seen: c.first_seen,
            last_seen: c.last_seen,
            opened_at: now,
            updated_at: now,
            last_exceeded: now,
            resolved_at: None,
            updates: 0,
        };
        self.stats.opened += 1;
        self.open.insert(
            c.key,
            Tracked {
                alert: alert.clone(),
                last_emitted: now,
                emitted_total: alert.total_bytes,
                process_bytes: c.sample_bytes,
            },
        );
        Some(AlertEvent {
            event: AlertEventKind::Opened,
            at: now,
            alert,
        })
    }

    /// Notes that the condition of `key`'s open alert still holds at `now` (the detector
    /// re-checks open alerts' windows every tick, so an alert stays open while its window is
    /// above the threshold even when the peer sends nothing new).
    pub fn still_exceeded(&mut self, key: &AlertKey, now: Timestamp) {
        if let Some(t) = self.open.get_mut(key) {
            t.alert.last_exceeded = now;
        }
    }

    /// Open alerts' keys with their rule window and threshold, for the detector's re-check.
    /// The rule of every open alert.
    pub fn open_rules(&self) -> impl Iterator<Item = RuleId> + '_ {
        self.open.keys().map(|k| k.rule)
    }

    pub fn open_conditions(&self) -> Vec<(AlertKey, WindowLen, u64)> {
        self.open
            .iter()
            .map(|(k, t)| (k.clone(), t.alert.window, t.alert.threshold.bytes))
            .collect()
    }

    /// Resolves alerts whose condition has not held for `resolve_after`.
    pub fn tick(&mut self, now: Timestamp, out: &mut Vec<AlertEvent>) {
        let quiet = self.lifecycle.resolve_after_secs;
        let mut done: Vec<AlertKey> = self
            .open
            .iter()
            .filter(|(_, t)| now.as_second() - t.alert.last_exceeded.as_second() >= quiet)
            .map(|(k, _)| k.clone())
            .collect();
        done.sort(); // deterministic order for replay
        for key in done {
            if let Some(t) = self.open.remove(&key) {
                let mut alert = t.alert;
                alert.status = AlertStatus::Resolved;
                alert.resolved_at = Some(now);
                alert.updated_at = now;
                self.stats.resolved += 1;
                out.push(AlertEvent {
                    event: AlertEventKind::Resolved,
                    at: now,
                    alert,
                });
            }
        }
        self.suppressions
            .retain(|s| s.until.is_none_or(|until| now < until));
    }

    /// Acknowledges an open alert by id: it stays open, but emits no more updates.
    pub fn acknowledge(&mut self, id: Uuid, now: Timestamp) -> Option<AlertEvent> {
        let t = self.open.values_mut().find(|t| t.alert.id == id)?;
        t.alert.acknowledged = true;
        t.alert.updated_at = now;
        Some(AlertEvent {
            event: AlertEventKind::Acknowledged,
            at: now,
            alert: t.alert.clone(),
        })
    }

    /// Adds a suppression; an open alert it covers is closed as suppressed.
    pub fn suppress(&mut self, s: Suppression, now: Timestamp) -> Vec<AlertEvent> {
        let mut covered: Vec<AlertKey> = self
            .open
            .keys()
            .filter(|k| s.covers(k, now))
            .cloned()
            .collect();
        covered.sort();
        self.suppressions.push(s);
        covered
            .into_iter()
            .filter_map(|k| self.open.remove(&k))
            .map(|t| {
                let mut alert = t.alert;
                alert.status = AlertStatus::Resolved;
                alert.resolved_at = Some(now);
                alert.updated_at = now;
                AlertEvent {
                    event: AlertEventKind::Suppressed,
                    at: now,
                    alert,
                }
            })
            .collect()
    }
}

fn alert_id(key: &AlertKey, opened: Timestamp) -> Uuid {
    // A prefix is written `addr/len`; a single address as before, so ids do not change.
    let peer = match (key.peer, key.prefix) {
        (Some(p), Some(len)) => format!("{p}/{len}"),
        (Some(p), None) => p.to_string(),
        (None, _) => String::new(),
    };
    let name = format!(
        "{}|{}|{}|{}",
        key.rule.id(),
        key.service,
        peer,
        opened.as_millisecond()
    );
    Uuid::new_v5(&ALERT_NAMESPACE, name.as_bytes())
}

/// A condition as rules build them, for tests and benchmarks (not part of the agent's API).
#[doc(hidden)]
pub mod fixtures {
    use std::{net::IpAddr, sync::Arc};

    use jiff::Timestamp;

    use super::{AlertKey, Condition, Peer, Threshold, ThresholdKind};
    use crate::detect::{
        classes::DestinationClass,
        rules::{RuleId, Severity},
        window::WindowLen,
    };

    pub fn condition(
        rule: RuleId,
        peer: &str,
        bytes: u64,
        first: Timestamp,
        at: Timestamp,
    ) -> Condition {
        let addr: IpAddr = peer.parse().unwrap();
        Condition {
            key: AlertKey {
                rule,
                service: Arc::from("messaging"),
                peer: Some(addr),
                prefix: None,
            },
            severity: Severity::High,
            process: None,
            peer: Some(Peer {
                addr,
                port: 443,
                name: Some("x.example.org".into()),
                class: DestinationClass::Learned,
                prefix_len: None,
                members: None,
            }),
            window: WindowLen::OneMinute,
            bytes,
            packets: bytes / 1000,
            sample_bytes: bytes,
            threshold: Threshold {
                bytes: 1000,
                kind: ThresholdKind::Baseline,
                baseline_bytes: Some(100),
                quantile: Some(0.999),
                factor: Some(10.0),
                samples: Some(5000),
                reference: Some(super::Reference::Clients),
                activity: Some(1.0),
            },
            new_destinations: None,
            examples: vec![],
            first_seen: first,
            last_seen: at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(1_790_000_000 + secs).unwrap()
    }

    fn book() -> AlertBook {
        AlertBook::new(Lifecycle {
            resolve_after_secs: 900,
            update_every_secs: 60,
            max_new_per_minute: 2,
        })
    }

    fn condition(peer: &str, bytes: u64, at: i64) -> Condition {
        fixtures::condition(RuleId::PeerOutlier, peer, bytes, ts(0), ts(at))
    }

    #[test]
    fn open_update_resolve() {
        let mut b = book();
        let e = b.raise(condition("2001:db8::1", 2000, 10), ts(10)).unwrap();
        assert_eq!(e.event, AlertEventKind::Opened);
        let id = e.alert.id;
        assert!(
            b.raise(condition("2001:db8::1", 3000, 30), ts(30))
                .is_none(),
            "too soon"
        );
        let e = b.raise(condition("2001:db8::1", 4000, 75), ts(75)).unwrap();
        assert_eq!(
            (
                e.event,
                e.alert.id,
                e.alert.peak_bytes,
                e.alert.total_bytes,
                e.alert.updates
            ),
            (AlertEventKind::Updated, id, 4000, 9000, 1)
        );
        let mut quiet = condition("2001:db8::1", 3500, 200);
        quiet.sample_bytes = 0;
        assert!(b.raise(quiet, ts(200)).is_none(), "total not growing");
        let mut out = vec![];
        b.tick(ts(1000), &mut out);
        assert!(out.is_empty(), "quiet for 800 s only");
        b.tick(ts(1100), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].event, out[0].alert.id, out[0].alert.status),
            (AlertEventKind::Resolved, id, AlertStatus::Resolved)
        );
        let e = b
            .raise(condition("2001:db8::1", 2000, 2000), ts(2000))
            .unwrap();
        assert_eq!(e.event, AlertEventKind::Opened);
        assert_ne!(e.alert.id, id, "a new alert after resolution");
    }

    #[test]
    fn an_alert_names_the_process_that_sent_the_most_not_the_latest() {
        let sender = |pid: u32, bytes: u64, at: i64| {
            let mut c = condition("2001:db8::1", bytes, at);
            c.sample_bytes = bytes;
            c.process = Some(Arc::new(Owner {
                pid: Some(pid),
                ..Owner::default()
            }));
            c
        };
        let pid = |b: &AlertBook| b.open_alerts().next().and_then(|a| a.process.as_ref()?.pid);
        let mut b = book();
        // nginx's worker sends the megabytes; its master's SYN-ACK to the same client comes
        // later in the same poll (samples are sorted by bytes).
        b.raise(sender(101, 80_000_000, 10), ts(10)).unwrap();
        assert!(b.raise(sender(100, 74, 10), ts(10)).is_none());
        assert_eq!(pid(&b), Some(101));
        let e = b.raise(sender(100, 9_000_000, 80), ts(80)).unwrap();
        assert_eq!(e.alert.process.and_then(|p| p.pid), Some(101));
        b.raise(sender(102, 90_000_000, 90), ts(90));
        assert_eq!(pid(&b), Some(102), "a heavier sender takes over");
    }

    #[test]
    fn ids_are_deterministic() {
        let mut a = book();
        let mut b = book();
        let x = a.raise(condition("2001:db8::1", 2000, 10), ts(10)).unwrap();
        let y = b.raise(condition("2001:db8::1", 2000, 10), ts(10)).unwrap();
        assert_eq!(x.alert.id, y.alert.id);
    }

    #[test]
    fn new_alerts_are_rate_limited_then_opened() {
        let mut b = book();
        assert!(b.raise(condition("2001:db8::1", 2000, 0), ts(0)).is_some());
        assert!(b.raise(condition("2001:db8::2", 2000, 1), ts(1)).is_some());
        assert!(b.raise(condition("2001:db8::3", 2000, 2), ts(2)).is_none());
        assert_eq!(b.stats.rate_limited, 1);
        assert!(
            b.raise(condition("2001:db8::3", 2000, 61), ts(61))
                .is_some(),
            "next minute"
        );
    }

    #[test]
    fn acknowledged_alerts_stop_updating_but_resolve() {
        let mut b = book();
        let id = b
            .raise(condition("2001:db8::1", 2000, 0), ts(0))
            .unwrap()
            .alert
            .id;
        let e = b.acknowledge(id, ts(5)).unwrap();
        assert_eq!(e.event, AlertEventKind::Acknowledged);
        assert!(e.alert.acknowledged);
        assert!(
            b.raise(condition("2001:db8::1", 9000, 100), ts(100))
                .is_none()
        );
        let mut out = vec![];
        b.tick(ts(1000), &mut out);
        assert_eq!(out[0].event, AlertEventKind::Resolved);
        assert!(b.acknowledge(Uuid::nil(), ts(5)).is_none());
    }

    #[test]
    fn suppression_closes_and_silences_until_it_expires() {
        let mut b = book();
        b.raise(condition("2001:db8::1", 2000, 0), ts(0)).unwrap();
        let closed = b.suppress(
            Suppression {
                rule: None,
                service: Some("messaging".into()),
                peer: Some("2001:db8::1".parse().unwrap()),
                until: Some(ts(3600)),
            },
            ts(10),
        );
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].event, AlertEventKind::Suppressed);
        assert!(
            b.raise(condition("2001:db8::1", 5000, 100), ts(100))
                .is_none()
        );
        assert_eq!(b.stats.suppressed, 1);
        assert!(
            b.raise(condition("2001:db8::2", 5000, 100), ts(100))
                .is_some(),
            "other peer"
        );
        let mut out = vec![];
        b.tick(ts(3600), &mut out);
        assert!(
            b.raise(condition("2001:db8::1", 5000, 3700), ts(3700))
                .is_some(),
            "expired"
        );
    }
}
