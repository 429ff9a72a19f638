//! The tests' clock-bound waits, stretched by `EGRESS_TEST_TIME_SCALE` (default 1).
//!
//! A timeout here is an upper bound on something the agent does by itself (attach, poll,
//! deliver): on a slow machine it takes longer, and the test must not call that a failure.
//! `cargo xtask vm-test` sets the scale when QEMU emulates the CPU (TCG runs the agent several
//! times slower than this host). Polling periods stay as they are: they only cost CPU.

use std::{
    sync::OnceLock,
    thread,
    time::{Duration, Instant},
};

const VAR: &str = "EGRESS_TEST_TIME_SCALE";

/// The factor every wait is multiplied by (at least 1).
pub fn scale() -> f64 {
    static SCALE: OnceLock<f64> = OnceLock::new();
    *SCALE.get_or_init(|| match std::env::var(VAR) {
        Ok(v) => parse(&v).unwrap_or_else(|e| panic!("{VAR}={v:?}: {e}")),
        Err(std::env::VarError::NotPresent) => 1.0,
        Err(e) => panic!("{VAR}: {e}"),
    })
}

fn parse(v: &str) -> Result<f64, String> {
    let f: f64 = v
        .trim()
        .parse()
        .map_err(|e| format!("not a number ({e})"))?;
    if !f.is_finite() || !(1.0..=100.0).contains(&f) {
        return Err("expected a factor from 1 to 100".to_owned());
    }
    Ok(f)
}

/// `d` on this machine's clock.
pub fn scaled(d: Duration) -> Duration {
    d.mul_f64(scale())
}

/// The instant `d` (scaled) from now.
pub fn deadline(d: Duration) -> Instant {
    Instant::now() + scaled(d)
}

/// Sleeps `d` (scaled): time given to the agent to poll, learn or deliver.
pub fn pause(d: Duration) {
    thread::sleep(scaled(d));
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn factors_from_1_to_100_are_accepted() {
        assert_eq!(parse("3"), Ok(3.0));
        assert_eq!(parse(" 1.5 "), Ok(1.5));
        assert_eq!(parse("1"), Ok(1.0));
    }

    #[test]
    fn a_factor_that_would_shorten_or_never_end_the_waits_is_refused() {
        for bad in ["0.5", "0", "-2", "1000", "inf", "NaN", "three", ""] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
