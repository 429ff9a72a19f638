//! Populations: what the peers of one kind usually receive, per window length, learned from
//! the peers themselves. A service has three: its clients (peers that came to it), the
//! destinations it learned (peers it connected to while it learned: federation servers, a
//! push gateway, a backup target) and its prefix groups (networks with several clients).
//!
//! What is learned (see `learn`): one value per peer and clock hour for the 1-minute,
//! 10-minute and 1-hour windows (the hour's busiest minute, its busiest ten minutes, its
//! volume) and one per peer and day for the 24-hour window. Every peer-hour counts once,
//! however many samples the peer had: a peer that talks all day weighs 24 hours, not 1,440
//! minutes. How a value becomes a bar: max(floor, quantile x factor x activity), the
//! quantile trimmed while the population is small (see `Distribution::quantile_trimmed`);
//! before the window holds `min_samples` values, max(floor, its largest value x factor x
//! activity): a few values give no quantile, but the largest of them is what a member did.

use super::{
    baseline::{BaselineError, Distribution, PEER_SIGFIG},
    window::WindowLen,
};

/// Values above the quantile that may set it are never fewer than this.
pub const TRIM: u64 = 10;

/// Which population a peer belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Clients,
    Destinations,
    Prefixes,
}

impl Kind {
    pub const ALL: [Self; 3] = [Self::Clients, Self::Destinations, Self::Prefixes];

    pub const fn index(self) -> usize {
        match self {
            Self::Clients => 0,
            Self::Destinations => 1,
            Self::Prefixes => 2,
        }
    }
}

/// How a population becomes a bar, per window length.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PopulationBar {
    pub quantile: f64,
    pub factor: f64,
    /// By `WindowLen::index`: the bar never goes below these, and is exactly these until the
    /// population has `min_samples` values.
    pub floors: [u64; 4],
    pub min_samples: u64,
    /// Windows judged (by `WindowLen::index`).
    pub windows: [bool; 4],
    /// Largest values the quantile never rests on (see [`TRIM`]).
    pub trim: u64,
}

/// A bar, with what it came from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reference {
    /// The bar in bytes for the window.
    pub bytes: u64,
    /// The learned quantile value, once armed.
    pub baseline: Option<u64>,
    pub samples: u64,
    /// The floor is what bound (not armed, or quantile x factor x activity below it).
    pub floor: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Population {
    /// By `WindowLen::index`; allocated at the first value (most services have no clients).
    windows: [Option<Box<Distribution>>; 4],
}

impl Population {
    pub fn record(&mut self, len: WindowLen, bytes: u64) {
        self.windows[len.index()]
            .get_or_insert_with(|| Box::new(Distribution::new(PEER_SIGFIG)))
            .record(bytes);
    }

    pub fn len(&self, len: WindowLen) -> u64 {
        self.windows[len.index()].as_ref().map_or(0, |d| d.len())
    }

    pub fn is_empty(&self) -> bool {
        self.windows.iter().all(Option::is_none)
    }

    /// The learned quantile for `len`, armed or not (for the bounded-influence check).
    pub fn quantile(&mut self, len: WindowLen, bar: &PopulationBar) -> Option<u64> {
        self.windows[len.index()]
            .as_mut()
            .filter(|d| !d.is_empty())
            .map(|d| d.quantile_trimmed(bar.quantile, bar.trim))
    }

    /// The bar for `len` at activity `scale` (1 = a usual hour for the service).
    pub fn reference(&mut self, len: WindowLen, bar: &PopulationBar, scale: f64) -> Reference {
        let floor = bar.floors[len.index()];
        let samples = self.len(len);
        if samples < bar.min_samples.max(1) {
            // Too few values for a quantile: at least the largest seen, with the tolerance
            // (the floor alone would judge a big network's ordinary day by a constant).
            let largest = self.windows[len.index()].as_ref().map_or(0, |d| d.max());
            let seen = (largest as f64 * bar.factor * scale).min(u64::MAX as f64) as u64;
            return Reference {
                bytes: seen.max(floor),
                baseline: None,
                samples,
                floor: seen <= floor,
            };
        }
        let q = self.quantile(len, bar).unwrap_or(0);
        let scaled = (q as f64 * bar.factor * scale).min(u64::MAX as f64) as u64;
        Reference {
            bytes: scaled.max(floor),
            baseline: Some(q),
            samples,
            floor: scaled <= floor,
        }
    }

    /// Four length-prefixed V2 histograms (an empty one is a zero length), each followed by
    /// its cached quantile (value, count; zeros for none): a restart then gives the bars a
    /// run without one would have given.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for w in &self.windows {
            let bytes = w.as_ref().map(|d| d.encode()).unwrap_or_default();
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(&bytes);
            let (value, at) = w.as_ref().and_then(|d| d.cache()).unwrap_or((0, 0));
            out.extend_from_slice(&value.to_le_bytes());
            out.extend_from_slice(&at.to_le_bytes());
        }
        out
    }

    pub fn decode(mut bytes: &[u8]) -> Result<Self, String> {
        let mut p = Self::default();
        for w in &mut p.windows {
            let len_bytes: [u8; 4] = bytes
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .ok_or("truncated")?;
            let len = u32::from_le_bytes(len_bytes) as usize;
            let body = bytes.get(4..4 + len).ok_or("truncated")?;
            let cache = bytes.get(4 + len..20 + len).ok_or("truncated")?;
            bytes = &bytes[20 + len..];
            let u64_at =
                |at: usize| u64::from_le_bytes(cache[at..at + 8].try_into().unwrap_or_default());
            if len > 0 {
                let mut d = Distribution::decode(body, PEER_SIGFIG)
                    .map_err(|e: BaselineError| e.to_string())?;
                let at = u64_at(8);
                d.set_cache((at > 0).then(|| (u64_at(0), at)));
                *w = Some(Box::new(d));
            }
        }
        Ok(p)
    }
}

/// The three populations of a service.
#[derive(Clone, Debug, Default)]
pub struct Populations(pub [Population; 3]);

impl Populations {
    pub fn get_mut(&mut self, kind: Kind) -> &mut Population {
        &mut self.0[kind.index()]
    }

    pub fn get(&self, kind: Kind) -> &Population {
        &self.0[kind.index()]
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for p in &self.0 {
            let bytes = p.encode();
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(&bytes);
        }
        out
    }

    pub fn decode(mut bytes: &[u8]) -> Result<Self, String> {
        let mut all = Self::default();
        for p in &mut all.0 {
            let len_bytes: [u8; 4] = bytes
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .ok_or("truncated")?;
            let len = u32::from_le_bytes(len_bytes) as usize;
            let body = bytes.get(4..4 + len).ok_or("truncated")?;
            bytes = &bytes[4 + len..];
            *p = Population::decode(body)?;
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn bar() -> PopulationBar {
        PopulationBar {
            quantile: 0.999,
            factor: 3.0,
            floors: [48 * MIB, 128 * MIB, 192 * MIB, 768 * MIB],
            min_samples: 100,
            windows: [true; 4],
            trim: TRIM,
        }
    }

    #[test]
    fn the_floor_holds_until_armed_then_quantile_times_factor() {
        let mut p = Population::default();
        let r = p.reference(WindowLen::OneHour, &bar(), 1.0);
        assert_eq!((r.bytes, r.floor, r.baseline), (192 * MIB, true, None));
        for i in 0..10_000u64 {
            p.record(WindowLen::OneHour, (i % 1000 + 1) * 100 * 1024);
        }
        let r = p.reference(WindowLen::OneHour, &bar(), 1.0);
        let q = r.baseline.unwrap();
        assert!((97 * MIB..=100 * MIB).contains(&q), "{q}");
        assert_eq!(r.bytes, (q as f64 * 3.0) as u64);
        assert!(!r.floor);
        // A busy hour for the whole service (activity 2) doubles the learned part.
        let busy = p.reference(WindowLen::OneHour, &bar(), 2.0);
        assert_eq!(busy.bytes, (q as f64 * 6.0) as u64);
        // Other windows have learned nothing yet.
        assert!(p.reference(WindowLen::OneMinute, &bar(), 1.0).floor);
    }

    /// Before a population can give a quantile, the largest value it holds, with the
    /// tolerance, is the bar when above the floor: a network of many households whose
    /// ordinary day is above the prefix floor is not judged by the constant alone.
    #[test]
    fn an_unarmed_population_bars_at_its_largest_value_times_factor() {
        let mut p = Population::default();
        for v in [100, 300, 50] {
            p.record(WindowLen::OneDay, v * MIB);
        }
        let r = p.reference(WindowLen::OneDay, &bar(), 1.0);
        assert_eq!((r.floor, r.baseline), (false, None));
        // 3 x 300 MiB, within the histogram's 1 % resolution.
        assert!((900 * MIB..=910 * MIB).contains(&r.bytes), "{}", r.bytes);
        // Under the floor, the floor.
        let mut small = Population::default();
        small.record(WindowLen::OneDay, 100 * MIB);
        let r = small.reference(WindowLen::OneDay, &bar(), 1.0);
        assert_eq!((r.bytes, r.floor), (768 * MIB, true));
    }

    #[test]
    fn a_few_extreme_values_do_not_set_a_small_populations_bar() {
        let mut p = Population::default();
        for _ in 0..200 {
            p.record(WindowLen::TenMinutes, 2 * MIB);
        }
        for _ in 0..6 {
            p.record(WindowLen::TenMinutes, 5000 * MIB); // six NAT gateways' first hour
        }
        let q = p.quantile(WindowLen::TenMinutes, &bar()).unwrap();
        assert!(q < 3 * MIB, "{q}");
    }

    #[test]
    fn encoding_round_trips() {
        let mut all = Populations::default();
        all.get_mut(Kind::Clients)
            .record(WindowLen::OneMinute, 5000);
        all.get_mut(Kind::Prefixes)
            .record(WindowLen::OneDay, 9_000_000);
        let back = Populations::decode(&all.encode()).unwrap();
        assert_eq!(back.get(Kind::Clients).len(WindowLen::OneMinute), 1);
        assert_eq!(back.get(Kind::Prefixes).len(WindowLen::OneDay), 1);
        assert!(back.get(Kind::Destinations).is_empty());
        assert!(Populations::decode(&[1, 0]).is_err());
    }
}
