//! `egress-monitor top`: a live table of who sends how much to whom, like `top` for egress.

use std::{collections::HashMap, fmt::Write as _};

use crate::{
    flow::FlowSample,
    output::{human_bytes, process_label, truncate},
};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct TopKey {
    service: String,
    process: String,
    destination: String,
    protocol: String,
}

#[derive(Clone, Debug, Default)]
struct TopRow {
    total: u64,
    last_window: u64,
}

/// Accumulates samples window by window.
#[derive(Debug, Default)]
pub struct TopTable {
    rows: HashMap<TopKey, TopRow>,
    last_window_secs: f64,
    total_bytes: u64,
}

impl TopTable {
    /// Adds one window's samples; rates are computed over this window.
    pub fn update(&mut self, samples: &[FlowSample]) {
        for row in self.rows.values_mut() {
            row.last_window = 0;
        }
        let mut secs = 0.0f64;
        for s in samples {
            secs = secs.max(s.window_end.duration_since(s.window_start).as_secs_f64());
            let destination = match (&s.remote, s.untracked) {
                (Some(r), _) => format!("{}:{}", r.addr, r.port),
                (None, Some(why)) => format!("untracked ({})", why.name()),
                (None, None) => "?".into(),
            };
            let key = TopKey {
                service: s.owner.service.clone(),
                process: process_label(&s.owner),
                destination,
                protocol: s.protocol.name(),
            };
            let row = self.rows.entry(key).or_default();
            row.total += s.bytes;
            row.last_window += s.bytes;
            self.total_bytes += s.bytes;
        }
        if secs > 0.0 {
            self.last_window_secs = secs;
        }
    }

    /// The table, top `limit` rows by current rate, then by total.
    pub fn render(&self, limit: usize) -> String {
        let mut rows: Vec<(&TopKey, &TopRow)> = self.rows.iter().collect();
        rows.sort_by(|a, b| {
            b.1.last_window
                .cmp(&a.1.last_window)
                .then(b.1.total.cmp(&a.1.total))
                .then(a.0.service.cmp(&b.0.service))
        });
        let secs = if self.last_window_secs > 0.0 {
            self.last_window_secs
        } else {
            1.0
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "egress-monitor top: {} destinations, {} sent since start",
            self.rows.len(),
            human_bytes(self.total_bytes)
        );
        let _ = writeln!(
            out,
            "{:<30} {:<22} {:<42} {:<6} {:>12} {:>11}",
            "SERVICE", "PROCESS", "DESTINATION", "PROTO", "RATE/s", "TOTAL"
        );
        for (k, r) in rows.into_iter().take(limit) {
            let rate = (r.last_window as f64 / secs) as u64;
            let _ = writeln!(
                out,
                "{:<30} {:<22} {:<42} {:<6} {:>12} {:>11}",
                truncate(&k.service, 30),
                truncate(&k.process, 22),
                truncate(&k.destination, 42),
                k.protocol,
                human_bytes(rate),
                human_bytes(r.total),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{Endpoint, Owner, Protocol};

    fn sample(service: &str, port: u16, bytes: u64) -> FlowSample {
        FlowSample {
            window_start: "2026-11-26T10:00:00Z".parse().unwrap(),
            window_end: "2026-11-26T10:00:02Z".parse().unwrap(),
            owner: std::sync::Arc::new(Owner {
                pid: Some(7),
                comm: Some("srv".into()),
                service: service.into(),
                ..Owner::default()
            }),
            local: None,
            remote: Some(Endpoint {
                addr: "192.0.2.1".parse().unwrap(),
                port,
            }),
            remote_name: None,
            protocol: Protocol::Tcp,
            bytes,
            packets: 1,
            flows: 1,
            first_seen: None,
            last_seen: None,
            untracked: None,
            direction: None,
        }
    }

    #[test]
    fn sorts_by_rate_then_total_and_computes_rates() {
        let mut t = TopTable::default();
        t.update(&[sample("a.service", 1, 10_000), sample("b.service", 2, 100)]);
        t.update(&[sample("b.service", 2, 4096)]);
        let out = t.render(10);
        let lines: Vec<&str> = out.lines().collect();
        // b sends now (2 KiB/s over a 2 s window), a sent more in total but is quiet now.
        assert!(lines[2].starts_with("b.service"), "{out}");
        assert!(lines[2].contains("2.0 KiB"), "{out}");
        assert!(lines[3].starts_with("a.service"), "{out}");
        assert!(lines[3].contains("9.8 KiB"), "{out}");
        assert!(lines[0].contains("2 destinations"), "{out}");
    }

    #[test]
    fn limit_caps_rows() {
        let mut t = TopTable::default();
        let samples: Vec<_> = (0..50).map(|i| sample("s", i, u64::from(i) + 1)).collect();
        t.update(&samples);
        assert_eq!(t.render(5).lines().count(), 2 + 5);
    }
}
