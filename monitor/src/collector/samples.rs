//! A poll's samples: flows of one owner between the same endpoints merged into one, and
//! their order.

use std::{cmp::Reverse, hash::BuildHasher as _, sync::Arc, time::Instant};

use jiff::Timestamp;
use monitor_common::{FlowCounters, FlowKey};

use super::{Collector, delta::Delta, direction};
use crate::{
    flow::{Direction, Endpoint, FlowSample, Owner, Protocol, ip_from_kernel},
    kernel::clock,
};

/// Key of one sample: flows of the same owner between the same endpoints are merged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct SampleKey {
    owner_pid: u32,
    /// 0 for sockets with a kernel-recorded owner; the cookie for sockets older than the
    /// agent, which stay one sample per socket (their owners are looked up per socket).
    legacy_cookie: u64,
    cgroup_id: u64,
    local: Option<Endpoint>,
    remote: Option<Endpoint>,
    protocol: Protocol,
    /// Flows between the same ends that disagree (rare: another socket's flow) stay apart.
    direction: Option<Direction>,
}

impl SampleKey {
    /// The key of flow `(key, c)` held by `owner_pid`, in `direction`: everything but those
    /// two comes from the flow itself.
    fn of_flow(
        (key, c): (&FlowKey, &FlowCounters),
        owner_pid: u32,
        direction: Option<Direction>,
    ) -> Self {
        Self {
            owner_pid,
            legacy_cookie: if c.owner.is_known() { 0 } else { key.cookie },
            cgroup_id: c.cgroup_id,
            local: Some(Endpoint {
                addr: ip_from_kernel(c.local_addr),
                port: c.local_port,
            }),
            remote: Some(Endpoint {
                addr: ip_from_kernel(key.remote_addr),
                port: key.remote_port,
            }),
            protocol: Protocol::from_number(key.protocol),
            direction,
        }
    }

    /// The key of an indexed sample: the sample holds the ends, protocol and direction it
    /// was made with.
    fn of_sample(e: &Indexed, s: &FlowSample) -> Self {
        Self {
            owner_pid: e.owner_pid,
            legacy_cookie: e.legacy_cookie,
            cgroup_id: e.cgroup_id,
            local: s.local,
            remote: s.remote,
            protocol: s.protocol,
            direction: s.direction,
        }
    }

    /// The sample made by the first flow of this key: its ends, protocol and direction are
    /// the key's (which [`Self::of_sample`] reads back).
    fn new_sample(
        &self,
        (window_start, window_end): (Timestamp, Timestamp),
        owner: Arc<Owner>,
        remote_name: Option<Arc<str>>,
        delta: Delta,
        (first_seen, last_seen): (Timestamp, Timestamp),
    ) -> FlowSample {
        FlowSample {
            window_start,
            window_end,
            owner,
            local: self.local,
            remote: self.remote,
            remote_name,
            protocol: self.protocol,
            bytes: delta.bytes,
            packets: delta.packets,
            flows: 1,
            first_seen: Some(first_seen),
            last_seen: Some(last_seen),
            untracked: None,
            direction: self.direction,
        }
    }
}

/// Adds a further flow of the same key to `sample`.
fn merge(sample: &mut FlowSample, delta: Delta, (first_seen, last_seen): (Timestamp, Timestamp)) {
    sample.bytes += delta.bytes;
    sample.packets += delta.packets;
    sample.flows += 1;
    sample.first_seen = sample.first_seen.min(Some(first_seen));
    sample.last_seen = sample.last_seen.max(Some(last_seen));
}

/// One sample of the poll being built, in [`SampleIndex`]: 24 bytes where the whole
/// [`SampleKey`] would take 72. The key is rebuilt from the sample (`sample`, an index into
/// the poll's samples) and the parts a sample does not hold. Not from the flow that made
/// it: the flows are freed as the samples are made (see `table`).
#[derive(Clone, Copy)]
struct Indexed {
    sample: u32,
    owner_pid: u32,
    legacy_cookie: u64,
    cgroup_id: u64,
}

/// The poll's samples by key, for merging flows of one owner between the same endpoints.
pub(super) struct SampleIndex(hashbrown::HashTable<Indexed>);

impl SampleIndex {
    pub(super) fn with_capacity(flows: usize) -> Self {
        Self(hashbrown::HashTable::with_capacity(flows))
    }

    /// Where the sample of `sk` is in `samples`; if there is none yet, `None`, and the
    /// sample to be pushed next is recorded as the one of `sk`.
    fn find_or_reserve(&mut self, samples: &[FlowSample], sk: &SampleKey) -> Option<usize> {
        let key_of = |e: &Indexed| SampleKey::of_sample(e, &samples[e.sample as usize]);
        let hash = rustc_hash::FxBuildHasher.hash_one(sk);
        if let Some(e) = self.0.find(hash, |e| key_of(e) == *sk) {
            return Some(e.sample as usize);
        }
        // Fits: the poll holds fewer than 2^32 flows (the kernel table's size is a u32).
        let next = Indexed {
            sample: samples.len() as u32,
            owner_pid: sk.owner_pid,
            legacy_cookie: sk.legacy_cookie,
            cgroup_id: sk.cgroup_id,
        };
        self.0.insert_unique(hash, next, |e| {
            rustc_hash::FxBuildHasher.hash_one(key_of(e))
        });
        None
    }
}

impl Collector {
    /// Adds flow `(key, c)`'s `delta` to its sample in `samples`, made if it is the first
    /// flow of its key.
    pub(super) fn add_sample(
        &mut self,
        (samples, index): (&mut Vec<FlowSample>, &mut SampleIndex),
        (key, c): (&FlowKey, &FlowCounters),
        delta: Delta,
        (window_end, now): (Timestamp, Instant),
        clock: &clock::WallClock,
    ) {
        let first_seen = clock.wall(c.first_seen_ns);
        let last_seen = clock.wall(c.last_seen_ns.max(c.first_seen_ns));
        let local = Endpoint {
            addr: ip_from_kernel(c.local_addr),
            port: c.local_port,
        };
        let direction = direction::of_flow(
            key.protocol,
            c.direction,
            self.kernel.directions,
            local,
            &mut self.listeners,
            now,
        );
        // The worker holding an accepted connection, not the listener's creator: the
        // kernel's first packets of the connection (SYN-ACK) may be another flow with the
        // creator as owner, and must not absorb the worker's bytes.
        let owner_pid = (key.protocol == monitor_common::IPPROTO_TCP)
            .then(|| self.attributor.holder(key.cookie).map(|(pid, _)| pid))
            .flatten()
            .unwrap_or(c.owner.tgid);
        let sk = SampleKey::of_flow((key, c), owner_pid, direction);
        let seen = (first_seen, last_seen);
        if let Some(i) = index.find_or_reserve(samples, &sk) {
            merge(&mut samples[i], delta, seen);
            return;
        }
        let owner = self.attributor.owner(key.cookie, c);
        let remote_name = sk.remote.and_then(|r| self.names.lookup(&r.addr, now));
        let window = (self.window_start, window_end);
        samples.push(sk.new_sample(window, owner, remote_name, delta, seen));
    }
}

/// Sorts `samples` largest first, equal ones in the order they were made (a stable sort).
/// Not `sort_by_key`: its stable sort borrows a scratch buffer of half the slice, 8 MB of
/// samples at 100k flows, which was the agent's peak memory. `sort_by_cached_key` is just as
/// stable (it sorts (bytes, position) pairs, 16 bytes a sample, then moves the samples in
/// place). Samples often come sorted already (every socket sent as much): then nothing
/// moves, and nothing is allocated.
pub(super) fn sort_largest_first(samples: &mut [FlowSample]) {
    if samples.is_sorted_by(|a, b| a.bytes >= b.bytes) {
        return;
    }
    samples.sort_by_cached_key(|s| Reverse(s.bytes));
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::flow::{Owner, Protocol};

    fn sample(bytes: u64, id: u64) -> FlowSample {
        FlowSample {
            window_start: jiff::Timestamp::UNIX_EPOCH,
            window_end: jiff::Timestamp::UNIX_EPOCH,
            owner: Arc::new(Owner::default()),
            local: None,
            remote: None,
            remote_name: None,
            protocol: Protocol::Udp,
            bytes,
            // Identifies the sample: where it was before the sort.
            packets: id,
            flows: 1,
            first_seen: None,
            last_seen: None,
            untracked: None,
            direction: None,
        }
    }

    /// A flow of one of a few owners, cgroups, ends, protocols and directions, so that some
    /// flows share a key and others differ from them in one part only.
    fn flow(
        rng: &mut fastrand::Rng,
        cookie: u64,
    ) -> (FlowKey, FlowCounters, u32, Option<Direction>) {
        let mut owner = monitor_common::SockOwner::EMPTY;
        if rng.u8(0..4) != 0 {
            owner.tgid = rng.u32(1..3);
            owner.flags = monitor_common::OWNER_FROM_SOCK_CREATE;
        }
        let mut local_addr = [0; 16];
        local_addr[15] = rng.u8(1..3);
        let key = FlowKey {
            cookie,
            remote_addr: [
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0xff,
                0xff,
                10,
                0,
                0,
                rng.u8(1..3),
            ],
            remote_port: rng.u16(1..3),
            protocol: [6, 17][rng.usize(0..2)],
            ip_version: 4,
            _pad: 0,
        };
        let c = FlowCounters {
            bytes: rng.u64(1..1000),
            packets: 1,
            first_seen_ns: rng.u64(1..1000),
            last_seen_ns: rng.u64(1..2000),
            cgroup_id: rng.u64(1..3),
            local_addr,
            local_port: rng.u16(1..3),
            direction: 0,
            contain_slot: 0,
            contain_epoch: 0,
            owner,
        };
        let direction =
            [None, Some(Direction::Initiated), Some(Direction::Served)][rng.usize(0..3)];
        (key, c, rng.u32(1..3), direction)
    }

    #[test]
    fn the_index_merges_exactly_the_flows_of_one_key() {
        let mut rng = fastrand::Rng::with_seed(11);
        let owner = Arc::new(Owner::default());
        let t = |ns: u64| Timestamp::from_nanosecond(i128::from(ns)).unwrap();
        let window = (t(0), t(1));
        let mut samples = Vec::new();
        let mut index = SampleIndex::with_capacity(16);
        // The reference: the whole key of each sample, as the samples are made.
        let mut by_key = std::collections::HashMap::<SampleKey, usize>::new();
        let mut expected: Vec<(u64, u32)> = Vec::new();
        for cookie in 0..3000 {
            let (key, c, pid, direction) = flow(&mut rng, cookie);
            let sk = SampleKey::of_flow((&key, &c), pid, direction);
            let delta = Delta {
                bytes: c.bytes,
                packets: c.packets,
            };
            let seen = (t(c.first_seen_ns), t(c.last_seen_ns));
            let next = by_key.len();
            let at = *by_key.entry(sk).or_insert(next);
            if at == next {
                expected.push((0, 0));
            }
            expected[at].0 += c.bytes;
            expected[at].1 += 1;
            if let Some(i) = index.find_or_reserve(&samples, &sk) {
                assert_eq!(i, at);
                merge(&mut samples[i], delta, seen);
            } else {
                assert_eq!(samples.len(), at, "a new key makes the next sample");
                samples.push(sk.new_sample(window, Arc::clone(&owner), None, delta, seen));
            }
        }
        assert!(
            samples.len() > 100 && samples.len() < 2000,
            "{}",
            samples.len()
        );
        let got: Vec<(u64, u32)> = samples.iter().map(|s| (s.bytes, s.flows)).collect();
        assert_eq!(got, expected);
        for (sk, &at) in &by_key {
            let e = index.0.iter().find(|e| e.sample as usize == at).unwrap();
            assert_eq!(SampleKey::of_sample(e, &samples[at]), *sk);
        }
    }

    #[test]
    fn largest_first_equal_ones_in_their_order() {
        // Many ties (the common case: every socket sent one datagram), in a shuffled order.
        let mut rng = fastrand::Rng::with_seed(7);
        let mut samples: Vec<FlowSample> = (0..5000).map(|id| sample(rng.u64(0..40), id)).collect();
        let mut expected = samples.clone();
        expected.sort_by_key(|s| Reverse(s.bytes));
        sort_largest_first(&mut samples);
        let ids = |v: &[FlowSample]| v.iter().map(|s| s.packets).collect::<Vec<_>>();
        assert_eq!(ids(&samples), ids(&expected));
        // Sorted already, ties included: left as it is.
        let mut sorted: Vec<FlowSample> = [9, 9, 5, 5, 5, 0]
            .into_iter()
            .zip(0..)
            .map(|(b, id)| sample(b, id))
            .collect();
        sort_largest_first(&mut sorted);
        assert_eq!(ids(&sorted), [0, 1, 2, 3, 4, 5]);
    }
}
