//! Per-service state: its learning period, its totals (rule 3, its activity, its volume to
//! new clients), its populations and its own curves.

use std::{net::IpAddr, sync::Arc};

use super::{
    alerts::{Reference, Threshold, ThresholdKind},
    baseline::{Bar, TimeOfDay},
    params::Params,
    population::{self, Kind, Populations},
    ring::{PER_HOUR, Ring},
    rules::RuleId,
    window::{Volume, Window, WindowLen},
};

/// The service's activity (its traffic to other peers now against its usual for the hour)
/// multiplies learned bars by at most this: a busy morning raises every client, not one.
pub const MAX_ACTIVITY: f64 = 4.0;

/// Bytes of [`ServiceState::encode_windows`]: before client breadth, and since.
const WINDOWS_LEN_V1: usize = 2 * Window::ENCODED_LEN + 2 * Ring::ENCODED_LEN + 17;
const WINDOWS_LEN: usize = WINDOWS_LEN_V1 + Window::ENCODED_LEN + Ring::ENCODED_LEN;

/// Minutes an hour of day needs before its usual total is that hour's (else the day's).
const USUAL_MIN_SAMPLES: u64 = 30;

#[derive(Clone, Debug)]
pub struct ServiceState {
    pub name: Arc<str>,
    /// Unix seconds of the service's first sample, and the end of its learning period.
    pub first_seen: u64,
    pub learn_until: u64,
    /// Non-internal bytes per minute (rule 3).
    pub total: Window,
    /// Non-internal bytes in ten-minute slots: the service's activity.
    pub activity: Ring,
    /// First-seen unknown destinations (rule 4), counted as "bytes".
    pub new_destinations: Window,
    /// The latest few first-seen destinations, for rule 4's alert.
    pub recent_new: Vec<IpAddr>,
    /// What clients, learned destinations and prefix groups usually receive.
    pub populations: Populations,
    /// Per-minute totals by hour of day (rule 3, and the usual activity).
    pub time_of_day: TimeOfDay,
    /// Bytes to clients first seen in the last 24 hours, in ten-minute slots (rule 8).
    pub new_clients: Ring,
    /// Client-minutes (a client active in a minute counts one), the current minute's and
    /// in ten-minute slots: how many clients the service serves now against the last hour.
    pub client_minute: Window,
    pub client_minutes: Ring,
    /// Hourly volumes to new clients by hour of day (rule 8's curve).
    pub new_client_curve: TimeOfDay,
    pub dirty: bool,
    /// Bytes since the agent started, by destination class (for the metrics endpoint; not
    /// persisted: Prometheus counters restart with the process).
    pub bytes_by_class: [u64; 5],
    /// (ten-minute epoch, usual bytes per ten minutes) of the latest activity computation.
    usual: (u64, u64),
    /// The end of learning was handled (peers above their bar then became heavy).
    pub learning_finished: bool,
    /// Rule 3: Unix milliseconds of the first and the latest crossing of the current run of
    /// crossings (none more than a minute apart); not stored.
    baseline_run: (u64, u64),
    /// The cgroups the service's sockets were seen in (the scope of its containments in the
    /// kernel), most recent last, at most [`MAX_CGROUPS`]; not stored.
    pub cgroups: Vec<u64>,
}

/// Cgroups remembered per service: a unit's, a container's, a few more across restarts.
pub const MAX_CGROUPS: usize = 8;

impl ServiceState {
    pub fn new(name: Arc<str>) -> Self {
        Self {
            name,
            first_seen: 0,
            learn_until: 0,
            total: Window::default(),
            activity: Ring::default(),
            new_destinations: Window::default(),
            recent_new: Vec::new(),
            populations: Populations::default(),
            time_of_day: TimeOfDay::default(),
            new_clients: Ring::default(),
            client_minute: Window::default(),
            client_minutes: Ring::default(),
            new_client_curve: TimeOfDay::default(),
            dirty: true,
            bytes_by_class: [0; 5],
            usual: (u64::MAX, 0),
            learning_finished: false,
            baseline_run: (0, 0),
            cgroups: Vec::new(),
        }
    }

    pub fn learning(&self, secs: u64) -> bool {
        secs < self.learn_until
    }

    /// The service's own windows, for checkpoints (a restart keeps its totals).
    pub fn encode_windows(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(WINDOWS_LEN);
        out.extend_from_slice(&self.total.to_bytes());
        out.extend_from_slice(&self.new_destinations.to_bytes());
        out.extend_from_slice(&self.activity.to_bytes());
        out.extend_from_slice(&self.new_clients.to_bytes());
        out.extend_from_slice(&self.usual.0.to_le_bytes());
        out.extend_from_slice(&self.usual.1.to_le_bytes());
        out.push(u8::from(self.learning_finished));
        out.extend_from_slice(&self.client_minute.to_bytes());
        out.extend_from_slice(&self.client_minutes.to_bytes());
        out
    }

    /// Reads [`Self::encode_windows`] back (or the encoding before client breadth, which
    /// then starts empty); `None` if it is neither.
    pub fn decode_windows(&mut self, b: &[u8]) -> Option<()> {
        let w = Window::ENCODED_LEN;
        let r = Ring::ENCODED_LEN;
        if b.len() != WINDOWS_LEN && b.len() != WINDOWS_LEN_V1 {
            return None;
        }
        if b.len() == WINDOWS_LEN {
            let at = WINDOWS_LEN_V1;
            self.client_minute = Window::from_bytes(&b[at..at + w])?;
            self.client_minutes = Ring::from_bytes(&b[at + w..])?;
        }
        let end = 2 * w + 2 * r;
        self.total = Window::from_bytes(&b[..w])?;
        self.new_destinations = Window::from_bytes(&b[w..2 * w])?;
        self.activity = Ring::from_bytes(&b[2 * w..2 * w + r])?;
        self.new_clients = Ring::from_bytes(&b[2 * w + r..end])?;
        self.usual = (
            u64::from_le_bytes(b[end..end + 8].try_into().ok()?),
            u64::from_le_bytes(b[end + 8..end + 16].try_into().ok()?),
        );
        self.learning_finished = b[end + 16] != 0;
        Some(())
    }

    /// Counts a non-internal sample in the service's totals; a completed minute teaches the
    /// time-of-day baseline unless it was anomalous (rule 3).
    pub fn count(&mut self, bytes: u64, packets: u64, t: u64, learning: bool, params: &Params) {
        if let Some(done) = self.total.roll(WindowLen::OneMinute, t) {
            let anomalous = params.baseline.is_some_and(|(_, bar)| {
                !learning
                    && self
                        .time_of_day
                        .threshold(t, &bar)
                        .is_some_and(|(thr, _, _)| done.bytes > thr)
            });
            if !anomalous {
                self.time_of_day
                    .record(u64::from(done.epoch) * 60, done.bytes);
                self.dirty = true;
            }
        }
        self.total.add(bytes, packets);
        self.activity.roll(t);
        self.activity.add(bytes, packets);
    }

    /// Counts a client's first sample of a minute.
    pub fn count_client_minute(&mut self, t: u64) {
        self.client_minute.roll(WindowLen::OneMinute, t);
        self.client_minute.add(1, 0);
        self.client_minutes.roll(t);
        self.client_minutes.add(1, 0);
    }

    /// How many more clients the service serves in the last minute than a minute of the
    /// last hour on average: 1 when no more, up to [`MAX_ACTIVITY`]. A viral moment (a
    /// third of the day's clients fetching one video within minutes) is a surge of clients,
    /// not of bytes per client; rule 3 scales with it.
    pub fn breadth(&self, millis: u64) -> f64 {
        // Whole minutes' counts (a sliding estimate would count a client of both minutes
        // almost twice): the busier of this minute and the last.
        let w = &self.client_minute;
        let now = match (millis / 60_000).checked_sub(w.epoch()) {
            Some(0) => w.current_bytes().max(w.previous_bytes()),
            Some(1) => w.current_bytes(),
            _ => 0,
        };
        let hour = self.client_minutes.hour(millis).bytes;
        if hour == 0 {
            return 1.0;
        }
        (now as f64 * 60.0 / hour as f64).clamp(1.0, MAX_ACTIVITY)
    }

    /// Rule 3's bar is crossed at `millis`: whether the crossings have lasted a whole minute.
    /// The service's minute has a heavy tail (a viral video's first minute is many times the
    /// usual); a spread pull that matters goes on for minutes, so one minute above the bar
    /// alone is not an alert.
    pub fn baseline_sustained(&mut self, millis: u64) -> bool {
        let (first, last) = self.baseline_run;
        if last == 0 || millis.saturating_sub(last) > 60_000 {
            self.baseline_run = (millis, millis);
            return false;
        }
        self.baseline_run.1 = millis.max(last);
        millis.saturating_sub(first) >= 60_000
    }

    /// Counts a sample to a new client; a completed hour teaches rule 8's curve unless it
    /// went above `learn_below` x its bar (after learning).
    pub fn count_new_client(&mut self, bytes: u64, t: u64, learning: bool, params: &Params) {
        let hour = self.new_clients.epoch() / PER_HOUR;
        if self.new_clients.epoch() > 0 && hour < t / 3600 {
            let (volume, _) = self.new_clients.hour_summary(hour);
            let teaches = learning
                || params.new_clients.is_none_or(|(_, bar)| {
                    self.new_client_curve
                        .threshold(hour * 3600, &bar)
                        .is_none_or(|(thr, _, _)| volume as f64 <= thr as f64 * params.learn_below)
                });
            if volume > 0 && teaches {
                self.new_client_curve.record(hour * 3600, volume);
                self.dirty = true;
            }
        }
        self.new_clients.roll(t);
        self.new_clients.add(bytes, 0);
    }

    /// Rule 8: the last hour's bytes to new clients above max(floor, the curve's quantile for
    /// this hour x factor), once the curve has learned anything.
    pub fn new_client_crossing(&mut self, millis: u64, bar: &Bar) -> Option<(Threshold, Volume)> {
        let v = self.new_clients.hour(millis);
        if v.bytes <= bar.floor {
            return None;
        }
        let (thr, q, n) = self.new_client_curve.threshold(millis / 1000, bar)?;
        if v.bytes <= thr {
            return None;
        }
        // A flash crowd (a viral video) lifts the established clients' hour as much as the
        // new ones'; a pull through new addresses lifts only theirs. So the bar follows how
        // busy everyone but the new clients is (left out: they cannot raise their own bar).
        let activity = self.activity(WindowLen::OneHour, v.bytes, millis);
        let scaled = (thr as f64 * activity) as u64;
        (v.bytes > scaled).then_some((
            Threshold {
                bytes: scaled,
                kind: if thr > bar.floor {
                    ThresholdKind::Baseline
                } else {
                    ThresholdKind::Absolute
                },
                baseline_bytes: Some(q),
                quantile: Some(bar.quantile),
                factor: Some(bar.factor),
                samples: Some(n),
                reference: Some(Reference::NewClientCurve),
                activity: Some(activity),
            },
            v,
        ))
    }

    /// The service's own volume of a service rule's window, for re-checking open alerts.
    pub fn volume(&self, rule: RuleId, len: WindowLen, millis: u64) -> u64 {
        match rule {
            RuleId::NewDestinations => self.new_destinations.estimate(len, millis).bytes,
            RuleId::NewClientVolume => self.new_clients.hour(millis).bytes,
            _ => self.total.estimate(WindowLen::OneMinute, millis).bytes,
        }
    }

    /// The service's traffic (not internal) over `len`.
    pub fn activity_volume(&self, len: WindowLen, millis: u64) -> Volume {
        match len {
            WindowLen::OneMinute => self.total.estimate(len, millis),
            WindowLen::TenMinutes => self.activity.ten_minutes(millis),
            WindowLen::OneHour | WindowLen::OneDay => self.activity.hour(millis),
        }
    }

    /// How busy the service is with everyone but the judged peer over window `len`, against
    /// its usual for this hour of day: 1 when usual or quieter, up to [`MAX_ACTIVITY`]. The
    /// window's own span (the 24-hour window: the last hour), so that the first minute of a
    /// viral moment already raises the 1-minute bars. `own` is the judged peer's (or
    /// prefix's) volume over that span, left out so that a peer cannot raise its own bar.
    pub fn activity(&mut self, len: WindowLen, own: u64, millis: u64) -> f64 {
        let epoch = millis / 600_000;
        if self.usual.0 != epoch {
            let per_minute = self
                .time_of_day
                .median(millis / 1000, USUAL_MIN_SAMPLES)
                .unwrap_or(0);
            self.usual = (epoch, per_minute * 10);
        }
        let (total, tens) = match len {
            WindowLen::OneMinute => (self.total.estimate(len, millis).bytes, 0.1),
            WindowLen::TenMinutes => (self.activity.ten_minutes(millis).bytes, 1.0),
            WindowLen::OneHour | WindowLen::OneDay => (self.activity.hour(millis).bytes, 6.0),
        };
        let usual = self.usual.1 as f64 * tens;
        if usual <= 0.0 {
            return 1.0;
        }
        (total.saturating_sub(own) as f64 / usual).clamp(1.0, MAX_ACTIVITY)
    }

    /// The bar of a peer of `kind` for window `len` at `activity`: its population's (a
    /// `newcomer` client's with the newcomer's factor), and for a learned destination never
    /// below a client's (a known server gets at least the tolerance of a client). With the
    /// population it came from.
    pub fn bar(
        &mut self,
        kind: Kind,
        newcomer: bool,
        len: WindowLen,
        params: &Params,
        activity: f64,
    ) -> (population::Reference, Reference) {
        let (bar, reference) = if newcomer && kind == Kind::Clients {
            (&params.newcomers, Reference::Newcomers)
        } else {
            (params.bar(kind), kind.reference())
        };
        let own = self.populations.get_mut(kind).reference(len, bar, activity);
        if kind == Kind::Destinations {
            let clients =
                self.populations
                    .get_mut(Kind::Clients)
                    .reference(len, &params.peers, activity);
            if clients.bytes > own.bytes {
                return (clients, Reference::Clients);
            }
        }
        (own, reference)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_3_needs_a_minute_of_crossings_in_a_row() {
        let mut svc = ServiceState::new(Arc::from("messaging"));
        let t = 1_000_000_000;
        assert!(!svc.baseline_sustained(t), "the first crossing");
        assert!(!svc.baseline_sustained(t + 30_000));
        assert!(svc.baseline_sustained(t + 60_000), "a minute of crossings");
        // A gap of more than a minute starts a new run.
        assert!(!svc.baseline_sustained(t + 200_000));
        assert!(!svc.baseline_sustained(t + 250_000));
        assert!(svc.baseline_sustained(t + 260_000));
    }

    #[test]
    fn windows_round_trip_and_the_encoding_before_breadth_still_loads() {
        let mut svc = ServiceState::new(Arc::from("messaging"));
        let t = 20_000 * 86_400 + 3600;
        svc.count_client_minute(t);
        svc.count_client_minute(t);
        svc.total.roll(WindowLen::OneMinute, t);
        svc.total.add(5000, 5);
        let bytes = svc.encode_windows();
        assert_eq!(bytes.len(), WINDOWS_LEN);
        let mut back = ServiceState::new(Arc::from("messaging"));
        back.decode_windows(&bytes).unwrap();
        assert_eq!(back.client_minute, svc.client_minute);
        assert_eq!(back.client_minutes.hour(t * 1000).bytes, 2);
        // A database written before client breadth: its windows load, breadth starts empty.
        let mut old = ServiceState::new(Arc::from("messaging"));
        old.decode_windows(&bytes[..WINDOWS_LEN_V1]).unwrap();
        assert_eq!(old.total, svc.total);
        assert_eq!(old.client_minutes.hour(t * 1000).bytes, 0);
        assert!(old.decode_windows(&bytes[..WINDOWS_LEN_V1 - 1]).is_none());
    }
}
