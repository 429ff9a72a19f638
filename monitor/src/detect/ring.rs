//! Ten-minute slots of the last 70 minutes: the 10-minute and the one-hour windows of a peer.
//!
//! The one-hour window is the one that catches a patient pull (a few MiB a minute), so it is
//! kept at ten-minute resolution rather than as two hour-long buckets: two buckets read a
//! steady pull that started in the middle of the previous hour as 75 % of its real volume
//! after one hour (`(1 - a + a²)` of it, a = 0.5), ten-minute slots never less than 5/6 of
//! it (the oldest slot is assumed uniform), and exactly when it started on a slot boundary. The slots also give, at each hour's end, the hour's volume and its
//! busiest ten minutes: what the populations and the own curves learn from.

/// Length of one slot.
pub const SLOT_SECS: u64 = 600;
/// Slots kept: the current one, the five before it (together one hour with the current one
/// partly elapsed) and a seventh whose remainder ages out linearly.
const SLOTS: usize = 7;
/// Slots in an hour.
pub const PER_HOUR: u64 = 3600 / SLOT_SECS;

/// Bytes and packets per ten-minute slot. Slot `i` holds epoch `e` (`t / 600`) with
/// `e % 7 == i`, valid while `epoch - e < 7`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ring {
    bytes: [u64; SLOTS],
    packets: [u32; SLOTS],
    /// Epoch of the newest slot.
    epoch: u32,
}

/// Volume of one window.
pub use super::window::Volume;

impl Ring {
    pub const ENCODED_LEN: usize = 4 + SLOTS * 12;

    fn index(e: u64) -> usize {
        (e % SLOTS as u64) as usize
    }

    /// The slot of epoch `e`, or nothing when it is not (or no longer) held.
    pub fn slot(&self, e: u64) -> (u64, u32) {
        let newest = u64::from(self.epoch);
        if e <= newest && newest - e < SLOTS as u64 {
            let i = Self::index(e);
            (self.bytes[i], self.packets[i])
        } else {
            (0, 0)
        }
    }

    /// Epoch of the newest slot (`t / 600` of the latest roll).
    pub fn epoch(&self) -> u64 {
        u64::from(self.epoch)
    }

    /// Moves to time `secs`, clearing the slots that new epochs reuse. Time going backwards
    /// (an out-of-order sample) stays in the newest slot.
    pub fn roll(&mut self, secs: u64) {
        let e = secs / SLOT_SECS;
        let newest = u64::from(self.epoch);
        if e <= newest {
            return;
        }
        let fresh = (e - newest).min(SLOTS as u64);
        for k in 0..fresh {
            let i = Self::index(e - k);
            self.bytes[i] = 0;
            self.packets[i] = 0;
        }
        self.epoch = u32::try_from(e).unwrap_or(u32::MAX);
    }

    /// Adds to the newest slot (the caller rolled to the sample's time first).
    pub fn add(&mut self, bytes: u64, packets: u64) {
        let i = Self::index(u64::from(self.epoch));
        self.bytes[i] = self.bytes[i].saturating_add(bytes);
        self.packets[i] =
            self.packets[i].saturating_add(u32::try_from(packets).unwrap_or(u32::MAX));
    }

    /// Volume of the last `slots` x 10 minutes at `millis` (Unix ms): the whole slots that the
    /// window covers, plus the part of the oldest one still inside it (assumed uniform).
    fn estimate(&self, slots: u64, millis: u64) -> Volume {
        let len_ms = SLOT_SECS * 1000;
        let now = millis / len_ms;
        let keep = len_ms - millis % len_ms;
        let mut v = Volume::default();
        for k in 0..slots {
            let Some(e) = now.checked_sub(k) else { break };
            let (b, p) = self.slot(e);
            v.bytes += b;
            v.packets += u64::from(p);
        }
        if let Some(e) = now.checked_sub(slots) {
            let (b, p) = self.slot(e);
            v.bytes += scale(b, keep, len_ms);
            v.packets += scale(u64::from(p), keep, len_ms);
        }
        v
    }

    /// The last ten minutes.
    pub fn ten_minutes(&self, millis: u64) -> Volume {
        self.estimate(1, millis)
    }

    /// The last hour.
    pub fn hour(&self, millis: u64) -> Volume {
        self.estimate(PER_HOUR, millis)
    }

    /// The clock hour `hour` (`t / 3600`): its volume and its busiest slot, while the ring
    /// still holds its slots.
    pub fn hour_summary(&self, hour: u64) -> (u64, u64) {
        let first = hour * PER_HOUR;
        (first..first + PER_HOUR).fold((0, 0), |(sum, peak), e| {
            let (b, _) = self.slot(e);
            (sum + b, peak.max(b))
        })
    }

    /// Adds every slot of `other` to this ring's slots of the same epochs (a prefix group
    /// created from its first member takes the member's history).
    pub fn merge(&mut self, other: &Self) {
        if other.epoch > self.epoch {
            self.roll(other.epoch() * SLOT_SECS);
        }
        let newest = other.epoch();
        for k in 0..SLOTS as u64 {
            let Some(e) = newest.checked_sub(k) else {
                break;
            };
            let (b, p) = other.slot(e);
            if b == 0 && p == 0 {
                continue;
            }
            let (have, _) = self.slot(e);
            let held = e <= self.epoch() && self.epoch() - e < SLOTS as u64;
            if held {
                let i = Self::index(e);
                self.bytes[i] = have.saturating_add(b);
                self.packets[i] = self.packets[i].saturating_add(p);
            }
        }
    }

    /// Little-endian fixed encoding (checkpoints).
    pub fn to_bytes(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        out[0..4].copy_from_slice(&self.epoch.to_le_bytes());
        for i in 0..SLOTS {
            out[4 + i * 8..12 + i * 8].copy_from_slice(&self.bytes[i].to_le_bytes());
            let at = 4 + SLOTS * 8 + i * 4;
            out[at..at + 4].copy_from_slice(&self.packets[i].to_le_bytes());
        }
        out
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != Self::ENCODED_LEN {
            return None;
        }
        let mut r = Self {
            epoch: u32::from_le_bytes(b[0..4].try_into().ok()?),
            ..Self::default()
        };
        for i in 0..SLOTS {
            r.bytes[i] = u64::from_le_bytes(b[4 + i * 8..12 + i * 8].try_into().ok()?);
            let at = 4 + SLOTS * 8 + i * 4;
            r.packets[i] = u32::from_le_bytes(b[at..at + 4].try_into().ok()?);
        }
        Some(r)
    }
}

/// `value * num / den` without overflow.
fn scale(value: u64, num: u64, den: u64) -> u64 {
    match value.checked_mul(num) {
        Some(product) => product / den,
        None => (u128::from(value) * u128::from(num) / u128::from(den)) as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_780_272_000; // an hour boundary

    fn add(r: &mut Ring, secs: u64, bytes: u64) {
        r.roll(secs);
        r.add(bytes, 1);
    }

    #[test]
    fn a_steady_pull_reads_at_least_five_sixths_after_an_hour_wherever_it_started() {
        // 4 MiB a minute: one hour after it started the window holds at least 50 of its 60
        // minutes (two hour-long buckets could read 45), exactly 60 when it started on a slot
        // boundary.
        for start_min in [0u64, 7, 30, 55, 59] {
            let mut r = Ring::default();
            let start = T + start_min * 60;
            for m in 0..60 {
                add(&mut r, start + m * 60, 4 << 20);
            }
            let end_ms = (start + 60 * 60) * 1000;
            let got = r.hour(end_ms).bytes;
            assert!(
                ((200 << 20)..=(240 << 20)).contains(&got),
                "start +{start_min} min: {got}"
            );
            if start_min % 10 == 0 {
                assert_eq!(got, 240 << 20);
            }
        }
    }

    #[test]
    fn ten_minutes_fade_like_a_two_bucket_window() {
        let mut r = Ring::default();
        add(&mut r, T, 600);
        // A quarter into the next slot: three quarters of the previous one count.
        assert_eq!(r.ten_minutes((T + 750) * 1000).bytes, 450);
        add(&mut r, T + 750, 10);
        assert_eq!(r.ten_minutes((T + 750) * 1000).bytes, 460);
        // Two slots later: nothing of the first, all of the second (just completed).
        assert_eq!(r.ten_minutes((T + 1200) * 1000).bytes, 10);
        assert_eq!(r.ten_minutes((T + 1800) * 1000).bytes, 0);
    }

    #[test]
    fn old_slots_are_cleared_when_reused() {
        let mut r = Ring::default();
        add(&mut r, T, 100);
        add(&mut r, T + 7 * 600, 5);
        assert_eq!(r.slot(T / 600), (0, 0), "seven slots later: gone");
        assert_eq!(r.hour((T + 7 * 600) * 1000).bytes, 5);
        // A long gap clears everything.
        add(&mut r, T + 100 * 600, 1);
        assert_eq!(r.hour((T + 100 * 600) * 1000).bytes, 1);
        // Out of order: into the newest slot.
        add(&mut r, T, 2);
        assert_eq!(r.hour((T + 100 * 600) * 1000).bytes, 3);
    }

    #[test]
    fn an_hour_summary_is_its_volume_and_its_busiest_slot() {
        let mut r = Ring::default();
        for (slot, bytes) in [(0u64, 10u64), (1, 50), (3, 20), (5, 5)] {
            add(&mut r, T + slot * 600 + 30, bytes);
        }
        assert_eq!(r.hour_summary(T / 3600), (85, 50));
        assert_eq!(r.hour_summary(T / 3600 - 1), (0, 0));
    }

    #[test]
    fn merging_adds_slot_by_slot() {
        let mut a = Ring::default();
        let mut b = Ring::default();
        add(&mut a, T, 10);
        add(&mut b, T, 1);
        add(&mut b, T + 600, 2);
        a.merge(&b);
        assert_eq!(a.epoch(), T / 600 + 1);
        assert_eq!(a.slot(T / 600).0, 11);
        assert_eq!(a.slot(T / 600 + 1).0, 2);
    }

    #[test]
    fn encoding_round_trips() {
        let mut r = Ring::default();
        add(&mut r, T, 123);
        add(&mut r, T + 600, 456);
        assert_eq!(Ring::from_bytes(&r.to_bytes()), Some(r));
        assert_eq!(Ring::from_bytes(&[1, 2, 3]), None);
    }
}
