//! The detector: consumes `FlowSample`s on their own time (the window end), keeps sliding
//! windows per (service, peer), classes destinations, learns baselines and raises alerts.
//! Pure: no I/O, no clock. The agent and `replay` feed it and store what it reports, so the
//! same code runs live and on recorded data.

pub mod alerts;
pub mod baseline;
pub mod classes;
pub mod peers;
pub mod rules;
pub mod services;
pub mod settings;
#[cfg(test)]
pub(crate) mod tests;
pub mod window;

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use jiff::Timestamp;
use rustc_hash::FxHashMap;
use serde::Serialize;

use self::{
    alerts::{
        AlertBook, AlertEvent, AlertKey, Condition, Lifecycle, Peer, Threshold, ThresholdKind,
    },
    baseline::{Bar, Distribution, PEER_SIGFIG, TimeOfDay},
    classes::{Classifier, DestinationClass, canonical},
    peers::{DIRTY, LEARNED, PeerKey, PeerState},
    rules::{RuleId, Severity},
    services::ServiceMatcher,
    settings::{AlertsConfig, RulesConfig},
    window::{Window, WindowLen},
};
use crate::{
    config::Config,
    flow::{FlowSample, Owner},
};

/// Rule parameters as plain numbers (the configuration keeps spans and units).
#[derive(Clone, Debug, PartialEq)]
struct Params {
    unknown: Option<(Severity, [(WindowLen, u64); 3])>,
    outlier: Option<Outlier>,
    baseline: Option<Baseline>,
    new_dest: Option<(Severity, WindowLen, u64)>,
    drip: Option<(Severity, u64)>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Outlier {
    severity: Severity,
    window: WindowLen,
    bar: Bar,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Baseline {
    severity: Severity,
    bar: Bar,
}

impl Params {
    fn new(rules: &RulesConfig) -> Self {
        let unknown = &rules.unknown_volume;
        let outlier = &rules.peer_outlier;
        let baseline = &rules.service_baseline;
        let new_dest = &rules.new_destinations;
        let drip = &rules.slow_drip;
        Self {
            unknown: unknown.enabled.then_some((
                unknown.severity,
                [
                    (WindowLen::OneMinute, unknown.one_minute.as_u64()),
                    (WindowLen::TenMinutes, unknown.ten_minutes.as_u64()),
                    (WindowLen::OneHour, unknown.one_hour.as_u64()),
                ],
            )),
            outlier: outlier.enabled.then_some(Outlier {
                severity: outlier.severity,
                window: *outlier.window.get_ref(),
                bar: Bar {
                    quantile: *outlier.quantile.get_ref(),
                    factor: *outlier.factor.get_ref(),
                    floor: outlier.floor.as_u64(),
                    min_samples: outlier.min_samples,
                },
            }),
            baseline: baseline.enabled.then_some(Baseline {
                severity: baseline.severity,
                bar: Bar {
                    quantile: *baseline.quantile.get_ref(),
                    factor: *baseline.factor.get_ref(),
                    floor: baseline.floor.as_u64(),
                    min_samples: baseline.min_samples,
                },
            }),
            new_dest: new_dest.enabled.then_some((
                new_dest.severity,
                *new_dest.window.get_ref(),
                u64::from(*new_dest.max_new.get_ref()),
            )),
            drip: drip
                .enabled
                .then_some((drip.severity, drip.threshold.as_u64())),
        }
    }

    /// The window whose completed buckets feed rule 2's distribution.
    fn outlier_window(&self) -> WindowLen {
        self.outlier.map_or(WindowLen::OneMinute, |o| o.window)
    }
}

/// Per-service state.
#[derive(Clone, Debug)]
pub struct ServiceState {
    pub name: Arc<str>,
    /// Unix seconds of the service's first sample, and the end of its learning period.
    pub first_seen: u64,
    pub learn_until: u64,
    /// Non-internal bytes per minute (rule 3).
    pub total: Window,
    /// First-seen unknown destinations (rule 4), counted as "bytes".
    pub new_destinations: Window,
    /// The latest few first-seen destinations, for rule 4's alert.
    pub recent_new: Vec<IpAddr>,
    /// Per-peer window volumes (rule 2).
    pub peer_volumes: Distribution,
    /// Per-minute totals by hour of day (rule 3).
    pub time_of_day: TimeOfDay,
    pub dirty: bool,
    /// Bytes since the agent started, by destination class (for the metrics endpoint; not
    /// persisted: Prometheus counters restart with the process).
    pub bytes_by_class: [u64; 4],
}

impl ServiceState {
    fn new(name: Arc<str>) -> Self {
        Self {
            name,
            first_seen: 0,
            learn_until: 0,
            total: Window::default(),
            new_destinations: Window::default(),
            recent_new: Vec::new(),
            peer_volumes: Distribution::new(PEER_SIGFIG),
            time_of_day: TimeOfDay::default(),
            dirty: true,
            bytes_by_class: [0; 4],
        }
    }

    pub fn learning(&self, secs: u64) -> bool {
        secs < self.learn_until
    }
}

/// Counters of the detector, cumulative.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DetectorStats {
    pub samples: u64,
    pub bytes: u64,
    /// Samples without a destination (untracked volume): not analysed per peer.
    pub untracked_samples: u64,
    /// Samples of processes that belong to no analysed service.
    pub unwatched_samples: u64,
    pub services: u64,
    /// (service, peer) pairs tracked.
    pub peers: u64,
    pub learned: u64,
    /// Pairs forgotten after `FORGET_AFTER_SECS` without traffic (not learned ones).
    pub forgotten: u64,
}

/// A destination learned for a service (to be stored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Learned {
    pub service: Arc<str>,
    pub addr: IpAddr,
    pub at: Timestamp,
}

/// How many owners to remember by pointer before starting over (processes come and go).
const OWNER_CACHE_MAX: usize = 65_536;
/// A peer that is not learned and has sent nothing for this long (longer than the longest
/// window, so every window is empty) is forgotten: memory stays bounded on a server whose
/// clients come and go. It is "new" again if it comes back.
pub const FORGET_AFTER_SECS: u64 = 25 * 3600;
/// How often (simulated time) forgotten peers are swept.
const SWEEP_EVERY_SECS: i64 = 600;

/// Samples whose peers are looked up together before they are processed (see `touch`).
const TOUCH_AHEAD: usize = 16;

/// How many recent first-seen destinations a rule-4 alert lists.
const EXAMPLES: usize = 5;

fn lifecycle(a: &AlertsConfig) -> Lifecycle {
    Lifecycle {
        resolve_after_secs: a.resolve_after.get_ref().0.as_secs() as i64,
        update_every_secs: a.update_every.get_ref().0.as_secs() as i64,
        max_new_per_minute: *a.max_new_per_minute.get_ref(),
    }
}

pub struct Detector {
    params: Params,
    learning_secs: u64,
    learn_new_services: bool,
    /// End of the host's learning period (Unix seconds; 0 until the first sample).
    host_learn_until: u64,
    matcher: ServiceMatcher,
    classifier: Classifier,
    /// Owner pointer -> (owner kept alive so the pointer stays unique, service id).
    owners: FxHashMap<usize, (Arc<Owner>, Option<u32>)>,
    service_ids: HashMap<Arc<str>, u32>,
    services: Vec<ServiceState>,
    peers: FxHashMap<PeerKey, PeerState>,
    book: AlertBook,
    learned: Vec<Learned>,
    /// Pairs forgotten since the last call to `take_forgotten` (for the store).
    forgotten: Vec<(Arc<str>, IpAddr)>,
    now_ms: u64,
    last_tick: i64,
    last_sweep: i64,
    pub stats: DetectorStats,
}

impl Detector {
    pub fn new(config: &Config) -> Self {
        let a = &config.alerts;
        Self {
            params: Params::new(&config.rules),
            learning_secs: config.detect.learning_period.get_ref().0.as_secs(),
            learn_new_services: config.detect.learn_new_services,
            host_learn_until: 0,
            matcher: ServiceMatcher::new(&config.services, config.detect.group_unmatched),
            classifier: Classifier::new(&config.destinations),
            owners: FxHashMap::default(),
            service_ids: HashMap::new(),
            services: Vec::new(),
            peers: FxHashMap::default(),
            book: AlertBook::new(lifecycle(a)),
            learned: Vec::new(),
            forgotten: Vec::new(),
            now_ms: 0,
            last_tick: i64::MIN,
            last_sweep: 0,
            stats: DetectorStats::default(),
        }
    }

    /// Applies a reloaded configuration: rules, learning settings, services, destinations
    /// and the alert lifecycle change now; what was observed (services, peers, windows,
    /// baselines, learned destinations, open alerts) is kept. Owners are matched again
    /// against the new `[[services]]`. A service already learning keeps its end of learning
    /// (a new `learning_period` applies to services that start learning after).
    pub fn reconfigure(&mut self, config: &Config) {
        self.params = Params::new(&config.rules);
        self.learning_secs = config.detect.learning_period.get_ref().0.as_secs();
        self.learn_new_services = config.detect.learn_new_services;
        self.matcher = ServiceMatcher::new(&config.services, config.detect.group_unmatched);
        self.owners.clear();
        let mut classifier = Classifier::new(&config.destinations);
        classifier.keep_resolved_from(&self.classifier);
        self.classifier = classifier;
        self.book.set_lifecycle(lifecycle(&config.alerts));
    }

    pub fn classifier_mut(&mut self) -> &mut Classifier {
        &mut self.classifier
    }

    pub fn book(&self) -> &AlertBook {
        &self.book
    }

    pub fn book_mut(&mut self) -> &mut AlertBook {
        &mut self.book
    }

    /// The latest sample time seen (simulated "now").
    pub fn now(&self) -> Timestamp {
        timestamp_ms(self.now_ms)
    }

    pub fn services(&self) -> &[ServiceState] {
        &self.services
    }

    pub fn services_mut(&mut self) -> &mut [ServiceState] {
        &mut self.services
    }

    pub fn peers_mut(&mut self) -> &mut FxHashMap<PeerKey, PeerState> {
        &mut self.peers
    }

    /// End of the host's learning period (Unix seconds), 0 before the first sample.
    pub fn host_learn_until(&self) -> u64 {
        self.host_learn_until
    }

    /// Restores the host's learning period (from the state database).
    pub fn set_host_learn_until(&mut self, secs: u64) {
        self.host_learn_until = secs;
    }

    /// Pairs forgotten since the last call (their checkpoints can go).
    pub fn take_forgotten(&mut self) -> Vec<(Arc<str>, IpAddr)> {
        std::mem::take(&mut self.forgotten)
    }

    /// Destinations learned since the last call.
    pub fn take_learned(&mut self) -> Vec<Learned> {
        std::mem::take(&mut self.learned)
    }

    /// The id of service `name`, created (not yet seen) if new.
    pub fn service_id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.service_ids.get(name) {
            return id;
        }
        let id = self.services.len() as u32;
        let name: Arc<str> = Arc::from(name);
        self.services.push(ServiceState::new(name.clone()));
        self.service_ids.insert(name, id);
        self.stats.services += 1;
        id
    }

    /// Marks `addr` learned for `service` (from the database, or confirmed by an operator).
    pub fn learn(&mut self, service: &str, addr: IpAddr) {
        let sid = self.service_id(service);
        let peer = self
            .peers
            .entry(PeerKey::new(sid, canonical(addr)))
            .or_default();
        peer.flags |= LEARNED;
    }

    /// Feeds one poll window (or any batch) of samples, then resolves quiet alerts. Alert
    /// events are appended to `out` in a deterministic order.
    pub fn observe(&mut self, samples: &[FlowSample], out: &mut Vec<AlertEvent>) {
        for chunk in samples.chunks(TOUCH_AHEAD) {
            self.touch(chunk);
            for s in chunk {
                self.observe_one(s, out);
            }
        }
        self.tick(out);
    }

    /// Looks up the peers of a few samples before processing them. With a million peers
    /// every lookup is a cache miss; issued back to back, the misses overlap instead of
    /// waiting one after the other inside the long per-sample work (measured: the probe's
    /// loads were about 60 % of the detector's time at 1M peers).
    fn touch(&mut self, chunk: &[FlowSample]) {
        let mut sum = 0u8;
        for s in chunk {
            let (Some(remote), Some(sid)) = (s.remote, self.cached_service(&s.owner)) else {
                continue;
            };
            if let Some(p) = self.peers.get(&PeerKey::new(sid, canonical(remote.addr))) {
                sum ^= p.flags;
            }
        }
        std::hint::black_box(sum);
    }

    /// The service of an owner already seen (no matching, no allocation).
    fn cached_service(&self, owner: &Arc<Owner>) -> Option<u32> {
        self.owners
            .get(&(Arc::as_ptr(owner) as usize))
            .and_then(|(_, sid)| *sid)
    }

    /// Re-checks open alerts against their windows (which decay with time) and resolves
    /// those whose condition has not held for `resolve_after`; at most once per simulated
    /// second.
    pub fn tick(&mut self, out: &mut Vec<AlertEvent>) {
        let now = self.now();
        self.stats.peers = self.peers.len() as u64;
        if now.as_second() <= self.last_tick {
            return;
        }
        self.last_tick = now.as_second();
        for (key, len, threshold) in self.book.open_conditions() {
            let Some(&sid) = self.service_ids.get(&*key.service) else {
                continue;
            };
            let window = match key.peer {
                Some(addr) => self
                    .peers
                    .get(&PeerKey::new(sid, addr))
                    .map(|p| *p.window(len)),
                None if key.rule == RuleId::NewDestinations => {
                    Some(self.services[sid as usize].new_destinations)
                }
                None => Some(self.services[sid as usize].total),
            };
            if window.is_some_and(|w| w.estimate(len, self.now_ms).bytes > threshold) {
                self.book.still_exceeded(&key, now);
            }
        }
        self.book.tick(now, out);
        if now.as_second() - self.last_sweep >= SWEEP_EVERY_SECS {
            self.last_sweep = now.as_second();
            self.sweep();
        }
    }

    /// Forgets pairs idle for `FORGET_AFTER_SECS` that are not learned.
    fn sweep(&mut self) {
        let horizon = self.now_ms.saturating_sub(FORGET_AFTER_SECS * 1000);
        let services = &self.services;
        let forgotten = &mut self.forgotten;
        let before = self.peers.len();
        self.peers.retain(|key, p| {
            let keep = p.learned() || p.last_seen_ms >= horizon;
            if !keep && let Some(svc) = services.get(key.service as usize) {
                forgotten.push((svc.name.clone(), key.ip()));
            }
            keep
        });
        self.stats.forgotten += (before - self.peers.len()) as u64;
        self.stats.peers = self.peers.len() as u64;
    }

    fn service_of(&mut self, owner: &Arc<Owner>) -> Option<u32> {
        let ptr = Arc::as_ptr(owner) as usize;
        if let Some((_, sid)) = self.owners.get(&ptr) {
            return *sid;
        }
        if self.owners.len() >= OWNER_CACHE_MAX {
            self.owners.clear();
        }
        let sid = self
            .matcher
            .service_of(owner)
            .map(str::to_owned)
            .map(|name| self.service_id(&name));
        self.owners.insert(ptr, (owner.clone(), sid));
        sid
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one pass over the sample: the rules share the peer and service borrows"
    )]
    fn observe_one(&mut self, s: &FlowSample, out: &mut Vec<AlertEvent>) {
        self.stats.samples += 1;
        self.stats.bytes += s.bytes;
        let Some(remote) = s.remote else {
            self.stats.untracked_samples += 1;
            return;
        };
        let Some(sid) = self.service_of(&s.owner) else {
            self.stats.unwatched_samples += 1;
            return;
        };
        // The bytes were sent during [window_start, window_end]: they enter the windows at
        // the start (so a window boundary at the end does not count them twice) and are
        // judged at the end, when they are known.
        let t_ms = u64::try_from(s.window_end.as_millisecond()).unwrap_or(0);
        let t = u64::try_from(s.window_start.as_second())
            .unwrap_or(0)
            .min(t_ms / 1000);
        self.now_ms = self.now_ms.max(t_ms);
        let now = timestamp_ms(t_ms);
        let params = &self.params;
        let svc = &mut self.services[sid as usize];
        if svc.first_seen == 0 {
            if self.host_learn_until == 0 {
                self.host_learn_until = t + self.learning_secs;
            }
            svc.first_seen = t;
            // Services present while the host learns, configured ones, and (if asked) any
            // new one get a learning period; others are judged from their first packet.
            let learns = t < self.host_learn_until
                || self.learn_new_services
                || self.matcher.is_configured(&svc.name);
            svc.learn_until = if learns { t + self.learning_secs } else { t };
            svc.dirty = true;
        }
        let learning = svc.learning(t);
        let addr = canonical(remote.addr);
        let key = PeerKey::new(sid, addr);
        let peer = self.peers.entry(key).or_default();
        let is_new = peer.first_seen == 0;
        if is_new {
            peer.first_seen = t;
        }
        peer.last_seen_ms = peer.last_seen_ms.max(t_ms);
        peer.port = remote.port;
        peer.flags |= DIRTY;
        if peer
            .owner
            .as_ref()
            .is_none_or(|o| !Arc::ptr_eq(o, &s.owner))
        {
            peer.owner = Some(s.owner.clone());
        }
        if let Some(name) = &s.remote_name
            && peer.name.as_ref().is_none_or(|n| !Arc::ptr_eq(n, name))
        {
            peer.name = Some(name.clone());
        }
        let name = peer.name.as_deref();
        let class = match self
            .classifier
            .static_class(&svc.name, addr, remote.port, name)
        {
            Some(c) => c,
            None if peer.flags & LEARNED != 0 => DestinationClass::Learned,
            None if learning => {
                peer.flags |= LEARNED;
                self.stats.learned += 1;
                self.learned.push(Learned {
                    service: svc.name.clone(),
                    addr,
                    at: now,
                });
                DestinationClass::Learned
            }
            None => DestinationClass::Unknown,
        };
        svc.bytes_by_class[class as usize] += s.bytes;
        let outlier_window = params.outlier_window();
        for len in WindowLen::ALL {
            let completed = peer.windows[len.index()].roll(len, t);
            if len == outlier_window
                && class != DestinationClass::Internal
                && let Some(done) = completed
            {
                // Learn from ordinary windows only: an outlier must not raise the bar.
                let anomalous = params.outlier.is_some_and(|o| {
                    !learning
                        && baseline::threshold(&mut svc.peer_volumes, &o.bar)
                            .is_some_and(|(thr, _)| done.bytes > thr)
                });
                if !anomalous {
                    svc.peer_volumes.record(done.bytes);
                    svc.dirty = true;
                }
            }
            peer.windows[len.index()].add(s.bytes, s.packets);
        }
        if class == DestinationClass::Internal {
            return;
        }
        if let Some(done) = svc.total.roll(WindowLen::OneMinute, t) {
            let anomalous = params.baseline.is_some_and(|b| {
                !learning
                    && svc
                        .time_of_day
                        .threshold(t, &b.bar)
                        .is_some_and(|(thr, _, _)| done.bytes > thr)
            });
            if !anomalous {
                svc.time_of_day
                    .record(u64::from(done.epoch) * 60, done.bytes);
                svc.dirty = true;
            }
        }
        svc.total.add(s.bytes, s.packets);
        if let Some((_, len, _)) = params.new_dest {
            svc.new_destinations.roll(len, t);
            if is_new && class == DestinationClass::Unknown && !learning {
                svc.new_destinations.add(1, 0);
                if svc.recent_new.len() >= EXAMPLES {
                    svc.recent_new.remove(0);
                }
                svc.recent_new.push(addr);
            }
        }
        if learning || class == DestinationClass::Allowlisted {
            return;
        }

        // Per-peer rules. Each builds a condition only when its threshold is crossed.
        let peer_info = || Peer {
            addr,
            port: remote.port,
            name: peer.name.as_deref().map(str::to_owned),
            class,
        };
        let mut conditions: Vec<Condition> = Vec::new();
        let peer_condition =
            |rule: RuleId, severity: Severity, len: WindowLen, threshold: Threshold| {
                let v = peer.window(len).estimate(len, t_ms);
                Condition {
                    key: AlertKey {
                        rule,
                        service: svc.name.clone(),
                        peer: Some(addr),
                    },
                    severity,
                    process: peer.owner.clone(),
                    peer: Some(peer_info()),
                    window: len,
                    bytes: v.bytes,
                    packets: v.packets,
                    sample_bytes: s.bytes,
                    threshold,
                    new_destinations: None,
                    examples: Vec::new(),
                    first_seen: timestamp_ms(peer.first_seen * 1000),
                    last_seen: timestamp_ms(peer.last_seen_ms),
                }
            };
        if class == DestinationClass::Unknown
            && let Some((severity, windows)) = params.unknown
            && let Some(&(len, limit)) = windows
                .iter()
                .find(|(len, limit)| peer.window(*len).estimate(*len, t_ms).bytes > *limit)
        {
            conditions.push(peer_condition(
                RuleId::UnknownVolume,
                severity,
                len,
                absolute(limit),
            ));
        }
        if let Some(o) = params.outlier {
            let v = peer.window(o.window).estimate(o.window, t_ms).bytes;
            if v > o.bar.floor
                && let Some((thr, q)) = baseline::threshold(&mut svc.peer_volumes, &o.bar)
                && v > thr
            {
                let threshold = Threshold {
                    bytes: thr,
                    kind: ThresholdKind::Baseline,
                    baseline_bytes: Some(q),
                    quantile: Some(o.bar.quantile),
                    factor: Some(o.bar.factor),
                    samples: Some(svc.peer_volumes.len()),
                };
                conditions.push(peer_condition(
                    RuleId::PeerOutlier,
                    o.severity,
                    o.window,
                    threshold,
                ));
            }
        }
        if let Some((severity, limit)) = params.drip
            && peer
                .window(WindowLen::OneDay)
                .estimate(WindowLen::OneDay, t_ms)
                .bytes
                > limit
        {
            conditions.push(peer_condition(
                RuleId::SlowDrip,
                severity,
                WindowLen::OneDay,
                absolute(limit),
            ));
        }

        // Service rules.
        let service_condition =
            |rule: RuleId, severity: Severity, len: WindowLen, w: &Window, threshold: Threshold| {
                let v = w.estimate(len, t_ms);
                Condition {
                    key: AlertKey {
                        rule,
                        service: svc.name.clone(),
                        peer: None,
                    },
                    severity,
                    process: Some(s.owner.clone()),
                    peer: None,
                    window: len,
                    bytes: v.bytes,
                    packets: v.packets,
                    sample_bytes: s.bytes,
                    threshold,
                    new_destinations: None,
                    examples: Vec::new(),
                    // The opening time; updates keep it.
                    first_seen: now,
                    last_seen: now,
                }
            };
        if let Some(b) = params.baseline {
            let v = svc.total.estimate(WindowLen::OneMinute, t_ms).bytes;
            if v > b.bar.floor
                && let Some((thr, q, n)) = svc.time_of_day.threshold(t, &b.bar)
                && v > thr
            {
                let threshold = Threshold {
                    bytes: thr,
                    kind: ThresholdKind::Baseline,
                    baseline_bytes: Some(q),
                    quantile: Some(b.bar.quantile),
                    factor: Some(b.bar.factor),
                    samples: Some(n),
                };
                conditions.push(service_condition(
                    RuleId::ServiceBaseline,
                    b.severity,
                    WindowLen::OneMinute,
                    &svc.total,
                    threshold,
                ));
            }
        }
        if let Some((severity, len, max_new)) = params.new_dest {
            let count = svc.new_destinations.estimate(len, t_ms).bytes;
            if count > max_new {
                let mut c = service_condition(
                    RuleId::NewDestinations,
                    severity,
                    len,
                    &svc.total,
                    Threshold {
                        bytes: max_new,
                        kind: ThresholdKind::Count,
                        baseline_bytes: None,
                        quantile: None,
                        factor: None,
                        samples: None,
                    },
                );
                c.new_destinations = Some(count);
                c.examples.clone_from(&svc.recent_new);
                let total = svc.total.estimate(len, t_ms);
                (c.bytes, c.packets) = (total.bytes, total.packets);
                conditions.push(c);
            }
        }
        for c in conditions {
            if let Some(event) = self.book.raise(c, now) {
                out.push(event);
            }
        }
    }
}

fn absolute(bytes: u64) -> Threshold {
    Threshold {
        bytes,
        kind: ThresholdKind::Absolute,
        baseline_bytes: None,
        quantile: None,
        factor: None,
        samples: None,
    }
}

fn timestamp_ms(ms: u64) -> Timestamp {
    Timestamp::from_millisecond(i64::try_from(ms).unwrap_or(i64::MAX))
        .unwrap_or(Timestamp::UNIX_EPOCH)
}
