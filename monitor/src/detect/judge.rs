//! The per-peer rules: what a peer's (or a prefix group's) windows are compared with, given
//! its role. Each returns the crossing it found, with the threshold and the reference it was
//! judged against; the detector turns crossings into alert conditions.
//!
//! | role | rules |
//! |---|---|
//! | a destination the service connected to and never learned | `unknown_volume` (1m, 10m, 1h), `slow_drip` (24h): configured thresholds |
//! | a client (it came to the service) | `peer_outlier` against the clients' population, each window |
//! | a learned destination (federation server, push gateway) | `peer_outlier` against the destinations' population, at least the clients' bar |
//! | a prefix group of clients | `prefix_outlier` against the prefixes' population |
//! | a heavy peer or prefix (NAT gateway, backup target) | `peer_rise` against its own curve, at least its population's bar |

use super::{
    ServiceState,
    alerts::{Reference, Threshold, ThresholdKind},
    params::Params,
    peers::PeerState,
    population::{self, Kind, PopulationBar},
    prefixes::Excluded,
    rules::{RuleId, Severity},
    window::{Volume, WindowLen},
};

/// A window that crossed its bar.
#[derive(Clone, Debug)]
pub struct Crossing {
    pub rule: RuleId,
    pub severity: Severity,
    pub window: WindowLen,
    pub volume: Volume,
    pub threshold: Threshold,
}

impl Kind {
    pub const fn reference(self) -> Reference {
        match self {
            Self::Clients => Reference::Clients,
            Self::Destinations => Reference::Destinations,
            Self::Prefixes => Reference::Prefixes,
        }
    }
}

/// A population's bar as the alert's threshold.
fn population_threshold(
    r: &population::Reference,
    reference: Reference,
    bar: &PopulationBar,
    activity: f64,
) -> Threshold {
    Threshold {
        bytes: r.bytes,
        kind: if r.floor {
            ThresholdKind::Absolute
        } else {
            ThresholdKind::Baseline
        },
        baseline_bytes: r.baseline,
        quantile: r.baseline.map(|_| bar.quantile),
        factor: r.baseline.map(|_| bar.factor),
        samples: Some(r.samples),
        reference: Some(reference),
        activity: r.baseline.map(|_| activity),
    }
}

/// `entity`'s volume in window `len`, less what the `excluded` members of the group received
/// in that window (the window's busiest where it is established, alerted alone, or most of
/// the group's, see `Excluded`).
fn net(entity: &PeerState, excluded: Excluded<'_>, len: WindowLen, millis: u64) -> Volume {
    let mut v = entity.volume(len, millis);
    let mut less = |m: Volume| {
        v.bytes = v.bytes.saturating_sub(m.bytes);
        v.packets = v.packets.saturating_sub(m.packets);
    };
    if let Some(m) = excluded.alerted {
        less(m.volume(len, millis));
    }
    if let Some(b) = excluded.busiest(len) {
        let m = b.member.volume(len, millis);
        if b.established
            || b.crossed
            || m.bytes.saturating_mul(2) > entity.volume(len, millis).bytes
        {
            less(m);
        }
    }
    v
}

/// The bar of the population a reference names.
fn reference_bar(params: &Params, reference: Reference, kind: Kind) -> &PopulationBar {
    match reference {
        Reference::Clients => &params.peers,
        Reference::Newcomers => &params.newcomers,
        _ => params.bar(kind),
    }
}

/// How an entity is judged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct How {
    /// A newcomer client: the newcomer's factor.
    pub newcomer: bool,
    /// For opening an alert (not re-checking an open one): the learned day is not judged.
    pub opening: bool,
}

/// Whether `entity` can cross at all: heavy (judged on its own curve), or above a floor in
/// a judged window (every bar is at least its floor, and a net volume at most the whole).
/// Spares a group the lookup of its excluded members at most samples.
pub fn may_cross(entity: &PeerState, params: &Params, kind: Kind, millis: u64) -> bool {
    let bar = params.bar(kind);
    entity.heavy()
        || WindowLen::ALL.into_iter().any(|len| {
            bar.windows[len.index()] && entity.volume(len, millis).bytes > bar.floors[len.index()]
        })
}

/// The windows of a client, a learned destination or a prefix group (`kind`) against its
/// population, or, when heavy, against its own curve. For a group, `excluded` are members
/// whose bytes are not counted against it (see `prefixes::excluded`: one whose own alert is
/// open, the busiest, judged alone; a second attacker of the prefix still counts). A newcomer
/// client (see [`How`]) is judged with the newcomer's factor. Each window's bar scales with
/// the service's activity over that window (see `ServiceState::activity`), computed only for
/// a window above its bar at usual activity.
pub fn volume(
    entity: &PeerState,
    excluded: Excluded<'_>,
    svc: &mut ServiceState,
    params: &Params,
    kind: Kind,
    how: How,
    millis: u64,
) -> Option<Crossing> {
    let newcomer = how.newcomer;
    if entity.heavy() {
        // The own curve learned the group's whole volume: only an alerted member is left out.
        let alerted = Excluded {
            alerted: excluded.alerted,
            ..Excluded::NONE
        };
        return rise(entity, alerted, svc, params, kind, millis);
    }
    let (rule, severity) = match kind {
        Kind::Prefixes => (RuleId::PrefixOutlier, params.prefix?),
        Kind::Clients | Kind::Destinations => (RuleId::PeerOutlier, params.outlier?),
    };
    let judged = params.bar(kind).windows;
    let floors = params.bar(kind).floors;
    let mut best: Option<(f64, Crossing)> = None;
    for len in WindowLen::ALL {
        if !judged[len.index()] {
            continue;
        }
        // The 24-hour window is judged once it holds no learning-period bytes: a day after
        // learning. Until then its population holds the learning day only (one value per
        // peer, short of `min_samples` for prefix groups) and the floor would judge the day
        // that was just learned: every big network at once, the minute learning ends. (An
        // alert opened on later bytes stays open while its day holds them.)
        if how.opening
            && len == WindowLen::OneDay
            && millis / 1000 < svc.learn_until.saturating_add(u64::from(len.secs()))
        {
            continue;
        }
        let v = net(entity, excluded, len, millis);
        // Every bar is at least its floor: most windows stop here, before the population.
        if v.bytes <= floors[len.index()]
            || v.bytes <= svc.bar(kind, newcomer, len, params, 1.0).0.bytes
        {
            continue;
        }
        let activity = svc.activity(len, own_span(entity, len, millis), millis);
        let (r, reference) = svc.bar(kind, newcomer, len, params, activity);
        if v.bytes <= r.bytes {
            continue;
        }
        // The most anomalous window names the alert.
        let ratio = v.bytes as f64 / r.bytes.max(1) as f64;
        if best.as_ref().is_none_or(|(b, _)| ratio > *b) {
            let bar = reference_bar(params, reference, kind);
            best = Some((
                ratio,
                Crossing {
                    rule,
                    severity,
                    window: len,
                    volume: v,
                    threshold: population_threshold(&r, reference, bar, activity),
                },
            ));
        }
    }
    best.map(|(_, c)| c)
}

/// The entity's volume over the span its window's activity is measured on.
fn own_span(entity: &PeerState, len: WindowLen, millis: u64) -> u64 {
    let span = if len == WindowLen::OneDay {
        WindowLen::OneHour
    } else {
        len
    };
    entity.volume(span, millis).bytes
}

/// A heavy peer's last ten minutes against its own curve: max(the usual busiest ten minutes
/// around this hour x factor x activity, usual + `min_excess`, the population's bar).
fn rise(
    entity: &PeerState,
    excluded: Excluded<'_>,
    svc: &mut ServiceState,
    params: &Params,
    kind: Kind,
    millis: u64,
) -> Option<Crossing> {
    let rise = params.rise?;
    let curve = entity.curve.as_ref()?;
    let len = WindowLen::TenMinutes;
    let v = net(entity, excluded, len, millis);
    let activity = svc.activity(len, own_span(entity, len, millis), millis);
    let usual = curve.expected(millis / 1000);
    let own = ((usual as f64 * rise.factor * activity) as u64).max(usual + rise.min_excess);
    if v.bytes <= own {
        return None;
    }
    let (pop, reference) = svc.bar(kind, false, len, params, activity);
    if v.bytes <= pop.bytes {
        return None;
    }
    let threshold = if own >= pop.bytes {
        Threshold {
            bytes: own,
            kind: ThresholdKind::Baseline,
            baseline_bytes: Some(usual),
            quantile: None,
            factor: Some(rise.factor),
            samples: None,
            reference: Some(Reference::OwnCurve),
            activity: Some(activity),
        }
    } else {
        population_threshold(
            &pop,
            reference,
            reference_bar(params, reference, kind),
            activity,
        )
    };
    Some(Crossing {
        rule: RuleId::PeerRise,
        severity: rise.severity,
        window: len,
        volume: v,
        threshold,
    })
}

/// A destination the service connected to and never learned: the configured thresholds of
/// `unknown_volume` (1m, 10m, 1h) and `slow_drip` (24h).
pub fn unknown(entity: &PeerState, params: &Params, millis: u64) -> Vec<Crossing> {
    let mut found = Vec::new();
    if let Some((severity, windows)) = params.unknown
        && let Some((len, limit, v)) = windows.iter().find_map(|&(len, limit)| {
            let v = entity.volume(len, millis);
            (v.bytes > limit).then_some((len, limit, v))
        })
    {
        found.push(Crossing {
            rule: RuleId::UnknownVolume,
            severity,
            window: len,
            volume: v,
            threshold: Threshold::configured(limit),
        });
    }
    if let Some((severity, limit)) = params.drip {
        let v = entity.volume(WindowLen::OneDay, millis);
        if v.bytes > limit {
            found.push(Crossing {
                rule: RuleId::SlowDrip,
                severity,
                window: WindowLen::OneDay,
                volume: v,
                threshold: Threshold::configured(limit),
            });
        }
    }
    found
}
