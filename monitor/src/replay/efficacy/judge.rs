//! Which alerts of a run were about the scenario's event (the attacker's peer or prefix, or
//! its service while the event ran) and which were false alerts.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::detect::alerts::{AlertEvent, AlertEventKind};

/// An alert opened after an event's last transfer still counts as the event's for this long
/// (a 24-hour window is judged on the peer's later samples; a service rule on its next hour).
pub const GRACE_SECS: i64 = 3600;

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
    pub window: String,
    pub bytes: u64,
    pub threshold: u64,
}

impl Brief {
    fn of(e: &AlertEvent) -> Self {
        let a = &e.alert;
        Self {
            rule: a.rule.id().to_owned(),
            service: a.service.clone(),
            peer: a.peer.as_ref().map(crate::detect::alerts::Peer::addr_text),
            opened_at: a.opened_at.to_string(),
            window: a.window.name().to_owned(),
            bytes: a.bytes,
            threshold: a.threshold.bytes,
        }
    }
}

/// The alerts of one run, sorted out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Alerts about the event (its peers, a prefix holding one of them, or its service while
    /// it ran).
    pub on_event: Vec<Brief>,
    /// Seconds from the event's start to the first of them.
    pub first_alert_secs: Option<i64>,
    /// Every other alert opened over the judged days.
    pub false_alerts: Vec<Brief>,
}

impl Verdict {
    pub fn detected(&self) -> bool {
        !self.on_event.is_empty()
    }
}

fn about(e: &AlertEvent, t: &Target) -> bool {
    let a = &e.alert;
    let at = a.opened_at.as_second();
    if a.service != t.service
        || !t
            .spans
            .iter()
            .any(|&(from, to)| (from..=to + GRACE_SECS).contains(&at))
    {
        return false;
    }
    let Some(peer) = &a.peer else {
        return true; // a service rule, while the event ran
    };
    match peer
        .prefix_len
        .and_then(|len| IpNet::new(peer.addr, len).ok())
    {
        Some(net) => t.peers.iter().any(|p| net.contains(p)),
        None => t.peers.contains(&peer.addr),
    }
}

/// Sorts the `opened` events of a run: those at or after `judged_from` (Unix seconds: the
/// end of the learning day) are about `target` or false alerts.
pub fn judge(events: &[AlertEvent], target: Option<&Target>, judged_from: i64) -> Verdict {
    let mut v = Verdict::default();
    for e in events {
        if e.event != AlertEventKind::Opened || e.alert.opened_at.as_second() < judged_from {
            continue;
        }
        match target {
            Some(t) if about(e, t) => {
                let secs = e.alert.opened_at.as_second() - t.start;
                v.first_alert_secs = Some(v.first_alert_secs.map_or(secs, |f| f.min(secs)));
                v.on_event.push(Brief::of(e));
            }
            _ => v.false_alerts.push(Brief::of(e)),
        }
    }
    v
}
