//! The own curve of a heavy peer (a NAT gateway, a busy federation server, a backup target):
//! for each UTC hour of the day, its usual busiest ten minutes. A heavy peer is judged
//! against this curve (rule `peer_rise`), never against the population of ordinary clients,
//! which it exceeds by nature.
//!
//! Learning: while the service learns (or for a day after an operator confirmed the peer)
//! each hour's slot takes the busiest ten minutes seen at that hour. After that a slot moves
//! once a day (each clock hour updates its own slot once): up by a quarter of the way to the
//! new value, but only from values at most 25 % above the slot (so one slot can grow by at
//! most 6.25 % a day, whatever the peer does); down by a sixteenth of the way (a quiet
//! weekend barely lowers Monday's expectation). An attacker who stays just under the alert
//! bar for days is above the 25 % watermark and teaches the curve nothing; one who stays
//! under the watermark gains at most 6.25 % a day (about 50 % in a week, while sending only
//! what the curve already allowed).

/// Growth from one day's value is taken only up to this ratio of the slot.
const LEARN_UP_TO: f64 = 1.25;
/// Fractions of the way an after-learning update moves a slot up / down.
const UP: u64 = 4;
const DOWN: u64 = 16;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Curve {
    /// Busiest ten minutes at each hour of day, in KiB (0: nothing seen at that hour).
    slots: [u32; 24],
    /// Until this time (Unix seconds) every hour raises its slot to what it saw.
    learn_until: u32,
}

impl Curve {
    pub const ENCODED_LEN: usize = 4 + 24 * 4;

    /// A curve that learns freely until `learn_until` (Unix seconds).
    pub fn learning_until(learn_until: u64) -> Self {
        Self {
            slots: [0; 24],
            learn_until: u32::try_from(learn_until).unwrap_or(u32::MAX),
        }
    }

    pub fn learns_freely(&self, secs: u64) -> bool {
        secs < u64::from(self.learn_until)
    }

    /// Extends free learning (an operator confirmed the peer as normal).
    pub fn learn_freely_until(&mut self, secs: u64) {
        self.learn_until = self
            .learn_until
            .max(u32::try_from(secs).unwrap_or(u32::MAX));
    }

    fn slot_bytes(&self, hour: usize) -> u64 {
        u64::from(self.slots[hour % 24]) * 1024
    }

    /// The expected busiest ten minutes around `secs`: the largest of this hour's slot and its
    /// neighbours' (the same traffic shifted by half an hour is still normal).
    ///
    /// While the curve still learns freely it has not seen every hour yet (a peer made heavy
    /// late in the learning period, or confirmed by an operator), so every hour expects the
    /// busiest slot seen so far instead of an empty one.
    pub fn expected(&self, secs: u64) -> u64 {
        if self.learns_freely(secs) {
            return self
                .slots
                .iter()
                .map(|&s| u64::from(s) * 1024)
                .max()
                .unwrap_or(0);
        }
        let h = ((secs / 3600) % 24) as usize;
        self.slot_bytes(h + 23)
            .max(self.slot_bytes(h))
            .max(self.slot_bytes(h + 1))
    }

    /// Raises the slot of the hour that started at `hour_start` to `peak` (what the peer did
    /// while the service learned).
    pub fn seed(&mut self, hour_start: u64, peak: u64) {
        let h = ((hour_start / 3600) % 24) as usize;
        let kib = u32::try_from(peak.div_ceil(1024)).unwrap_or(u32::MAX);
        self.slots[h] = self.slots[h].max(kib);
    }

    /// Learns the busiest ten minutes `peak` of the clock hour that started at `hour_start`
    /// (Unix seconds); `now` decides whether learning is still free.
    pub fn learn(&mut self, hour_start: u64, peak: u64, now: u64) {
        let h = ((hour_start / 3600) % 24) as usize;
        let old = u64::from(self.slots[h]) * 1024;
        let new = if self.learns_freely(now) {
            old.max(peak)
        } else if peak < old {
            old - (old - peak) / DOWN
        } else if peak as f64 <= old as f64 * LEARN_UP_TO {
            old + (peak - old) / UP
        } else {
            old
        };
        self.slots[h] = u32::try_from(new.div_ceil(1024)).unwrap_or(u32::MAX);
    }

    pub fn to_bytes(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        out[0..4].copy_from_slice(&self.learn_until.to_le_bytes());
        for (i, s) in self.slots.iter().enumerate() {
            out[4 + i * 4..8 + i * 4].copy_from_slice(&s.to_le_bytes());
        }
        out
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != Self::ENCODED_LEN {
            return None;
        }
        let u32_at = |at: usize| b[at..at + 4].try_into().ok().map(u32::from_le_bytes);
        let mut c = Self {
            learn_until: u32_at(0)?,
            ..Self::default()
        };
        for i in 0..24 {
            c.slots[i] = u32_at(4 + i * 4)?;
        }
        Some(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;
    const T: u64 = 1_780_272_000; // midnight UTC
    const MIB: u64 = 1 << 20;

    #[test]
    fn learning_takes_the_busiest_and_neighbours_count() {
        let mut c = Curve::learning_until(T + DAY);
        c.learn(T + 10 * 3600, 100 * MIB, T + 11 * 3600);
        c.learn(T + 10 * 3600, 80 * MIB, T + 11 * 3600);
        // While learning, an hour not seen yet expects the busiest one.
        assert_eq!(c.expected(T + 13 * 3600), 100 * MIB);
        // After, each hour its own slot and its neighbours'.
        let after = T + DAY;
        assert_eq!(c.expected(after + 10 * 3600 + 5), 100 * MIB);
        assert_eq!(c.expected(after + 9 * 3600), 100 * MIB, "the hour before");
        assert_eq!(c.expected(after + 11 * 3600), 100 * MIB, "the hour after");
        assert_eq!(c.expected(after + 13 * 3600), 0);
        // Around midnight the neighbours wrap.
        c.learn(T + 23 * 3600, 5 * MIB, T + 23 * 3600);
        assert_eq!(c.expected(after + DAY + 60), 5 * MIB);
    }

    #[test]
    fn after_learning_a_slot_cannot_be_ratcheted() {
        let mut c = Curve::learning_until(T + DAY);
        c.learn(T + 10 * 3600, 100 * MIB, T);
        // An attacker just under a 1.5x bar for a month: above the watermark, learns nothing.
        for day in 1..30 {
            c.learn(
                T + day * DAY + 10 * 3600,
                149 * MIB,
                T + day * DAY + 11 * 3600,
            );
        }
        assert_eq!(c.expected(T + 10 * 3600), 100 * MIB);
        // One just under the watermark for a week gains at most 6.25 % a day.
        let mut c2 = c;
        for day in 1..8 {
            let slot = c2.expected(T + 10 * 3600);
            c2.learn(
                T + day * DAY + 10 * 3600,
                slot * 124 / 100,
                T + day * DAY + 11 * 3600,
            );
        }
        let grown = c2.expected(T + 10 * 3600) as f64 / (100 * MIB) as f64;
        assert!((1.3..1.55).contains(&grown), "{grown}");
        // A quiet day lowers it only a little.
        c.learn(T + 40 * DAY + 10 * 3600, 0, T + 40 * DAY + 11 * 3600);
        assert!(c.expected(T + 10 * 3600) >= 93 * MIB);
    }

    #[test]
    fn encoding_round_trips() {
        let mut c = Curve::learning_until(T + DAY);
        c.learn(T + 7 * 3600, 12_345_678, T);
        assert_eq!(Curve::from_bytes(&c.to_bytes()), Some(c));
        assert_eq!(Curve::from_bytes(&[0; 3]), None);
    }
}
