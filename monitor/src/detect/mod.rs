//! The detector: consumes `FlowSample`s on their own time (the window end), keeps sliding
//! windows per (service, peer) and per (service, network prefix), learns what each kind of
//! peer usually receives, and raises alerts. Pure: no I/O, no clock. The agent and `replay`
//! feed it and store what it reports, so the same code runs live and on recorded data.
//!
//! Every peer is judged against the right reference (see `judge`): a destination the
//! service connected to against what it learned; a client against the population of the
//! service's clients; several clients of one network prefix together against the population
//! of prefixes; a heavy peer (NAT gateway, backup target) against its own curve.

pub mod acquaintances;
pub mod alerts;
pub mod baseline;
pub mod classes;
#[cfg(test)]
mod client_tests;
pub mod curve;
mod judge;
mod learn;
pub mod params;
pub mod peers;
pub mod population;
mod prefixes;
pub mod ring;
pub mod rule_settings;
pub mod rules;
mod service;
pub mod services;
pub mod settings;
pub mod table;
#[cfg(test)]
pub(crate) mod tests;
pub mod window;

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use jiff::Timestamp;
use rustc_hash::FxHashMap;
use serde::Serialize;

pub use self::service::ServiceState;
use self::{
    acquaintances::{Acquaintances, Met},
    alerts::{
        AlertBook, AlertEvent, AlertKey, Condition, Lifecycle, Peer, Reference, Threshold,
        ThresholdKind,
    },
    classes::{Classifier, DestinationClass, canonical},
    curve::Curve,
    judge::Crossing,
    params::Params,
    peers::{
        DAY_PENDING, DIRTY, EXEMPT, HEAVY, HOUR_PENDING, INITIATED, LEARNED, PeerKey, PeerState,
        SERVED, VOUCHED,
    },
    population::Kind,
    rules::RuleId,
    services::ServiceMatcher,
    settings::AlertsConfig,
    table::PeerTable,
    window::WindowLen,
};
use crate::{
    config::Config,
    flow::{Direction, FlowSample, Owner, Protocol},
};

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
    /// Prefix groups tracked (networks with two or more clients of one service).
    pub prefix_groups: u64,
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
/// A peer that is neither learned nor heavy and has sent nothing for this long (longer than
/// the longest window, so every window is empty) is forgotten: memory stays bounded on a
/// server whose clients come and go. It is "new" again if it comes back.
pub const FORGET_AFTER_SECS: u64 = 25 * 3600;
/// How often (simulated time) quiet peers teach their last hour and forgotten ones go.
const SWEEP_EVERY_SECS: i64 = 600;

/// Samples whose peers are looked up together before they are processed (see `touch`).
const TOUCH_AHEAD: usize = 16;

/// How many recent first-seen destinations a rule-4 alert lists.
const EXAMPLES: usize = 5;

/// A client is "new" (rule 8, and a newcomer for rule 2) for this long after its first
/// sample.
const NEW_CLIENT_SECS: u64 = 86_400;

/// How long an operator-confirmed peer's curve learns freely.
const CONFIRMED_LEARNING_SECS: u64 = 86_400;

fn lifecycle(a: &AlertsConfig) -> Lifecycle {
    Lifecycle {
        resolve_after_secs: a.resolve_after.get_ref().0.as_secs() as i64,
        update_every_secs: a.update_every.get_ref().0.as_secs() as i64,
        max_new_per_minute: *a.max_new_per_minute.get_ref(),
    }
}

/// What one sample is to its service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Internal or allowlisted: counted, never judged.
    Exempt,
    /// A client (the peer came to the service).
    Client,
    /// A destination the service learned.
    Destination,
    /// A destination the service connected to and never learned.
    Unknown,
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
    peers: PeerTable,
    /// Prefixes with a single client so far -> that client's slot (a group is made when a
    /// second client of the prefix appears).
    first_members: FxHashMap<PeerKey, u32>,
    /// Client identities met before, beyond the peer table's memory.
    acquaintances: Acquaintances,
    /// Unix day of the latest expiry of `acquaintances`.
    acquaintances_expired_day: u64,
    groups: u64,
    book: AlertBook,
    learned: Vec<Learned>,
    /// Pairs forgotten since the last call to `take_forgotten` (for the store).
    forgotten: Vec<(Arc<str>, PeerKey)>,
    now_ms: u64,
    last_tick: i64,
    last_sweep: i64,
    pub stats: DetectorStats,
}

impl Detector {
    pub fn new(config: &Config) -> Self {
        let a = &config.alerts;
        Self {
            params: Params::new(&config.rules, &config.detect),
            learning_secs: config.detect.learning_period.get_ref().0.as_secs(),
            learn_new_services: config.detect.learn_new_services,
            host_learn_until: 0,
            matcher: ServiceMatcher::new(&config.services, config.detect.group_unmatched),
            classifier: Classifier::new(&config.destinations),
            owners: FxHashMap::default(),
            service_ids: HashMap::new(),
            services: Vec::new(),
            peers: PeerTable::default(),
            first_members: FxHashMap::default(),
            acquaintances: Acquaintances::default(),
            acquaintances_expired_day: 0,
            groups: 0,
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
    /// (a new `learning_period` applies to services that start learning after). New prefix
    /// lengths make groups from the next samples on.
    pub fn reconfigure(&mut self, config: &Config) {
        self.params = Params::new(&config.rules, &config.detect);
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

    /// The samples' time, in Unix seconds (0 before the first).
    pub fn now_secs(&self) -> u64 {
        self.now_ms / 1000
    }

    pub fn services(&self) -> &[ServiceState] {
        &self.services
    }

    pub fn services_mut(&mut self) -> &mut [ServiceState] {
        &mut self.services
    }

    pub fn peers(&self) -> &PeerTable {
        &self.peers
    }

    pub fn acquaintances(&self) -> &Acquaintances {
        &self.acquaintances
    }

    pub fn acquaintances_mut(&mut self) -> &mut Acquaintances {
        &mut self.acquaintances
    }

    pub fn peers_mut(&mut self) -> &mut PeerTable {
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

    /// The latest sweep (Unix seconds of the samples' time), for checkpoints.
    pub fn last_sweep(&self) -> i64 {
        self.last_sweep
    }

    pub fn set_last_sweep(&mut self, secs: i64) {
        self.last_sweep = secs;
    }

    /// Pairs and groups forgotten since the last call (their checkpoints can go).
    pub fn take_forgotten(&mut self) -> Vec<(Arc<str>, PeerKey)> {
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

    /// Marks `addr` learned for `service` (a destination learned before a restart, from the
    /// database).
    pub fn learn(&mut self, service: &str, addr: IpAddr) {
        let sid = self.service_id(service);
        let (id, _) = self.peers.get_or_insert(PeerKey::new(sid, canonical(addr)));
        self.peers.slot_mut(id).flags |= LEARNED;
    }

    /// An operator confirmed that `addr` (an address, or a prefix group's network when
    /// `prefix` is set) is a normal peer of `service` (`alerts ack --learn`): it becomes a
    /// learned destination; a client or a prefix also becomes heavy, with its own curve
    /// starting at what it receives now and learning freely for a day.
    pub fn confirm(&mut self, service: &str, addr: IpAddr, prefix: Option<u8>) {
        let sid = self.service_id(service);
        let key = match prefix {
            Some(len) => PeerKey::network(sid, canonical(addr), len),
            None => PeerKey::new(sid, canonical(addr)),
        };
        let now = self.now_ms / 1000;
        let (id, _) = self.peers.get_or_insert(key);
        let peer = self.peers.slot_mut(id);
        if !key.is_group() {
            peer.flags |= LEARNED | DIRTY;
        }
        if key.is_group() || peer.has(SERVED) {
            peer.flags |= HEAVY | DIRTY;
            let mut curve = peer
                .curve
                .take()
                .map_or_else(|| Curve::learning_until(now), |c| *c);
            curve.learn_freely_until(now + CONFIRMED_LEARNING_SECS);
            let busiest = (0..7u64)
                .filter_map(|k| peer.ring.epoch().checked_sub(k))
                .map(|e| peer.ring.slot(e).0)
                .max()
                .unwrap_or(0);
            for hour in 0..24u64 {
                curve.learn(hour * 3600, busiest, now);
            }
            peer.curve = Some(Box::new(curve));
        }
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
    /// every lookup is a cache miss (the index, then the slot); issued back to back, the
    /// misses overlap instead of waiting one after the other inside the long per-sample
    /// work (measured: the probe's loads were about 60 % of the detector's time at 1M).
    fn touch(&mut self, chunk: &[FlowSample]) {
        let mut sum = 0u16;
        let mut ids = [0u32; TOUCH_AHEAD];
        let mut n = 0;
        for s in chunk {
            let (Some(remote), Some(sid)) = (s.remote, self.cached_service(&s.owner)) else {
                continue;
            };
            let addr = canonical(remote.addr);
            if let Some(id) = self.peers.id(&PeerKey::new(sid, addr)) {
                self.peers.prefetch(id);
                ids[n] = id + 1;
                n += 1;
                continue;
            }
            // A new peer: its prefix groups (or the first member that stands for one) are
            // looked up now.
            let lens = if addr.is_ipv4() {
                &self.params.ipv4_prefixes
            } else {
                &self.params.ipv6_prefixes
            };
            for &len in lens {
                let key = PeerKey::network(sid, addr, len);
                match self.peers.id(&key) {
                    Some(gid) => self.peers.prefetch(gid),
                    None => sum ^= self.first_members.get(&key).map_or(0, |&m| m as u16),
                }
            }
        }
        // Known peers name their groups' slots: those load while the chunk is processed.
        for &id in &ids[..n] {
            if id != 0 {
                let slots = self.peers.slot(id - 1).client().map(|c| c.group_slots);
                for gid in slots.into_iter().flatten() {
                    if gid != 0 && self.peers.iter_slot(gid - 1).is_some() {
                        self.peers.prefetch(gid - 1);
                    }
                }
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
    /// second. Every ten minutes, quiet peers teach their last hour and idle ones go.
    pub fn tick(&mut self, out: &mut Vec<AlertEvent>) {
        let now = self.now();
        self.stats.peers = self.peers.len() as u64 - self.groups;
        self.stats.prefix_groups = self.groups;
        if now.as_second() <= self.last_tick {
            return;
        }
        self.last_tick = now.as_second();
        for (key, len, threshold) in self.book.open_conditions() {
            if self.still_holds(&key, len, threshold) {
                self.book.still_exceeded(&key, now);
            }
        }
        self.book.tick(now, out);
        // On ten-minute boundaries of the samples' time (stored with the checkpoints), so a
        // restart sweeps when a run without one would have.
        if now.as_second().div_euclid(SWEEP_EVERY_SECS)
            > self.last_sweep.div_euclid(SWEEP_EVERY_SECS)
        {
            self.last_sweep = now.as_second();
            self.sweep();
        }
    }

    /// Whether the condition of an open alert still holds now. A population or curve rule
    /// holds while any judged window of the peer is above its bar (so a pull's alert stays
    /// open while its bytes are in the 1h and 24h windows, instead of resolving and opening
    /// again on the peer's next ordinary request); the others while the alert's own window
    /// is above the alert's threshold.
    fn still_holds(&mut self, key: &AlertKey, len: WindowLen, threshold: u64) -> bool {
        let Some(&sid) = self.service_ids.get(&*key.service) else {
            return false;
        };
        let Some(addr) = key.peer else {
            return self.services[sid as usize].volume(key.rule, len, self.now_ms) > threshold;
        };
        let pkey = match key.prefix {
            Some(bits) => PeerKey::network(sid, addr, bits),
            None => PeerKey::new(sid, addr),
        };
        let Some(id) = self.peers.id(&pkey) else {
            return false;
        };
        let entity = self.peers.slot(id);
        if !matches!(
            key.rule,
            RuleId::PeerOutlier | RuleId::PrefixOutlier | RuleId::PeerRise
        ) {
            return entity.volume(len, self.now_ms).bytes > threshold;
        }
        let kind = if pkey.is_group() {
            Kind::Prefixes
        } else if entity.learned() {
            Kind::Destinations
        } else {
            Kind::Clients
        };
        let excluded = if pkey.is_group() {
            let (svc, t) = (&self.services[sid as usize], self.now_ms / 1000);
            prefixes::excluded(&self.peers, entity, t, |m| !newcomer(m, svc, t))
        } else {
            prefixes::Excluded::NONE
        };
        let newcomer = kind == Kind::Clients
            && newcomer(entity, &self.services[sid as usize], self.now_ms / 1000);
        let svc = &mut self.services[sid as usize];
        judge::volume(
            entity,
            excluded,
            svc,
            &self.params,
            kind,
            judge::How {
                newcomer,
                opening: false,
            },
            self.now_ms,
        )
        .is_some()
    }

    /// The clients' bar of `service` for window `len` at usual activity, at `secs`.
    #[cfg(test)]
    pub(crate) fn bar_for_tests(&mut self, service: &str, len: WindowLen, secs: i64) -> u64 {
        let sid = self.service_ids[service];
        let _ = secs;
        self.services[sid as usize]
            .bar(Kind::Clients, false, len, &self.params, 1.0)
            .0
            .bytes
    }

    /// Lets quiet peers teach the hour and day they were last active in, and forgets pairs
    /// idle for `FORGET_AFTER_SECS` that are neither learned nor heavy.
    fn sweep(&mut self) {
        let now = self.now_ms / 1000;
        let horizon = self.now_ms.saturating_sub(FORGET_AFTER_SECS * 1000);
        let mut gone: Vec<u32> = Vec::new();
        for (id, p) in self.peers.iter_mut() {
            if let Some(svc) = self.services.get_mut(p.key.service as usize) {
                learn::flush(p, svc, &self.params, now);
            }
            if !(p.learned() || p.heavy() || p.last_seen_ms >= horizon) {
                gone.push(id);
            }
        }
        for id in gone {
            let p = self.peers.slot(id);
            let key = p.key;
            if key.is_group() {
                self.groups -= 1;
            } else if p.has(SERVED) {
                self.acquaintances
                    .part(key.service, key.ip(), p.first_seen, p.last_seen_ms / 1000);
            }
            if let Some(svc) = self.services.get(key.service as usize) {
                self.forgotten.push((svc.name.clone(), key));
            }
            self.peers.remove(id);
            self.stats.forgotten += 1;
        }
        if now / 86_400 != self.acquaintances_expired_day {
            self.acquaintances_expired_day = now / 86_400;
            self.acquaintances.expire(now);
        }
        let peers = &self.peers;
        self.first_members
            .retain(|prefix, id| prefixes::is_member(peers, *prefix, *id));
        self.stats.peers = self.peers.len() as u64 - self.groups;
        self.stats.prefix_groups = self.groups;
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
        // Once per owner, not per sample: where the service's sockets live.
        if let (Some(sid), Some(cgroup)) = (sid, owner.cgroup_id.filter(|c| *c != 0)) {
            let cgroups = &mut self.services[sid as usize].cgroups;
            cgroups.retain(|c| *c != cgroup);
            if cgroups.len() >= service::MAX_CGROUPS {
                cgroups.remove(0);
            }
            cgroups.push(cgroup);
        }
        self.owners.insert(ptr, (owner.clone(), sid));
        sid
    }

    /// The cgroups `service`'s sockets were seen in.
    pub fn service_cgroups(&self, service: &str) -> &[u64] {
        self.services
            .iter()
            .find(|s| &*s.name == service)
            .map_or(&[], |s| &s.cgroups)
    }

    /// `service`'s peers (single addresses) inside `net` that a containment of `net` must
    /// leave alone: learned destinations, peers first met while the service learned (its
    /// baseline's own clients, however short the learning period), and peers first met at
    /// least `known_for` seconds before `before` (Unix seconds), who were there before
    /// whatever the containment answers. At most `max + 1` (more than `max` tells the caller
    /// there are too many).
    pub fn known_peers_in(
        &self,
        service: &str,
        net: &ipnet::IpNet,
        (before, known_for): (u64, u64),
        max: usize,
    ) -> Vec<IpAddr> {
        let Some(&sid) = self.service_ids.get(service) else {
            return Vec::new();
        };
        let learned_until = self.services[sid as usize].learn_until;
        self.peers
            .iter()
            .map(|(_, p)| p)
            .filter(|p| p.key.service == sid && p.key.prefix == 0)
            .filter(|p| {
                let met = u64::from(p.first_seen);
                p.learned() || met < learned_until || met + known_for <= before
            })
            .map(|p| p.key.ip())
            .filter(|a| net.contains(a))
            .take(max + 1)
            .collect()
    }

    /// The first sample of a service starts its learning period (or not, see
    /// `learn_new_services`).
    fn start_service(&mut self, sid: u32, t: u64) {
        let svc = &mut self.services[sid as usize];
        if svc.first_seen != 0 {
            return;
        }
        if self.host_learn_until == 0 {
            self.host_learn_until = t + self.learning_secs;
        }
        svc.first_seen = t;
        // Services present while the host learns, configured ones, and (if asked) any new
        // one get a learning period; others are judged from their first packet.
        let learns = t < self.host_learn_until
            || self.learn_new_services
            || self.matcher.is_configured(&svc.name);
        svc.learn_until = if learns { t + self.learning_secs } else { t };
        svc.dirty = true;
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
        self.start_service(sid, t);
        let learning = self.services[sid as usize].learning(t);
        if !learning && !self.services[sid as usize].learning_finished {
            self.finish_learning(sid);
        }
        let addr = canonical(remote.addr);
        let direction = s
            .direction
            .unwrap_or_else(|| Direction::infer(s.local.map_or(0, |l| l.port), remote.port));

        let (id, is_new) = self.peers.get_or_insert(PeerKey::new(sid, addr));
        // A client's age is its identity's: a home back after a quiet day is no newcomer;
        // and a new address of a familiar network is vouched for (see `acquaintances`).
        let met = match (is_new, direction) {
            (false, _) => None,
            (true, Direction::Served) => {
                Some(
                    self.acquaintances
                        .meet(sid, addr, t, s.protocol == Protocol::Tcp),
                )
            }
            (true, Direction::Initiated) => Some(Met {
                first_seen: u32::try_from(t).unwrap_or(u32::MAX),
                vouched: false,
            }),
        };
        let svc = &mut self.services[sid as usize];
        learn::flush(self.peers.slot_mut(id), svc, &self.params, t);
        let peer = self.peers.slot_mut(id);
        if let Some(met) = met {
            peer.first_seen = met.first_seen;
            if met.vouched {
                peer.flags |= VOUCHED;
            } else {
                peer.flags &= !VOUCHED;
            }
        }
        peer.last_seen_ms = peer.last_seen_ms.max(t_ms);
        peer.port = remote.port;
        peer.flags |= DIRTY
            | match direction {
                Direction::Served => SERVED,
                Direction::Initiated => INITIATED,
            };
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
        let class =
            match self
                .classifier
                .static_class(&svc.name, addr, remote.port, peer.name.as_deref())
            {
                Some(c) => c,
                None if peer.learned() => DestinationClass::Learned,
                None if direction == Direction::Served => DestinationClass::Client,
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
        let role = match class {
            DestinationClass::Internal | DestinationClass::Allowlisted => Role::Exempt,
            DestinationClass::Learned => Role::Destination,
            DestinationClass::Client => Role::Client,
            DestinationClass::Unknown => Role::Unknown,
        };
        if role == Role::Exempt {
            peer.flags |= EXEMPT;
        } else {
            peer.flags &= !EXEMPT;
        }
        svc.bytes_by_class[class as usize] += s.bytes;
        let first_of_minute = peer.minute.epoch() != t / 60;
        peer.roll(t);
        peer.add(s.bytes, s.packets);
        peer.flags |= HOUR_PENDING | DAY_PENDING;
        if class == DestinationClass::Internal {
            return;
        }
        let new_client = role == Role::Client && new_client(peer, t);
        svc.count(s.bytes, s.packets, t, learning, &self.params);
        if new_client {
            svc.count_new_client(s.bytes, t, learning, &self.params);
        }
        if role == Role::Client && first_of_minute {
            svc.count_client_minute(t);
        }
        if let Some((_, len, _)) = self.params.new_dest {
            svc.new_destinations.roll(len, t);
            if is_new && role == Role::Unknown && !learning {
                svc.new_destinations.add(1, 0);
                if svc.recent_new.len() >= EXAMPLES {
                    svc.recent_new.remove(0);
                }
                svc.recent_new.push(addr);
            }
        }
        let groups = if role == Role::Client {
            self.group_sample(sid, addr, id, is_new, s, t)
        } else {
            prefixes::Groups::default()
        };
        if learning || role == Role::Exempt {
            return;
        }
        let newcomer =
            role == Role::Client && newcomer(self.peers.slot(id), &self.services[sid as usize], t);

        // Per-peer rules.
        let svc = &mut self.services[sid as usize];
        let params = &self.params;
        let mut crossings: Vec<(Option<u32>, Crossing)> = Vec::new();
        {
            let peer = self.peers.slot(id);
            match role {
                Role::Unknown => {
                    crossings.extend(
                        judge::unknown(peer, params, t_ms)
                            .into_iter()
                            .map(|c| (None, c)),
                    );
                }
                Role::Client | Role::Destination => {
                    let kind = if role == Role::Client {
                        Kind::Clients
                    } else {
                        Kind::Destinations
                    };
                    crossings.extend(
                        judge::volume(
                            peer,
                            prefixes::Excluded::NONE,
                            svc,
                            params,
                            kind,
                            judge::How {
                                newcomer,
                                opening: true,
                            },
                            t_ms,
                        )
                        .map(|c| (None, c)),
                    );
                }
                Role::Exempt => {}
            }
            // The most specific entity that crossed names the alert: the client itself when
            // it explains the volume alone, else its longest prefix that crossed (a /48 of
            // the same clients as a /64 says nothing more).
            for gid in groups.ids() {
                if !crossings.is_empty() {
                    break;
                }
                let group = self.peers.slot(gid);
                if !judge::may_cross(group, params, Kind::Prefixes, t_ms) {
                    continue;
                }
                let excluded =
                    prefixes::excluded(&self.peers, group, t, |m| !self::newcomer(m, svc, t));
                crossings.extend(
                    judge::volume(
                        group,
                        excluded,
                        svc,
                        params,
                        Kind::Prefixes,
                        judge::How {
                            newcomer: false,
                            opening: true,
                        },
                        t_ms,
                    )
                    .map(|c| (Some(gid), c)),
                );
            }
        }
        // A client that crossed explains its groups' volume for as long as its bytes stay in
        // their windows (a day): the other members' samples do not raise the same bytes
        // again on the prefix; a second sender of the prefix still crosses alone.
        if role == Role::Client && crossings.iter().any(|(gid, _)| gid.is_none()) {
            let until = t.saturating_add(86_400);
            if let Some(c) = self.peers.slot_mut(id).client_mut() {
                c.crossed_until = u32::try_from(until).unwrap_or(u32::MAX);
            }
            for gid in groups.ids() {
                prefixes::explain(&mut self.peers, gid, id, until, t_ms);
            }
        }
        let mut conditions: Vec<Condition> = Vec::with_capacity(crossings.len() + 3);
        for (gid, c) in crossings {
            let entity = self.peers.slot(gid.unwrap_or(id));
            conditions.push(peer_condition(entity, &svc.name, class, c, s));
        }

        // Service rules.
        let service_name = svc.name.clone();
        let service_condition =
            |rule: RuleId, severity, len: WindowLen, bytes: u64, packets: u64, threshold| {
                Condition {
                    key: AlertKey {
                        rule,
                        service: service_name.clone(),
                        peer: None,
                        prefix: None,
                    },
                    severity,
                    process: Some(s.owner.clone()),
                    peer: None,
                    window: len,
                    bytes,
                    packets,
                    sample_bytes: s.bytes,
                    threshold,
                    new_destinations: None,
                    examples: Vec::new(),
                    // The opening time; updates keep it.
                    first_seen: now,
                    last_seen: now,
                }
            };
        if let Some((severity, bar)) = params.baseline {
            let v = svc.total.estimate(WindowLen::OneMinute, t_ms);
            // Scaled by the surge of clients: many clients fetching at once is popularity,
            // more bytes per client is what this rule is for.
            if v.bytes > bar.floor
                && let Some((thr, q, n)) = svc.time_of_day.threshold(t, &bar)
                && v.bytes > thr
                && let breadth = svc.breadth(t_ms)
                && v.bytes as f64 > thr as f64 * breadth
                && svc.baseline_sustained(t_ms)
            {
                let threshold = Threshold {
                    bytes: (thr as f64 * breadth) as u64,
                    kind: ThresholdKind::Baseline,
                    baseline_bytes: Some(q),
                    quantile: Some(bar.quantile),
                    factor: Some(bar.factor),
                    samples: Some(n),
                    reference: Some(Reference::ServiceCurve),
                    activity: Some(breadth),
                };
                conditions.push(service_condition(
                    RuleId::ServiceBaseline,
                    severity,
                    WindowLen::OneMinute,
                    v.bytes,
                    v.packets,
                    threshold,
                ));
            }
        }
        if let Some((severity, len, max_new)) = params.new_dest {
            let count = svc.new_destinations.estimate(len, t_ms).bytes;
            if count > max_new {
                let total = svc.activity_volume(len, t_ms);
                let mut c = service_condition(
                    RuleId::NewDestinations,
                    severity,
                    len,
                    total.bytes,
                    total.packets,
                    Threshold {
                        bytes: max_new,
                        kind: ThresholdKind::Count,
                        baseline_bytes: None,
                        quantile: None,
                        factor: None,
                        samples: None,
                        reference: Some(Reference::Configured),
                        activity: None,
                    },
                );
                c.new_destinations = Some(count);
                c.examples.clone_from(&svc.recent_new);
                conditions.push(c);
            }
        }
        if new_client
            && let Some((severity, bar)) = params.new_clients
            && let Some((threshold, v)) = svc.new_client_crossing(t_ms, &bar)
        {
            conditions.push(service_condition(
                RuleId::NewClientVolume,
                severity,
                WindowLen::OneHour,
                v.bytes,
                v.packets,
                threshold,
            ));
        }
        for c in conditions {
            if let Some(event) = self.book.raise(c, now) {
                out.push(event);
            }
        }
    }

    /// The service's learning period is over: the peers above their bar in its last,
    /// unfinished hour become heavy (see `learn::finish_learning`). Once per service.
    fn finish_learning(&mut self, sid: u32) {
        let svc = &mut self.services[sid as usize];
        svc.learning_finished = true;
        svc.dirty = true;
        if svc.learn_until <= svc.first_seen {
            return; // judged from its first packet: nothing learned, nobody heavy
        }
        for (_, p) in self.peers.iter_mut() {
            if p.key.service == sid {
                learn::finish_learning(p, svc, &self.params);
            }
        }
    }

    /// Adds a client's sample to the groups of its prefixes (making a group when a second
    /// client of a prefix appears); returns the groups' slots.
    fn group_sample(
        &mut self,
        sid: u32,
        addr: IpAddr,
        member: u32,
        new_member: bool,
        s: &FlowSample,
        t: u64,
    ) -> prefixes::Groups {
        let lens = if addr.is_ipv4() {
            &self.params.ipv4_prefixes
        } else {
            &self.params.ipv6_prefixes
        };
        let mut groups = prefixes::Groups::default();
        for (i, &len) in lens.iter().enumerate() {
            let key = PeerKey::network(sid, addr, len);
            if let Some(gid) = prefixes::group_slot(&mut self.peers, member, i, &key) {
                let svc = &mut self.services[sid as usize];
                let member_seen = self.peers.slot(member).last_seen_ms;
                let group = self.peers.slot_mut(gid);
                learn::flush(group, svc, &self.params, t);
                group.roll(t);
                group.add(s.bytes, s.packets);
                group.flags |= DIRTY | HOUR_PENDING | DAY_PENDING;
                group.last_seen_ms = group.last_seen_ms.max(member_seen);
                if new_member {
                    group.members = group.members.saturating_add(1);
                }
                prefixes::refresh_owner(self.peers.slot_mut(gid), &s.owner);
                prefixes::note_member(&mut self.peers, gid, member, member_seen);
                groups.push(gid);
                continue;
            }
            match self.first_members.get(&key).copied() {
                Some(first) if first == member => {}
                Some(first) if prefixes::is_member(&self.peers, key, first) => {
                    let mut group = PeerState::new(key);
                    group.absorb(self.peers.slot(first));
                    group.absorb(self.peers.slot(member));
                    group.members = 2;
                    group.flags |= DIRTY;
                    prefixes::refresh_owner(&mut group, &s.owner);
                    let gid = self.peers.insert(group);
                    // A member that crossed alone already explains its bytes in the group.
                    for m in [first, member] {
                        let until = self.peers.slot(m).client().map_or(0, |c| c.crossed_until);
                        if u64::from(until) > t {
                            let millis = self.peers.slot(member).last_seen_ms;
                            prefixes::explain(&mut self.peers, gid, m, u64::from(until), millis);
                        }
                    }
                    prefixes::remember_group(&mut self.peers, member, i, gid);
                    self.groups += 1;
                    self.first_members.remove(&key);
                    groups.push(gid);
                }
                _ => {
                    self.first_members.insert(key, member);
                }
            }
        }
        groups
    }

    /// Registers the prefixes of every client loaded from a checkpoint whose group does not
    /// exist yet (the first-member index is not stored: it is rebuilt from the clients).
    pub fn rebuild_prefix_index(&mut self) {
        let mut index = FxHashMap::default();
        for (id, p) in self.peers.iter() {
            if p.key.is_group() || !p.has(SERVED) || p.learned() {
                continue;
            }
            let addr = p.key.ip();
            let lens = if addr.is_ipv4() {
                &self.params.ipv4_prefixes
            } else {
                &self.params.ipv6_prefixes
            };
            for &len in lens {
                let key = PeerKey::network(p.key.service, addr, len);
                if self.peers.id(&key).is_none() {
                    index.entry(key).or_insert(id);
                }
            }
        }
        self.first_members = index;
        self.groups = self.peers.iter().filter(|(_, p)| p.key.is_group()).count() as u64;
    }
}

/// Whether a client of `svc` is a newcomer at `t` (Unix seconds): its identity (see
/// `acquaintances`) was first met after the service learned, in the last
/// [`NEW_CLIENT_SECS`], and its provider network did not vouch for it. A phone's fresh
/// address of a carrier no client came from is a newcomer; a household's next privacy
/// address, a home back after a quiet day, a new lease of a familiar ISP, or a client the
/// service learned from, is not.
fn newcomer(client: &PeerState, svc: &ServiceState, t: u64) -> bool {
    u64::from(client.first_seen) >= svc.learn_until && new_client(client, t) && !client.has(VOUCHED)
}

/// Whether a client is new at `t` for rule 8: first met in the last [`NEW_CLIENT_SECS`]
/// (learning included: rule 8's curve learns from the learning day's new clients).
fn new_client(client: &PeerState, t: u64) -> bool {
    t < u64::from(client.first_seen) + NEW_CLIENT_SECS
}

/// The condition of a per-peer crossing, naming the peer (or the prefix).
fn peer_condition(
    entity: &PeerState,
    service: &Arc<str>,
    class: DestinationClass,
    c: Crossing,
    s: &FlowSample,
) -> Condition {
    let key = entity.key;
    let prefix = key.is_group().then_some(key.prefix);
    Condition {
        key: AlertKey {
            rule: c.rule,
            service: service.clone(),
            peer: Some(key.ip()),
            prefix,
        },
        severity: c.severity,
        process: entity.owner.clone().or_else(|| Some(s.owner.clone())),
        peer: Some(Peer {
            addr: key.ip(),
            port: entity.port,
            name: entity.name.as_deref().map(str::to_owned),
            class,
            prefix_len: prefix,
            members: prefix.map(|_| entity.members),
        }),
        window: c.window,
        bytes: c.volume.bytes,
        packets: c.volume.packets,
        sample_bytes: s.bytes,
        threshold: c.threshold,
        new_destinations: None,
        examples: Vec::new(),
        first_seen: timestamp_ms(u64::from(entity.first_seen) * 1000),
        last_seen: timestamp_ms(entity.last_seen_ms),
    }
}

fn timestamp_ms(ms: u64) -> Timestamp {
    Timestamp::from_millisecond(i64::try_from(ms).unwrap_or(i64::MAX))
        .unwrap_or(Timestamp::UNIX_EPOCH)
}
