//! Converts kernel timestamps (`bpf_ktime_get_ns`, `CLOCK_MONOTONIC`) to wall-clock time.

use jiff::{SignedDuration, Timestamp};
use nix::time::{ClockId, clock_gettime};

/// Nanoseconds of `CLOCK_MONOTONIC`, the clock of `bpf_ktime_get_ns` and `bpf_ktime_get_coarse_ns`.
pub fn monotonic_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        (t.tv_sec() as u64).saturating_mul(1_000_000_000) + t.tv_nsec() as u64
    })
}

/// Converts monotonic kernel timestamps to wall-clock time, from one reading of both clocks
/// (taken once per poll, so converting thousands of timestamps costs no syscall).
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    mono_ns: u64,
    wall: Timestamp,
}

impl WallClock {
    pub fn now() -> Self {
        Self {
            mono_ns: monotonic_ns(),
            wall: Timestamp::now(),
        }
    }

    /// A reading taken at known values of both clocks (for tests).
    pub const fn at(mono_ns: u64, wall: Timestamp) -> Self {
        Self { mono_ns, wall }
    }

    /// Wall-clock time of monotonic instant `mono_ns`.
    pub fn wall(&self, mono_ns: u64) -> Timestamp {
        let delta = i128::from(mono_ns) - i128::from(self.mono_ns);
        let delta = i64::try_from(delta).unwrap_or(0);
        self.wall
            .checked_add(SignedDuration::from_nanos(delta))
            .unwrap_or(self.wall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_both_ways_around_the_reading() {
        let wall: Timestamp = "2026-11-26T10:00:00Z".parse().unwrap();
        let c = WallClock::at(5_000_000_000, wall);
        assert_eq!(c.wall(5_000_000_000), wall);
        assert_eq!(c.wall(4_500_000_000).to_string(), "2026-11-26T09:59:59.5Z");
        assert_eq!(
            c.wall(6_000_000_001).to_string(),
            "2026-11-26T10:00:01.000000001Z"
        );
    }

    #[test]
    fn monotonic_clock_reads_and_never_goes_back() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0 && b >= a);
    }
}
