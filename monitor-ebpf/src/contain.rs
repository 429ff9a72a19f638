//! Containment enforcement: which rule applies to a flow (`CONTAIN_RULES`, looked up only when
//! the rules' epoch changed since the flow last looked) and the verdict of its bucket
//! (`CONTAIN_BUCKETS`).
//!
//! Verdicts of `cgroup_skb/egress`: 1 pass, 0 drop, 2 drop with congestion notification
//! (Linux >= 5.3: the sender's `__tcp_transmit_skb` sees `NET_XMIT_DROP` and calls
//! `tcp_enter_cwr`, so TCP shrinks its window instead of pushing into the bucket again at
//! once). A throttled packet that does not fit is dropped with notification; a blocked peer
//! gets plain drops. On ingress only 0 and 1 exist.

use aya_ebpf::{
    bindings,
    btf_maps::lpm_trie::Key,
    helpers::generated::{bpf_spin_lock, bpf_spin_unlock},
};
use monitor_common::{
    CONTAIN_BLOCK, CONTAIN_BUCKETS_ENTRIES, CONTAIN_CGROUP_BITS, CONTAIN_F_PLAIN_DROP,
    CONTAIN_MAX_REFILL_NS, CONTAIN_THROTTLE, ContainBucket, ContainEpoch, ContainKey, FlowCounters,
};

use crate::{
    counters::atomic_add,
    maps::{CONTAIN_BUCKETS, CONTAIN_EPOCH, CONTAIN_RULES},
};

pub const PASS: i32 = 1;
pub const DROP: i32 = 0;
/// Drop and tell the sender it met congestion (egress only).
pub const DROP_CN: i32 = 2;

const NS_PER_SEC: u64 = 1_000_000_000;

/// The rules' epoch and block count (zero when the map cannot be read: no rules).
#[inline(always)]
pub fn epoch() -> ContainEpoch {
    match CONTAIN_EPOCH.get_ptr(0) {
        // SAFETY: a live array value; two u32 loads.
        Some(e) => unsafe { *e },
        None => ContainEpoch::default(),
    }
}

/// The slot + 1 of the rule for (`cgroup_id`, `addr`), 0 for none.
#[inline(always)]
pub fn lookup(cgroup_id: u64, addr: &[u8; 16]) -> u8 {
    let key = Key::new(CONTAIN_CGROUP_BITS + 128, ContainKey::new(cgroup_id, *addr));
    match CONTAIN_RULES.get(&key) {
        Some(slot) if *slot < CONTAIN_BUCKETS_ENTRIES => (*slot + 1) as u8,
        _ => 0,
    }
}

/// The flow's slot + 1 for the current rules: from the flow itself when its epoch is current
/// (the fast path: one inlined array load and a compare), else looked up and stored back.
#[inline(always)]
pub fn slot_of_flow(flow: *mut FlowCounters, remote_addr: &[u8; 16]) -> u8 {
    let current = epoch().epoch;
    // SAFETY: `flow` points into a live FLOWS value. Several CPUs may store the same result;
    // plain stores, the last one wins and all are equal.
    unsafe {
        if (*flow).contain_epoch == current {
            return (*flow).contain_slot;
        }
        let slot = lookup((*flow).cgroup_id, remote_addr);
        (*flow).contain_slot = slot;
        (*flow).contain_epoch = current;
        slot
    }
}

/// The egress verdict for a packet of `bytes` (`packets` segments) of a flow in `slot` + 1.
#[inline(always)]
pub fn egress_verdict(slot: u8, bytes: u64, packets: u64, now: u64) -> i32 {
    if slot == 0 {
        return PASS;
    }
    let Some(bucket) = CONTAIN_BUCKETS.get_ptr_mut(u32::from(slot - 1)) else {
        return PASS;
    };
    // SAFETY: a live array value; the action is one aligned u32 the agent writes whole.
    match unsafe { core::ptr::read_volatile(&raw const (*bucket).action) } {
        CONTAIN_BLOCK => {
            count_dropped(bucket, bytes, packets);
            DROP
        }
        CONTAIN_THROTTLE => throttle(bucket, bytes, packets, now),
        _ => PASS,
    }
}

/// Whether a packet from `addr` to a socket of `cgroup_id` is refused (a block rule). Only
/// called while `ContainEpoch::blocks` is not 0.
#[inline(always)]
pub fn ingress_blocked(cgroup_id: u64, addr: &[u8; 16], bytes: u64) -> bool {
    let slot = lookup(cgroup_id, addr);
    if slot == 0 {
        return false;
    }
    let Some(bucket) = CONTAIN_BUCKETS.get_ptr_mut(u32::from(slot - 1)) else {
        return false;
    };
    // SAFETY: as in `egress_verdict`.
    if unsafe { core::ptr::read_volatile(&raw const (*bucket).action) } != CONTAIN_BLOCK {
        return false;
    }
    count_dropped(bucket, bytes, 1);
    true
}

#[inline(always)]
fn count_dropped(bucket: *mut ContainBucket, bytes: u64, packets: u64) {
    // SAFETY: fields of a live array value (8-byte aligned), outside the lock word.
    unsafe {
        atomic_add(&raw mut (*bucket).dropped_bytes, bytes);
        atomic_add(&raw mut (*bucket).dropped_packets, packets);
    }
}

/// The token bucket, under the bucket's lock (no helper call inside: the verifier forbids it).
#[inline(always)]
fn throttle(bucket: *mut ContainBucket, bytes: u64, packets: u64, now: u64) -> i32 {
    let lock = unsafe { &raw mut (*bucket).lock }.cast::<bindings::bpf_spin_lock>();
    // SAFETY: `bucket` is a live array value whose BTF names the lock; every path unlocks.
    unsafe {
        bpf_spin_lock(lock);
        let b = &mut *bucket;
        let burst = b.burst_bytes as i64;
        let rate = b.rate_bytes_per_sec;
        let mut tokens = b.tokens;
        if b.last_refill_ns == 0 {
            // First packet since the rule was made: the bucket starts full.
            tokens = burst;
            b.last_refill_ns = now;
        } else if now > b.last_refill_ns {
            let elapsed = now - b.last_refill_ns;
            let elapsed = if elapsed > CONTAIN_MAX_REFILL_NS {
                CONTAIN_MAX_REFILL_NS
            } else {
                elapsed
            };
            let add = elapsed * rate / NS_PER_SEC;
            if tokens + add as i64 >= burst {
                tokens = burst;
                b.last_refill_ns = now;
            } else if let Some(rate) = core::num::NonZeroU64::new(rate)
                && add > 0
            {
                tokens += add as i64;
                // Advance by the time the added bytes took, not to `now`: the fraction of a
                // byte not yet earned stays for the next packet (packets microseconds apart
                // would otherwise lose most of the rate to rounding). A non-zero divisor:
                // no division-by-zero panic path, which the verifier would refuse.
                b.last_refill_ns += add * NS_PER_SEC / rate;
            }
        }
        let len = bytes as i64;
        // A packet longer than the whole burst (a GSO super-packet) passes on a full bucket
        // and leaves a debt: without it such a packet could never pass.
        let fits = tokens >= len || tokens >= burst;
        if fits {
            tokens -= len;
            b.passed_bytes += bytes;
            b.passed_packets += packets;
        } else {
            b.dropped_bytes += bytes;
            b.dropped_packets += packets;
        }
        b.tokens = tokens;
        let plain = b.flags & CONTAIN_F_PLAIN_DROP != 0;
        bpf_spin_unlock(lock);
        if fits {
            PASS
        } else if plain {
            DROP
        } else {
            DROP_CN
        }
    }
}
