//! Learned distributions (hdrhistogram): per service, the per-peer window volumes (rule 2)
//! and the per-minute totals by hour of day (rule 3).

use hdrhistogram::{
    Histogram,
    serialization::{Deserializer, Serializer as _, V2Serializer},
};
use thiserror::Error;

/// Largest value recorded: 16 TiB per window (larger values are clamped).
const MAX_VALUE: u64 = 1 << 44;

#[derive(Debug, Error)]
pub enum BaselineError {
    #[error("decoding a stored histogram")]
    Decode(#[source] hdrhistogram::serialization::DeserializeError),
    #[error("creating a histogram")]
    Create(#[source] hdrhistogram::CreationError),
}

/// A distribution of byte volumes with a cached threshold.
#[derive(Clone, Debug)]
pub struct Distribution {
    hist: Histogram<u32>,
    /// (threshold source value, count when computed).
    cached: Option<(u64, u64)>,
}

impl Distribution {
    /// `sigfig` 2 gives 1 % resolution (about 19 KiB); 1 gives 10 % (about 2.5 KiB), enough
    /// for the 25 time-of-day histograms of every service.
    pub fn new(sigfig: u8) -> Self {
        Self {
            hist: Histogram::new_with_bounds(1, MAX_VALUE, sigfig)
                .expect("static histogram bounds are valid"),
            cached: None,
        }
    }

    pub fn record(&mut self, bytes: u64) {
        self.hist.saturating_record(bytes.clamp(1, MAX_VALUE));
    }

    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    /// The largest value recorded (0 when empty).
    pub fn max(&self) -> u64 {
        self.hist.max()
    }

    /// The value at `quantile`, cached until the distribution grew by 1 % (quantiles of a
    /// histogram with thousands of buckets are too slow to compute per sample).
    pub fn quantile(&mut self, quantile: f64) -> u64 {
        self.quantile_trimmed(quantile, 0)
    }

    /// The value at `quantile`, or lower while the distribution is small: never above the
    /// value that leaves `trim` values above it. A high quantile of a few hundred values is
    /// the largest of them, whatever it is; with `trim`, a handful of extreme values (the first
    /// hour of a NAT gateway before it is known as heavy) cannot set the bar. Cached like
    /// [`Self::quantile`].
    pub fn quantile_trimmed(&mut self, quantile: f64, trim: u64) -> u64 {
        let len = self.hist.len();
        if let Some((value, at)) = self.cached
            && len >= at
            && len <= at + at / 100
        {
            return value;
        }
        let q = if len > trim {
            quantile.min(1.0 - trim as f64 / len as f64)
        } else {
            0.0
        };
        let value = self.hist.value_at_quantile(q);
        self.cached = Some((value, len));
        value
    }

    /// The cached quantile (value, count when computed): stored with the distribution where
    /// a restart must give the same bars as a run without one.
    pub fn cache(&self) -> Option<(u64, u64)> {
        self.cached
    }

    pub fn set_cache(&mut self, cached: Option<(u64, u64)>) {
        self.cached = cached;
    }

    /// Compressed V2 encoding, for the state database.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Serializing into a Vec cannot fail on I/O; an encoding error would be a bug.
        if let Err(e) = V2Serializer::new().serialize(&self.hist, &mut out) {
            tracing::error!(error = %e, "encoding a histogram");
            out.clear();
        }
        out
    }

    pub fn decode(bytes: &[u8], sigfig: u8) -> Result<Self, BaselineError> {
        let stored: Histogram<u32> = Deserializer::new()
            .deserialize(&mut &bytes[..])
            .map_err(BaselineError::Decode)?;
        let mut hist =
            Histogram::new_with_bounds(1, MAX_VALUE, sigfig).map_err(BaselineError::Create)?;
        // Re-bucket into the bounds used now (stored ones may come from another version).
        for v in stored.iter_recorded() {
            hist.saturating_record_n(
                v.value_iterated_to().clamp(1, MAX_VALUE),
                v.count_at_value(),
            );
        }
        Ok(Self { hist, cached: None })
    }
}

/// How a learned distribution becomes a threshold: max(`floor`, value at `quantile` x
/// `factor`), once `min_samples` values were learned.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bar {
    pub quantile: f64,
    pub factor: f64,
    pub floor: u64,
    pub min_samples: u64,
}

/// (threshold, value at the quantile), or `None` while fewer than `min_samples` values were
/// learned.
pub fn threshold(dist: &mut Distribution, bar: &Bar) -> Option<(u64, u64)> {
    if dist.len() < bar.min_samples.max(1) {
        return None;
    }
    let q = dist.quantile(bar.quantile);
    let scaled = (q as f64 * bar.factor).min(u64::MAX as f64) as u64;
    Some((scaled.max(bar.floor), q))
}

/// Hour of day (UTC) of a Unix time.
pub fn hour_of_day(secs: u64) -> usize {
    ((secs / 3600) % 24) as usize
}

/// Rule 3's baseline: per-minute service totals, by UTC hour of day, plus the whole day as
/// the fallback for hours not yet learned. Hours are allocated when first seen.
#[derive(Clone, Debug)]
pub struct TimeOfDay {
    pub hours: Vec<Option<Distribution>>,
    pub all_day: Distribution,
}

impl Default for TimeOfDay {
    fn default() -> Self {
        Self {
            hours: vec![None; 24],
            all_day: Distribution::new(TIME_OF_DAY_SIGFIG),
        }
    }
}

pub const TIME_OF_DAY_SIGFIG: u8 = 1;
pub const PEER_SIGFIG: u8 = 2;

impl TimeOfDay {
    pub fn record(&mut self, minute_start_secs: u64, bytes: u64) {
        let slot = &mut self.hours[hour_of_day(minute_start_secs)];
        slot.get_or_insert_with(|| Distribution::new(TIME_OF_DAY_SIGFIG))
            .record(bytes);
        self.all_day.record(bytes);
    }

    /// The threshold at `secs`: the larger of this hour's and the previous minute's hour's
    /// (a one-minute window at 20:00:30 still holds 19:59's traffic). With the number of
    /// values it was learned from.
    pub fn threshold(&mut self, secs: u64, bar: &Bar) -> Option<(u64, u64, u64)> {
        let now = self.hour_threshold(secs, bar);
        let minute_ago = secs.saturating_sub(60);
        if hour_of_day(secs) == hour_of_day(minute_ago) {
            return now;
        }
        match (now, self.hour_threshold(minute_ago, bar)) {
            (Some(a), Some(b)) => Some(if b.0 > a.0 { b } else { a }),
            (a, b) => a.or(b),
        }
    }

    /// The usual (median) value at `secs`'s hour of day: that hour's once it holds
    /// `min_samples` values, else the whole day's; `None` before anything was learned.
    pub fn median(&self, secs: u64, min_samples: u64) -> Option<u64> {
        let hour = self.hours[hour_of_day(secs)]
            .as_ref()
            .filter(|h| h.len() >= min_samples.max(1));
        let d = hour.unwrap_or(&self.all_day);
        (!d.is_empty()).then(|| d.hist.value_at_quantile(0.5))
    }

    /// The hour's threshold when that hour has `min_samples`, else the whole day's.
    fn hour_threshold(&mut self, secs: u64, bar: &Bar) -> Option<(u64, u64, u64)> {
        if let Some(hour) = self.hours[hour_of_day(secs)].as_mut()
            && let Some((t, q)) = threshold(hour, bar)
        {
            return Some((t, q, hour.len()));
        }
        let len = self.all_day.len();
        threshold(&mut self.all_day, bar).map(|(t, q)| (t, q, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(quantile: f64, factor: f64, floor: u64, min_samples: u64) -> Bar {
        Bar {
            quantile,
            factor,
            floor,
            min_samples,
        }
    }

    #[test]
    fn threshold_is_quantile_times_factor_or_floor() {
        let mut d = Distribution::new(PEER_SIGFIG);
        assert_eq!(
            threshold(&mut d, &bar(0.99, 10.0, 1000, 10)),
            None,
            "not armed"
        );
        for v in 1..=1000u64 {
            d.record(v * 1000);
        }
        let (t, q) = threshold(&mut d, &bar(0.99, 10.0, 1000, 10)).unwrap();
        assert!((985_000..=995_000).contains(&q), "{q}");
        assert_eq!(t, (q as f64 * 10.0) as u64);
        let (t, _) = threshold(&mut d, &bar(0.99, 10.0, 50_000_000, 10)).unwrap();
        assert_eq!(t, 50_000_000, "floor wins");
    }

    #[test]
    fn encoding_round_trips() {
        let mut d = Distribution::new(PEER_SIGFIG);
        for v in [5u64, 5_000, 5_000_000, 1 << 50] {
            d.record(v);
        }
        let back = Distribution::decode(&d.encode(), PEER_SIGFIG).unwrap();
        assert_eq!(back.len(), 4);
        assert_eq!(back.hist.max(), d.hist.max());
        assert!(Distribution::decode(b"not a histogram", PEER_SIGFIG).is_err());
    }

    #[test]
    fn time_of_day_uses_the_hour_once_learned() {
        let mut t = TimeOfDay::default();
        // Nights are quiet (1 kB/min), days busy (1 MB/min).
        for day in 0..2u64 {
            for minute in 0..1440u64 {
                let secs = day * 86_400 + minute * 60;
                let bytes = if (8..20).contains(&hour_of_day(secs)) {
                    1_000_000
                } else {
                    1_000
                };
                t.record(secs, bytes);
            }
        }
        let (night, _, n) = t.threshold(3 * 3600, &bar(0.99, 4.0, 1, 30)).unwrap();
        let (day, _, _) = t.threshold(12 * 3600, &bar(0.99, 4.0, 1, 30)).unwrap();
        assert_eq!(n, 120);
        assert!(
            night < 10_000 && day > 3_000_000,
            "night {night}, day {day}"
        );
        let mut fresh = TimeOfDay::default();
        for m in 0..40 {
            fresh.record(12 * 3600 + m * 60, 1000);
        }
        assert!(
            fresh.threshold(3 * 3600, &bar(0.99, 4.0, 1, 30)).is_some(),
            "whole-day fallback"
        );
    }
}
