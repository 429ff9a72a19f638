//! What peers teach their service, at the end of each clock hour and day they were active:
//! the populations (one value per peer-hour and window length), the own curves of heavy
//! peers, and, while the service learns, which peers are heavy.
//!
//! The rules that keep a baseline honest (see the README's "Baselines that cannot be
//! ratcheted"):
//! - one vote per peer-hour (per peer-day for 24 h): a peer that talks all day weighs 24
//!   values, not 1,440 minutes;
//! - bounded influence: above the population's current quantile, a peer adds at most one
//!   value per window length and day, so no single address can move a high quantile;
//! - a lower watermark: after learning, a peer teaches nothing for an hour (or day) in which
//!   one of its windows went above `learn_below` x its bar, so an attacker staying just
//!   under a bar for days does not raise it;
//! - while the service learns, a peer above its bar (a NAT gateway, a backup target) is
//!   not recorded at all: it becomes heavy and gets its own curve instead.

use super::{
    ServiceState,
    curve::Curve,
    params::Params,
    peers::{DAY_PENDING, EXEMPT, HEAVY, HOUR_PENDING, PeerState, SERVED},
    population::Kind,
    ring::PER_HOUR,
    window::WindowLen,
};

/// Hours above the bar, while the service learns, that make a peer heavy.
const HEAVY_HOURS: u8 = 1;

/// The population a peer teaches, if any: prefix groups their own, learned destinations
/// theirs, clients theirs; unknown destinations and internal or allowlisted peers nothing.
pub fn kind(peer: &PeerState) -> Option<Kind> {
    if peer.has(EXEMPT) {
        None
    } else if peer.key.is_group() {
        Some(Kind::Prefixes)
    } else if peer.learned() {
        Some(Kind::Destinations)
    } else if peer.has(SERVED) {
        Some(Kind::Clients)
    } else {
        None
    }
}

/// Teaches what `peer` did in the hour and day that ended before `now` (Unix seconds), if
/// not taught yet. Called before a peer's windows move into a new hour, and by the sweep
/// for peers that went quiet.
pub fn flush(peer: &mut PeerState, svc: &mut ServiceState, params: &Params, now: u64) {
    let hour = peer.ring.epoch() / PER_HOUR;
    if peer.has(HOUR_PENDING) && hour < now / 3600 {
        peer.flags &= !HOUR_PENDING;
        let (volume, busiest_ten) = peer.ring.hour_summary(hour);
        let this_minute = if peer.minute.epoch() / 60 == hour {
            peer.minute.current_bytes()
        } else {
            0
        };
        let busiest_minute = (u64::from(peer.hour_peak_kib) * 1024).max(this_minute);
        peer.hour_peak_kib = 0;
        teach_hour(
            peer,
            svc,
            params,
            hour * 3600,
            [
                (WindowLen::OneMinute, busiest_minute),
                (WindowLen::TenMinutes, busiest_ten),
                (WindowLen::OneHour, volume),
            ],
            now,
        );
    }
    if peer.has(DAY_PENDING) && peer.day.epoch() < now / 86_400 {
        peer.flags &= !DAY_PENDING;
        let volume = peer.day.current_bytes();
        let day_start = peer.day.epoch() * 86_400;
        teach_values(
            peer,
            svc,
            params,
            &[(WindowLen::OneDay, volume)],
            day_start,
            now,
        );
    }
}

fn teach_hour(
    peer: &mut PeerState,
    svc: &mut ServiceState,
    params: &Params,
    hour_start: u64,
    values: [(WindowLen, u64); 3],
    now: u64,
) {
    if kind(peer).is_none() {
        return;
    }
    // A heavy learned destination (a federation server that backfills) also teaches its
    // population: what the service's destinations do in bursts is what that population is
    // for. A heavy client (a NAT gateway) does not: its volume would raise the bar every
    // single client is judged against.
    let teaches = kind(peer) == Some(Kind::Destinations);
    if let Some(curve) = peer.curve.as_mut() {
        curve.learn(hour_start, values[1].1, now);
        if teaches {
            teach_values(peer, svc, params, &values, hour_start, now);
        }
        return;
    }
    if peer.heavy() && !teaches {
        return;
    }
    // Whether the hour was learned is the hour's own time: a quiet peer's hour may be taught
    // after learning has ended.
    if svc.learning(hour_start) && !peer.heavy() && above_bar(peer, svc, params, &values) {
        count_heavy_hour(peer, svc, hour_start, values[1].1);
        if !teaches {
            return;
        }
    }
    teach_values(peer, svc, params, &values, hour_start, now);
}

/// One more hour above the bar while the service learned: heavy after `HEAVY_HOURS`.
fn count_heavy_hour(peer: &mut PeerState, svc: &ServiceState, hour_start: u64, busiest_ten: u64) {
    peer.heavy_hours = peer.heavy_hours.saturating_add(1);
    if peer.heavy_hours >= HEAVY_HOURS {
        peer.flags |= HEAVY;
        // Free learning lasts until the curve has seen every hour of a day at least once.
        let mut curve = Curve::learning_until(svc.learn_until.max(hour_start + 86_400));
        curve.seed(hour_start, busiest_ten);
        peer.curve = Some(Box::new(curve));
    }
}

/// The end of a service's learning period, which rarely falls on an hour: a peer that was
/// above its bar in the unfinished hour is classified now (heavy or not), as the end of that
/// hour would have done had learning lasted until then.
pub fn finish_learning(peer: &mut PeerState, svc: &mut ServiceState, params: &Params) {
    if !peer.has(HOUR_PENDING) || peer.heavy() || kind(peer).is_none() {
        return;
    }
    let hour = peer.ring.epoch() / PER_HOUR;
    let (volume, busiest_ten) = peer.ring.hour_summary(hour);
    let this_minute = if peer.minute.epoch() / 60 == hour {
        peer.minute.current_bytes()
    } else {
        0
    };
    let busiest_minute = (u64::from(peer.hour_peak_kib) * 1024).max(this_minute);
    let values = [
        (WindowLen::OneMinute, busiest_minute),
        (WindowLen::TenMinutes, busiest_ten),
        (WindowLen::OneHour, volume),
    ];
    if above_bar(peer, svc, params, &values) {
        count_heavy_hour(peer, svc, hour * 3600, busiest_ten);
    }
}

/// Whether one of the values is above the peer's bar (at the service's usual activity).
fn above_bar(
    peer: &PeerState,
    svc: &mut ServiceState,
    params: &Params,
    values: &[(WindowLen, u64)],
) -> bool {
    let Some(kind) = kind(peer) else {
        return false;
    };
    values
        .iter()
        .any(|&(len, v)| v > svc.bar(kind, false, len, params, 1.0).0.bytes)
}

/// Records `values` (of the period that started at `at`) into the peer's population, unless
/// the watermark (after learning) or the per-day tail budget says no.
fn teach_values(
    peer: &mut PeerState,
    svc: &mut ServiceState,
    params: &Params,
    values: &[(WindowLen, u64)],
    at: u64,
    now: u64,
) {
    let Some(kind) = kind(peer) else {
        return;
    };
    if peer.heavy() && kind != Kind::Destinations {
        return;
    }
    // The watermark guards the populations anyone can join (clients, their prefixes); the
    // learned destinations are the service's own, fixed while it learned, and must learn
    // their bursts (federation backfills) to judge them.
    if !svc.learning(at) && kind != Kind::Destinations {
        let watermark = |len: WindowLen, svc: &mut ServiceState| {
            (svc.bar(kind, false, len, params, 1.0).0.bytes as f64 * params.learn_below) as u64
        };
        let day = peer.day.current_bytes().max(peer.day.previous_bytes());
        if day > watermark(WindowLen::OneDay, svc)
            || values.iter().any(|&(len, v)| v > watermark(len, svc))
        {
            return;
        }
    }
    let today = u16::try_from(now / 86_400 % 65_536).unwrap_or(0);
    if peer.tail_day != today {
        peer.tail_day = today;
        peer.tail = 0;
    }
    let bar = *params.bar(kind);
    let population = svc.populations.get_mut(kind);
    for &(len, v) in values {
        if v == 0 {
            continue;
        }
        let bit = 1u8 << len.index();
        if population.quantile(len, &bar).is_none_or(|q| v > q) {
            // A tail value (or one of the first): one per peer, window and day.
            if peer.tail & bit != 0 {
                continue;
            }
            peer.tail |= bit;
        }
        population.record(len, v);
        svc.dirty = true;
    }
}
