//! Retry timing of a failing sink: exponential backoff with jitter. The delay doubles per
//! consecutive failure from `initial` up to `max`, and is drawn from its upper half
//! ("equal jitter"): many agents that lost the same collector do not come back in step,
//! and no retry comes sooner than half the nominal delay.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
    next: Option<Instant>,
    rng: fastrand::Rng,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            failures: 0,
            next: None,
            rng: fastrand::Rng::new(),
        }
    }

    /// May the sink try now?
    pub fn ready(&self, now: Instant) -> bool {
        self.next.is_none_or(|t| now >= t)
    }

    /// Consecutive failures so far.
    pub const fn failures(&self) -> u32 {
        self.failures
    }

    /// Records a failure; returns the delay before the next try.
    pub fn failed(&mut self, now: Instant) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let doublings = (self.failures - 1).min(31);
        let nominal = self.initial.saturating_mul(1 << doublings).min(self.max);
        let half = nominal / 2;
        let jitter = Duration::from_nanos(
            self.rng
                .u64(0..=u64::try_from(half.as_nanos()).unwrap_or(u64::MAX)),
        );
        let delay = half + jitter;
        self.next = Some(now + delay);
        delay
    }

    /// Records a success: the next failure starts again from `initial`.
    pub const fn succeeded(&mut self) {
        self.failures = 0;
        self.next = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_within_jitter_up_to_the_cap_and_resets() {
        let now = Instant::now();
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        assert!(b.ready(now));
        let mut delays = Vec::new();
        for _ in 0..10 {
            delays.push(b.failed(now));
        }
        for (i, d) in delays.iter().enumerate() {
            let nominal = Duration::from_secs((1u64 << i).min(60));
            assert!(
                *d >= nominal / 2 && *d <= nominal,
                "try {i}: {d:?} outside [{:?}, {nominal:?}]",
                nominal / 2
            );
        }
        assert!(
            !b.ready(now + Duration::from_secs(29)),
            "capped at 60 s, half at least"
        );
        assert!(b.ready(now + Duration::from_secs(60)));
        b.succeeded();
        assert!(b.ready(now));
        assert_eq!(b.failures(), 0);
        assert!(
            b.failed(now) <= Duration::from_secs(1),
            "from the start again"
        );
    }

    #[test]
    fn jitter_spreads_retries() {
        let now = Instant::now();
        let delays: std::collections::HashSet<Duration> = (0..20)
            .map(|_| {
                let mut b = Backoff::new(Duration::from_secs(8), Duration::from_secs(60));
                b.failed(now)
            })
            .collect();
        assert!(delays.len() > 10, "{delays:?}");
    }
}
