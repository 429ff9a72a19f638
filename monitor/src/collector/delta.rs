//! Turns cumulative kernel counters into per-window deltas.
//!
//! Each flow entry's `first_seen_ns` is its generation: when an entry is removed (closed,
//! evicted) and the same key comes back, it has a new `first_seen_ns` and its whole value is
//! new. So a delta is never counted twice (we remember what we reported per generation) and
//! never lost (a new generation reports everything it holds).

use monitor_common::{FlowCounters, FlowKey};
// Keys are kernel-made, not attacker-chosen strings: a fast non-cryptographic hash is fine
// and was the agent's largest CPU cost with SipHash at 10k flows.
use rustc_hash::FxHashMap;

/// Bytes and packets not yet reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delta {
    pub bytes: u64,
    pub packets: u64,
}

impl Delta {
    pub const fn is_zero(self) -> bool {
        self.bytes == 0 && self.packets == 0
    }
}

#[derive(Clone, Copy, Debug)]
struct Reported {
    first_seen_ns: u64,
    bytes: u64,
    packets: u64,
    /// The pass in which the flow was last seen in the kernel map.
    pass: u64,
    /// When (monotonic ns) its counters last grew: the agent's measure of activity.
    active_ns: u64,
}

/// What has been reported so far for every live flow.
#[derive(Debug, Default)]
pub struct DeltaTracker {
    reported: FxHashMap<FlowKey, Reported>,
    /// Incremented by [`DeltaTracker::start_pass`] at every read of the kernel map.
    pass: u64,
    /// Time of the current pass (monotonic ns).
    now_ns: u64,
}

impl DeltaTracker {
    pub fn len(&self) -> usize {
        self.reported.len()
    }

    pub fn is_empty(&self) -> bool {
        self.reported.is_empty()
    }

    /// Starts a read of the kernel map: flows not observed until [`Self::forget_missing`]
    /// are considered gone.
    pub fn start_pass(&mut self, now_ns: u64) {
        self.pass += 1;
        self.now_ns = now_ns;
    }

    /// When the flow's counters last grew (monotonic ns), if it is tracked.
    pub fn last_active_ns(&self, key: &FlowKey) -> Option<u64> {
        self.reported.get(key).map(|r| r.active_ns)
    }

    /// The part of `now` (a flow still in the kernel map) not reported yet.
    pub fn observe(&mut self, key: &FlowKey, now: &FlowCounters) -> Delta {
        self.observe_with_activity(key, now).0
    }

    /// [`Self::observe`], also returning when the flow's counters last grew (monotonic ns),
    /// from the same lookup.
    pub fn observe_with_activity(&mut self, key: &FlowKey, now: &FlowCounters) -> (Delta, u64) {
        let previous = self.reported.get(key);
        let delta = diff(previous, now);
        let active_ns = match previous {
            Some(p) if delta.is_zero() => p.active_ns,
            _ => self.now_ns,
        };
        self.reported.insert(
            *key,
            Reported {
                first_seen_ns: now.first_seen_ns,
                bytes: now.bytes,
                packets: now.packets,
                pass: self.pass,
                active_ns,
            },
        );
        (delta, active_ns)
    }

    /// Final counts of a flow removed from the kernel map: report the rest and forget it.
    pub fn finish(&mut self, key: &FlowKey, last: &FlowCounters) -> Delta {
        diff(self.reported.remove(key).as_ref(), last)
    }

    /// Forgets flows not observed in this pass: they are no longer in the kernel map
    /// although the agent did not remove them (another process deleted them). Returns how
    /// many: their bytes after the last poll are unknowable, so they are reported as lost.
    pub fn forget_missing(&mut self) -> usize {
        let before = self.reported.len();
        let pass = self.pass;
        self.reported.retain(|_, r| r.pass == pass);
        before - self.reported.len()
    }
}

fn diff(prev: Option<&Reported>, now: &FlowCounters) -> Delta {
    match prev {
        Some(p)
            if p.first_seen_ns == now.first_seen_ns
                && now.bytes >= p.bytes
                && now.packets >= p.packets =>
        {
            Delta {
                bytes: now.bytes - p.bytes,
                packets: now.packets - p.packets,
            }
        }
        // First sight, or a new generation of the key (removed and re-created, cookie reuse):
        // everything it holds is new.
        _ => Delta {
            bytes: now.bytes,
            packets: now.packets,
        },
    }
}

#[cfg(test)]
mod tests {
    use monitor_common::SockOwner;

    use super::*;

    fn key(cookie: u64) -> FlowKey {
        FlowKey {
            cookie,
            remote_addr: [0; 16],
            remote_port: 443,
            protocol: 6,
            ip_version: 4,
            _pad: 0,
        }
    }

    fn counters(first_seen_ns: u64, bytes: u64, packets: u64) -> FlowCounters {
        FlowCounters {
            bytes,
            packets,
            first_seen_ns,
            last_seen_ns: first_seen_ns,
            cgroup_id: 1,
            local_addr: [0; 16],
            local_port: 1,
            direction: 0,
            contain_slot: 0,
            contain_epoch: 0,
            owner: SockOwner::EMPTY,
        }
    }

    #[test]
    fn growing_counters_report_only_the_increase() {
        let mut t = DeltaTracker::default();
        let k = key(1);
        assert_eq!(
            t.observe(&k, &counters(10, 100, 2)),
            Delta {
                bytes: 100,
                packets: 2
            }
        );
        assert_eq!(
            t.observe(&k, &counters(10, 250, 5)),
            Delta {
                bytes: 150,
                packets: 3
            }
        );
        assert!(t.observe(&k, &counters(10, 250, 5)).is_zero());
    }

    #[test]
    fn finish_reports_the_rest_once() {
        let mut t = DeltaTracker::default();
        let k = key(1);
        t.observe(&k, &counters(10, 100, 2));
        assert_eq!(
            t.finish(&k, &counters(10, 180, 3)),
            Delta {
                bytes: 80,
                packets: 1
            }
        );
        assert!(t.is_empty());
        // A flow that opened and closed between two polls: all of it is reported.
        assert_eq!(
            t.finish(&key(2), &counters(20, 77, 1)),
            Delta {
                bytes: 77,
                packets: 1
            }
        );
    }

    #[test]
    fn activity_is_when_counters_last_grew() {
        let mut t = DeltaTracker::default();
        let k = key(3);
        t.start_pass(100);
        t.observe(&k, &counters(1, 10, 1));
        assert_eq!(t.last_active_ns(&k), Some(100));
        t.start_pass(200);
        t.observe(&k, &counters(1, 10, 1));
        assert_eq!(
            t.last_active_ns(&k),
            Some(100),
            "no growth: still idle since 100"
        );
        t.start_pass(300);
        t.observe(&k, &counters(1, 11, 2));
        assert_eq!(t.last_active_ns(&k), Some(300));
        assert_eq!(t.last_active_ns(&key(4)), None);
    }

    #[test]
    fn a_recreated_entry_is_a_new_generation() {
        let mut t = DeltaTracker::default();
        let k = key(1);
        t.observe(&k, &counters(10, 1000, 10));
        // Removed behind our back and re-created with a smaller total: not a negative delta,
        // and not lost: all of the new generation counts.
        assert_eq!(
            t.observe(&k, &counters(50, 300, 3)),
            Delta {
                bytes: 300,
                packets: 3
            }
        );
        // Same size but a different generation: still all new.
        assert_eq!(
            t.observe(&k, &counters(90, 300, 3)),
            Delta {
                bytes: 300,
                packets: 3
            }
        );
    }

    #[test]
    fn sum_of_deltas_equals_the_final_total() {
        let mut t = DeltaTracker::default();
        let k = key(7);
        let mut sum = 0;
        for (i, total) in [5u64, 5, 90, 91, 1000].into_iter().enumerate() {
            sum += t.observe(&k, &counters(1, total, i as u64)).bytes;
        }
        sum += t.finish(&k, &counters(1, 1234, 9)).bytes;
        assert_eq!(sum, 1234);
    }

    #[test]
    fn forget_missing_counts_vanished_flows() {
        let mut t = DeltaTracker::default();
        t.start_pass(1);
        t.observe(&key(1), &counters(1, 1, 1));
        t.observe(&key(2), &counters(1, 1, 1));
        assert_eq!(t.forget_missing(), 0);
        t.start_pass(2);
        t.observe(&key(2), &counters(1, 2, 2));
        assert_eq!(
            t.forget_missing(),
            1,
            "flow 1 was not seen in the second pass"
        );
        assert_eq!(t.len(), 1);
    }
}
