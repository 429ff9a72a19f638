//! The normal clients' request latencies and failures, per phase of the run: what the users
//! of the homeserver would feel of an attack, and of its containment.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use serde_json::{Value, json};

/// The run's phases, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Learning,
    /// From the end of learning until 5 s after Synapse and nginx are back: failures and
    /// slow requests expected.
    Restart,
    AfterLearning,
    Attack,
    Grace,
    Patient,
}

impl Phase {
    pub const ALL: [Self; 6] = [
        Self::Learning,
        Self::Restart,
        Self::AfterLearning,
        Self::Attack,
        Self::Grace,
        Self::Patient,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Learning => "learning",
            Self::Restart => "restart",
            Self::AfterLearning => "after_learning",
            Self::Attack => "attack",
            Self::Grace => "grace",
            Self::Patient => "patient",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

#[derive(Default)]
struct PhaseRecord {
    /// Microseconds per successful request.
    micros: Vec<u64>,
    failures: u64,
}

/// Every normal client's requests, filed under the phase the run is in.
pub struct Latencies {
    phase: AtomicUsize,
    records: Mutex<Vec<PhaseRecord>>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self {
            phase: AtomicUsize::new(Phase::Learning.index()),
            records: Mutex::new(Phase::ALL.iter().map(|_| PhaseRecord::default()).collect()),
        }
    }
}

/// One phase in short.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub requests: usize,
    pub failures: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The `q` quantile (nearest rank) of sorted `v`.
fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Latencies {
    pub fn enter(&self, phase: Phase) {
        self.phase.store(phase.index(), Ordering::Relaxed);
    }

    fn with_current(&self, f: impl FnOnce(&mut PhaseRecord)) {
        let i = self.phase.load(Ordering::Relaxed);
        if let Ok(mut r) = self.records.lock() {
            f(&mut r[i]);
        }
    }

    pub fn ok(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.with_current(|r| r.micros.push(us));
    }

    pub fn failed(&self) {
        self.with_current(|r| r.failures += 1);
    }

    pub fn summary(&self, phase: Phase) -> Summary {
        let Ok(records) = self.records.lock() else {
            return Summary {
                requests: 0,
                failures: 0,
                p50_ms: 0.0,
                p99_ms: 0.0,
                max_ms: 0.0,
            };
        };
        let r = &records[phase.index()];
        let mut v = r.micros.clone();
        v.sort_unstable();
        let ms = |us: u64| us as f64 / 1e3;
        Summary {
            requests: v.len(),
            failures: r.failures,
            p50_ms: ms(quantile(&v, 0.5)),
            p99_ms: ms(quantile(&v, 0.99)),
            max_ms: ms(v.last().copied().unwrap_or(0)),
        }
    }

    /// Every phase that saw a request, for the report.
    pub fn json(&self) -> Value {
        let mut out = serde_json::Map::new();
        for p in Phase::ALL {
            let s = self.summary(p);
            if s.requests == 0 && s.failures == 0 {
                continue;
            }
            out.insert(
                p.name().to_owned(),
                json!({"requests": s.requests, "failures": s.failures, "p50_ms": s.p50_ms,
                       "p99_ms": s.p99_ms, "max_ms": s.max_ms}),
            );
        }
        Value::Object(out)
    }
}

/// The clients must not feel the containment: no failed request during the attack, and a
/// p99 at most twice the normal phase's plus 100 ms (this guest's scheduling noise on two
/// cores, with Synapse, nginx and the harness sharing them). `None` when it held.
pub fn unchanged(normal: Summary, attack: Summary) -> Option<String> {
    if attack.failures > 0 {
        return Some(format!(
            "{} normal client request(s) failed during the attack",
            attack.failures
        ));
    }
    let bar = 2.0 * normal.p99_ms + 100.0;
    (attack.p99_ms > bar).then(|| {
        format!(
            "normal clients' p99 latency during the attack {:.0} ms, over {bar:.0} ms (twice the \
             {:.0} ms before it, plus 100)",
            attack.p99_ms, normal.p99_ms
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_filed_under_the_current_phase() {
        let l = Latencies::default();
        for ms in 1..=100 {
            l.ok(Duration::from_millis(ms));
        }
        l.enter(Phase::Attack);
        l.ok(Duration::from_millis(500));
        l.failed();
        let learning = l.summary(Phase::Learning);
        assert_eq!(learning.requests, 100);
        assert_eq!(learning.p50_ms, 50.0);
        assert_eq!(learning.p99_ms, 99.0);
        assert_eq!(learning.max_ms, 100.0);
        let attack = l.summary(Phase::Attack);
        assert_eq!((attack.requests, attack.failures), (1, 1));
        assert_eq!(attack.p99_ms, 500.0);
        let j = l.json();
        assert!(j.get("grace").is_none(), "{j}");
        assert_eq!(j["attack"]["failures"], 1);
    }

    #[test]
    fn unchanged_means_no_failure_and_a_p99_within_twice_plus_100_ms() {
        let s = |p99_ms: f64, failures: u64| Summary {
            requests: 10,
            failures,
            p50_ms: 1.0,
            p99_ms,
            max_ms: p99_ms,
        };
        assert_eq!(unchanged(s(50.0, 0), s(199.0, 0)), None);
        assert!(unchanged(s(50.0, 0), s(201.0, 0)).is_some());
        assert!(
            unchanged(s(50.0, 0), s(10.0, 1))
                .unwrap()
                .contains("failed")
        );
        assert_eq!(quantile(&[], 0.99), 0);
        assert_eq!(quantile(&[7], 0.5), 7);
    }
}
