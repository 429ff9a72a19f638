//! The generator's random numbers: the project's `SplitMix64` (fixed forever, so traces never
//! change with a crate update) with the few distributions real traffic needs.

use crate::replay::synthetic;

pub struct Rng(synthetic::Rng);

impl Rng {
    /// A stream for `seed`, separated from other streams of the same seed by `stream`.
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut r = synthetic::Rng(seed ^ stream.wrapping_mul(0x2545_f491_4f6c_dd1d));
        r.next_u64();
        Self(r)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.0.next_u64() % (hi - lo).max(1)
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Log-uniform in [lo, hi): many small values, a few large ones (media sizes).
    pub fn log_range(&mut self, lo: f64, hi: f64) -> f64 {
        (lo.ln() + (hi.ln() - lo.ln()) * self.unit()).exp()
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(1e-12);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Log-normal with this median and log standard deviation.
    pub fn log_normal(&mut self, median: f64, sigma: f64) -> f64 {
        median * (sigma * self.normal()).exp()
    }

    /// Poisson (Knuth's method; small means only).
    pub fn poisson(&mut self, mean: f64) -> u32 {
        let limit = (-mean).exp();
        let mut p = 1.0;
        let mut k = 0;
        loop {
            p *= self.unit();
            if p <= limit || k >= 1000 {
                return k;
            }
            k += 1;
        }
    }

    /// A minute of the day (0..1440) drawn from `curve` (values in [0, 1] by local hour).
    pub fn minute_from(&mut self, curve: impl Fn(f64) -> f64) -> u32 {
        loop {
            let m = self.range(0, 1440) as u32;
            if self.chance(curve(f64::from(m) / 60.0)) {
                return m;
            }
        }
    }
}
