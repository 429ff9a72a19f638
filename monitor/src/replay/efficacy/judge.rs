//! Which alerts of a run were about the scenario's event (the attacker's peer or prefix, or
//! its service while the event ran) and which were false alerts.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::detect::alerts::{AlertEvent, AlertEventKind};

/// An alert on the event's peer (or a prefix holding it) opened after the event's last
/// transfer still counts as the event's for this long: its bytes stay in the 24-hour window,
/// judged again on the peer's (or prefix's) later samples.
pub const PEER_GRACE_SECS: i64 = 86_400;
/// A service rule's alert counts as the event's up to this long after it (rule 8 judges
/// the last hour).
pub const SERVICE_GRACE_SECS: i64 = 3600;

/// What a scenario's event is, for judging alerts.
#[derive(Clone, Debug)]
pub struct Target {
    /// An attack (an alert is expected) or a benign event (none is).
    pub attack: bool,
    pub service: String,
    /// The peers it sends to.
    pub peers: Vec<IpAddr>,
    /// When it sends: [from, to) in Unix seconds, one per transfer.
    pub spans: Vec<(i64, i64)>,
    /// Its first second.
    pub start: i64,
}

/// One opened alert, as the report lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Brief {
    pub rule: String,
    pub service: String,
    /// The peer (`addr` or `network/len` for a prefix); absent for a service rule.
    pub peer: Option<String>,
    pub opened_at: String,
    #[serde(skip)]
    pub opened_secs: i64,
    pub window: String,
    pub bytes: u64,
    pub threshold: u64,
}

impl Brief {
    pub fn of(e: &AlertEvent) -> Self {
        let a = &e.alert;
        Self {
            rule: a.rule.id().to_owned(),
            service: a.service.clone(),
            peer: a.peer.as_ref().map(crate::detect::alerts::Peer::addr_text),
            opened_at: a.opened_at.to_string(),
            opened_secs: a.opened_at.as_second(),
            window: a.window.name().to_owned(),
            bytes: a.bytes,
            threshold: a.threshold.bytes,
        }
    }
}

/// The alerts of one run, sorted out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Alerts about the event: on its peers or a prefix holding one of them.
    pub on_event: Vec<Brief>,
    /// Seconds from the event's start to the first of them.
    pub first_alert_secs: Option<i64>,
    /// Service rules' alerts on its service while it ran that the ordinary week (the same
    /// seed without the event) does not have then: the event's too, though they name no peer.
    pub service_on_event: Vec<Brief>,
    /// Every other alert opened over the judged days.
    pub false_alerts: Vec<Brief>,
}

impl Verdict {
    /// An alert named the event's peer or prefix.
    pub fn detected(&self) -> bool {
        !self.on_event.is_empty()
    }

    /// Any alert was about the event (for a benign one: it was alerted on).
    pub fn alerted(&self) -> bool {
        self.detected() || !self.service_on_event.is_empty()
    }
}

/// How far apart a service rule's alert and the ordinary week's may open and be the same.
pub const SAME_ALERT_SECS: i64 = 1800;

enum About {
    Peer,
    Service,
    No,
}

fn about(e: &AlertEvent, t: &Target, background: &[Brief]) -> About {
    let a = &e.alert;
    let at = a.opened_at.as_second();
    let during = |grace: i64| {
        t.spans
            .iter()
            .any(|&(from, to)| (from..=to + grace).contains(&at))
    };
    if a.service != t.service {
        return About::No;
    }
    let Some(peer) = &a.peer else {
        let ordinary = background.iter().any(|b| {
            b.rule == a.rule.id()
                && b.service == a.service
                && (b.opened_secs - at).abs() <= SAME_ALERT_SECS
        });
        return if during(SERVICE_GRACE_SECS) && !ordinary {
            About::Service
        } else {
            About::No
        };
    };
    let mine = match peer
        .prefix_len
        .and_then(|len| IpNet::new(peer.addr, len).ok())
    {
        Some(net) => t.peers.iter().any(|p| net.contains(p)),
        None => t.peers.contains(&peer.addr),
    };
    if mine && during(PEER_GRACE_SECS) {
        About::Peer
    } else {
        About::No
    }
}

/// Sorts the `opened` events of a run: those at or after `judged_from` (Unix seconds: the
/// end of the learning day) are about `target` or false alerts. `background` are the alerts
/// of the same trace without the event (a service rule's alert that it has too is not the
/// event's).
pub fn judge(
    events: &[AlertEvent],
    target: Option<&Target>,
    judged_from: i64,
    background: &[Brief],
) -> Verdict {
    let mut v = Verdict::default();
    for e in events {
        if e.event != AlertEventKind::Opened || e.alert.opened_at.as_second() < judged_from {
            continue;
        }
        let Some(t) = target else {
            v.false_alerts.push(Brief::of(e));
            continue;
        };
        match about(e, t, background) {
            About::Peer => {
                let secs = e.alert.opened_at.as_second() - t.start;
                v.first_alert_secs = Some(v.first_alert_secs.map_or(secs, |f| f.min(secs)));
                v.on_event.push(Brief::of(e));
            }
            About::Service => v.service_on_event.push(Brief::of(e)),
            About::No => v.false_alerts.push(Brief::of(e)),
        }
    }
    v
}
