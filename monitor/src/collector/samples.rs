//! The order of a poll's samples.

use std::cmp::Reverse;

use crate::flow::FlowSample;

/// Sorts `samples` largest first, equal ones in the order they were made (a stable sort).
/// Not `sort_by_key`: its stable sort borrows a scratch buffer of half the slice, 8 MB of
/// samples at 100k flows, which was the agent's peak memory. `sort_by_cached_key` is just as
/// stable (it sorts (bytes, position) pairs, 16 bytes a sample, then moves the samples in
/// place).
pub(super) fn sort_largest_first(samples: &mut [FlowSample]) {
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
    }
}
