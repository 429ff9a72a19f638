//! Converts kernel timestamps (`bpf_ktime_get_ns`, `CLOCK_MONOTONIC`) to wall-clock time.

use jiff::{SignedDuration, Timestamp};
use nix::time::{ClockId, clock_gettime};

/// Nanoseconds of `CLOCK_MONOTONIC`, the clock of `bpf_ktime_get_ns` and `bpf_ktime_get_coarse_ns`.
pub fn monotonic_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        (t.tv_sec() as u64).saturating_mul(1_000_000_000) + t.tv_nsec() as u64
    })
}

/// Wall-clock time of a monotonic timestamp, relative to now.
pub fn to_timestamp(mono_ns: u64) -> Timestamp {
    let now_mono = monotonic_ns();
    let now = Timestamp::now();
    let ago = now_mono.saturating_sub(mono_ns);
    now.checked_sub(SignedDuration::from_nanos(ago as i64))
        .unwrap_or(now)
}
