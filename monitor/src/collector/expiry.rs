//! Decides which kernel flow entries the agent removes, and why. The kernel never removes
//! flows itself, so every removal goes through the agent, which first reads the final counts
//! (see `kernel::batch::take`): removal loses no byte.

use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    /// The socket was released and has been quiet for the grace period.
    Closed,
    /// No packet for the idle timeout (a live but idle socket, or one whose release event was
    /// lost): evicted, counted. It comes back as a new entry if it sends again.
    Idle,
    /// The table is nearly full: the least recently active entries are evicted, counted.
    Pressure,
}

#[derive(Clone, Copy, Debug)]
pub struct ExpiryPolicy {
    /// Quiet time after release before a closed flow is removed: TCP still sends the FIN and
    /// any unsent data after `close()`.
    pub close_grace_ns: u64,
    pub idle_timeout_ns: u64,
    /// Above this fill ratio, evict the oldest entries down to `low_water`.
    pub high_water: f64,
    pub low_water: f64,
    /// Entries active more recently than this are never evicted for pressure.
    pub min_idle_for_pressure_ns: u64,
}

impl Default for ExpiryPolicy {
    fn default() -> Self {
        Self {
            close_grace_ns: 1_000_000_000,
            idle_timeout_ns: 300 * 1_000_000_000,
            high_water: 0.90,
            low_water: 0.80,
            min_idle_for_pressure_ns: 1_000_000_000,
        }
    }
}

/// Returns the indices of the flows to remove, with the reason. Flow `i` is the socket
/// `cookies[i]`, whose counters last grew at `last_active_ns[i]` (the agent's observation:
/// the kernel keeps no per-packet time).
pub fn plan<S: std::hash::BuildHasher>(
    cookies: impl IntoIterator<Item = u64>,
    last_active_ns: &[u64],
    released: &HashMap<u64, u64, S>,
    now_ns: u64,
    max_flows: u32,
    policy: &ExpiryPolicy,
) -> Vec<(usize, Removal)> {
    let idle_for = |i: usize| now_ns.saturating_sub(last_active_ns[i]);
    let mut out = Vec::new();
    let mut keep = Vec::new();
    for (i, cookie) in cookies.into_iter().enumerate() {
        if released.contains_key(&cookie) && idle_for(i) >= policy.close_grace_ns {
            out.push((i, Removal::Closed));
        } else if idle_for(i) >= policy.idle_timeout_ns {
            out.push((i, Removal::Idle));
        } else {
            keep.push(i);
        }
    }
    let max = f64::from(max_flows);
    if keep.len() as f64 > max * policy.high_water {
        let target = (max * policy.low_water) as usize;
        let mut candidates: Vec<usize> = keep
            .into_iter()
            .filter(|&i| idle_for(i) >= policy.min_idle_for_pressure_ns)
            .collect();
        candidates.sort_by_key(|&i| last_active_ns[i]);
        let live = last_active_ns.len() - out.len();
        let excess = live.saturating_sub(target);
        out.extend(
            candidates
                .into_iter()
                .take(excess)
                .map(|i| (i, Removal::Pressure)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn closed_flows_wait_for_the_grace_period() {
        let active = [100 * S, 100 * S];
        let released = HashMap::from([(0, 99 * S)]);
        let p = ExpiryPolicy::default();
        assert_eq!(
            plan(0..2, &active, &released, 100 * S + S / 2, 1000, &p),
            vec![]
        );
        assert_eq!(
            plan(0..2, &active, &released, 101 * S, 1000, &p),
            vec![(0, Removal::Closed)]
        );
    }

    #[test]
    fn idle_flows_are_evicted() {
        let p = ExpiryPolicy::default();
        assert_eq!(
            plan(0..2, &[0, 299 * S], &HashMap::new(), 300 * S, 1000, &p),
            vec![(0, Removal::Idle)]
        );
    }

    #[test]
    fn pressure_evicts_the_oldest_down_to_low_water() {
        // 10 slots, 10 live flows: above 90%, evict down to 8, oldest first, but never one
        // that was active within the last second.
        let active: Vec<u64> = (0..10).map(|i| 100 * S + i * S / 10).collect();
        let p = ExpiryPolicy::default();
        let now = 101 * S + S / 20; // only flow 0 has been idle for >= 1 s
        assert_eq!(
            plan(0..10, &active, &HashMap::new(), now, 10, &p),
            vec![(0, Removal::Pressure)]
        );
        assert_eq!(
            plan(0..10, &active, &HashMap::new(), 110 * S, 10, &p),
            vec![(0, Removal::Pressure), (1, Removal::Pressure)]
        );
    }
}
