//! Sliding-window volume estimates in constant space.
//!
//! A window of length L keeps two aligned buckets: the current one (epoch `t / L`) and the
//! previous one. The volume of the last L seconds at time t is estimated as
//! `previous * (1 - elapsed/L) + current`: the previous bucket is assumed uniform. This is
//! the "sliding window counter" of rate limiters: 24 bytes per window instead of a ring of
//! sub-buckets, which is what keeps a (service, peer) pair under 512 bytes at a million
//! peers. The estimate is exact for the current bucket and never more than one bucket's
//! uniformity error off, which is well inside what thresholds of megabytes need.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The window lengths the rules use. Fixed so that every peer keeps the same four windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WindowLen {
    #[serde(rename = "1m")]
    OneMinute,
    #[serde(rename = "10m")]
    TenMinutes,
    #[serde(rename = "1h")]
    OneHour,
    #[serde(rename = "24h")]
    OneDay,
}

impl WindowLen {
    pub const ALL: [Self; 4] = [
        Self::OneMinute,
        Self::TenMinutes,
        Self::OneHour,
        Self::OneDay,
    ];

    pub const fn secs(self) -> u32 {
        match self {
            Self::OneMinute => 60,
            Self::TenMinutes => 600,
            Self::OneHour => 3600,
            Self::OneDay => 86_400,
        }
    }

    /// Index into a peer's window array.
    pub const fn index(self) -> usize {
        match self {
            Self::OneMinute => 0,
            Self::TenMinutes => 1,
            Self::OneHour => 2,
            Self::OneDay => 3,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::OneMinute => "1m",
            Self::TenMinutes => "10m",
            Self::OneHour => "1h",
            Self::OneDay => "24h",
        }
    }
}

impl fmt::Display for WindowLen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Bytes and packets of one window, as two aligned buckets. Packed to 4-byte alignment: 28
/// bytes instead of 32, 16 bytes less per peer (fields are only ever copied, never borrowed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C, packed(4))]
pub struct Window {
    /// Epoch (`t / len`) of the current bucket.
    epoch: u32,
    cur_bytes: u64,
    prev_bytes: u64,
    cur_packets: u32,
    prev_packets: u32,
}

/// What rolling a window forward dropped: the bucket that just completed, if any had volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completed {
    pub bytes: u64,
    /// Epoch of the completed bucket (its start is `epoch * len`).
    pub epoch: u32,
}

/// The window's volume at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub bytes: u64,
    pub packets: u64,
}

impl Window {
    /// Moves the window to time `secs` (Unix seconds). Returns the completed current bucket
    /// when the window moved past it, so baselines can learn from whole buckets.
    pub fn roll(&mut self, len: WindowLen, secs: u64) -> Option<Completed> {
        let epoch = (secs / u64::from(len.secs())) as u32;
        if epoch <= self.epoch {
            return None;
        }
        let completed = (self.cur_bytes > 0).then_some(Completed {
            bytes: self.cur_bytes,
            epoch: self.epoch,
        });
        if epoch == self.epoch + 1 {
            self.prev_bytes = self.cur_bytes;
            self.prev_packets = self.cur_packets;
        } else {
            self.prev_bytes = 0;
            self.prev_packets = 0;
        }
        self.cur_bytes = 0;
        self.cur_packets = 0;
        self.epoch = epoch;
        completed
    }

    /// Adds volume at time `secs`; the caller has rolled the window to `secs` first.
    pub fn add(&mut self, bytes: u64, packets: u64) {
        self.cur_bytes = self.cur_bytes.saturating_add(bytes);
        self.cur_packets = self
            .cur_packets
            .saturating_add(u32::try_from(packets).unwrap_or(u32::MAX));
    }

    /// Estimated volume of the last `len` seconds at time `secs_ms` (Unix milliseconds), which
    /// must not be before the last roll.
    pub fn estimate(&self, len: WindowLen, millis: u64) -> Volume {
        let len_ms = u64::from(len.secs()) * 1000;
        let epoch = millis / len_ms;
        if epoch > u64::from(self.epoch) + 1 {
            return Volume::default();
        }
        if epoch == u64::from(self.epoch) + 1 {
            // Not rolled yet: the current bucket is now the previous one.
            let elapsed = millis % len_ms;
            return Volume {
                bytes: scale(self.cur_bytes, len_ms - elapsed, len_ms),
                packets: scale(u64::from(self.cur_packets), len_ms - elapsed, len_ms),
            };
        }
        let elapsed = millis.saturating_sub(u64::from(self.epoch) * len_ms);
        let keep = len_ms.saturating_sub(elapsed);
        Volume {
            bytes: self.cur_bytes + scale(self.prev_bytes, keep, len_ms),
            packets: u64::from(self.cur_packets)
                + scale(u64::from(self.prev_packets), keep, len_ms),
        }
    }
}

impl Window {
    /// Epoch of the current bucket.
    pub fn epoch(&self) -> u64 {
        u64::from(self.epoch)
    }

    pub fn current_bytes(&self) -> u64 {
        self.cur_bytes
    }

    pub fn previous_bytes(&self) -> u64 {
        self.prev_bytes
    }

    /// Adds `other`'s buckets to this window's buckets of the same epochs.
    pub fn merge(&mut self, other: &Self, len: WindowLen) {
        if other.epoch > self.epoch {
            self.roll(len, u64::from(other.epoch) * u64::from(len.secs()));
        }
        let (mine, theirs) = (self.epoch, other.epoch);
        if mine == theirs {
            self.cur_bytes = self.cur_bytes.saturating_add(other.cur_bytes);
            self.cur_packets = self.cur_packets.saturating_add(other.cur_packets);
            self.prev_bytes = self.prev_bytes.saturating_add(other.prev_bytes);
            self.prev_packets = self.prev_packets.saturating_add(other.prev_packets);
        } else if mine == theirs + 1 {
            self.prev_bytes = self.prev_bytes.saturating_add(other.cur_bytes);
            self.prev_packets = self.prev_packets.saturating_add(other.cur_packets);
        }
    }

    pub const ENCODED_LEN: usize = 28;

    /// Little-endian fixed encoding (checkpoints).
    pub fn to_bytes(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        out[0..4].copy_from_slice(&self.epoch.to_le_bytes());
        out[4..12].copy_from_slice(&self.cur_bytes.to_le_bytes());
        out[12..20].copy_from_slice(&self.prev_bytes.to_le_bytes());
        out[20..24].copy_from_slice(&self.cur_packets.to_le_bytes());
        out[24..28].copy_from_slice(&self.prev_packets.to_le_bytes());
        out
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != Self::ENCODED_LEN {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| u64::from(u32_at(i)) | (u64::from(u32_at(i + 4)) << 32);
        Some(Self {
            epoch: u32_at(0),
            cur_bytes: u64_at(4),
            prev_bytes: u64_at(12),
            cur_packets: u32_at(20),
            prev_packets: u32_at(24),
        })
    }
}

/// `value * num / den` without overflow.
fn scale(value: u64, num: u64, den: u64) -> u64 {
    // u64 arithmetic whenever the product fits (values under ~200 GB per bucket): a 128-bit
    // division is a library call, and estimates run several times per sample.
    match value.checked_mul(num) {
        Some(product) => product / den,
        None => (u128::from(value) * u128::from(num) / u128::from(den)) as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: WindowLen = WindowLen::OneMinute;

    fn add(w: &mut Window, secs: u64, bytes: u64) -> Option<Completed> {
        let done = w.roll(L, secs);
        w.add(bytes, 1);
        done
    }

    #[test]
    fn within_one_bucket_the_estimate_is_exact() {
        let mut w = Window::default();
        add(&mut w, 6000, 100);
        add(&mut w, 6030, 50);
        assert_eq!(w.estimate(L, 6_030_000).bytes, 150);
        assert_eq!(w.estimate(L, 6_030_000).packets, 2);
    }

    #[test]
    fn the_previous_bucket_fades_linearly() {
        let mut w = Window::default();
        add(&mut w, 6000, 600);
        // 15 s into the next bucket: three quarters of the previous one still count.
        assert_eq!(add(&mut w, 6075, 0).map(|c| c.bytes), Some(600));
        assert_eq!(w.estimate(L, 6_075_000).bytes, 450);
        assert_eq!(w.estimate(L, 6_119_000).bytes, 10);
        // Read before the roll: same answer.
        let mut fresh = Window::default();
        add(&mut fresh, 6000, 600);
        assert_eq!(fresh.estimate(L, 6_075_000).bytes, 450);
    }

    #[test]
    fn a_gap_of_two_buckets_forgets_everything() {
        let mut w = Window::default();
        add(&mut w, 6000, 600);
        assert_eq!(w.estimate(L, 6_130_000).bytes, 0);
        add(&mut w, 6130, 5);
        assert_eq!(w.estimate(L, 6_130_000).bytes, 5);
    }

    #[test]
    fn a_steady_rate_is_estimated_at_the_window_volume() {
        // 10 bytes every second: any 60 s window holds 600.
        let mut w = Window::default();
        for s in 6000..6200 {
            add(&mut w, s, 10);
        }
        let got = w.estimate(L, 6_199_999).bytes;
        assert!((590..=610).contains(&got), "{got}");
    }

    #[test]
    fn scaling_is_exact_beyond_64_bits() {
        assert_eq!(scale(600, 45_000, 60_000), 450);
        assert_eq!(
            scale(u64::MAX, 86_399_999, 86_400_000),
            (u128::from(u64::MAX) * 86_399_999 / 86_400_000) as u64
        );
    }

    #[test]
    fn completed_buckets_are_reported_once() {
        let mut w = Window::default();
        assert_eq!(add(&mut w, 60, 7), None);
        assert_eq!(add(&mut w, 119, 3), None);
        assert_eq!(
            add(&mut w, 120, 1),
            Some(Completed {
                bytes: 10,
                epoch: 1
            })
        );
        assert_eq!(add(&mut w, 121, 1), None);
        // Time going backwards (out-of-order sample) lands in the current bucket.
        assert_eq!(add(&mut w, 30, 1), None);
        assert_eq!(w.estimate(L, 121_000).bytes, 3 + 10 * 59 / 60);
    }
}
