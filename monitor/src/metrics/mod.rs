//! The Prometheus endpoint (`[metrics] listen`, off by default): what the agent counts, read
//! at each scrape. The agent's loop copies its figures into a [`Snapshot`] once per poll
//! (a few hundred numbers); the scrape thread encodes them with `prometheus-client` in the
//! OpenMetrics text format, so a slow scraper never touches the agent's own structures.

pub mod server;
pub mod settings;

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

use crate::{
    collector::CollectorStats,
    detect::{Detector, classes::DestinationClass},
    export::delivery::SinkCounters,
};

/// The destination classes, in the order of [`Snapshot::egress_bytes`] (their discriminants).
const CLASSES: [DestinationClass; 5] = [
    DestinationClass::Internal,
    DestinationClass::Allowlisted,
    DestinationClass::Learned,
    DestinationClass::Unknown,
    DestinationClass::Client,
];

/// The agent's figures as of its last poll.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Bytes sent since the agent started, by service and destination class.
    pub egress_bytes: Vec<(Arc<str>, [u64; 5])>,
    /// Alert events since the agent started, by (rule, event).
    pub alert_events: BTreeMap<(&'static str, &'static str), u64>,
    /// Alerts open now, by rule.
    pub open_alerts: BTreeMap<&'static str, u64>,
    /// The collector's totals: kernel program errors, flow table use, losses.
    pub collector: CollectorStats,
    /// The flow table's capacity.
    pub max_flows: u64,
    /// The detector's tables: (service, peer) pairs, prefix groups, client identities and
    /// provider networks met, and those not remembered because their table was full (a flood
    /// shows here).
    pub pairs: u64,
    pub prefix_groups: u64,
    pub identities: u64,
    pub networks: u64,
    pub identities_refused: u64,
    /// Containments active now, by enforcement (`dry_run`, `enforced`) and action.
    pub contained: BTreeMap<(&'static str, &'static str), u64>,
    /// Containment events since the agent started, by event (started, renewed, lifted...).
    pub containment_events: BTreeMap<&'static str, u64>,
    /// Containments the rails refused, by reason.
    pub containments_refused: BTreeMap<&'static str, u64>,
    /// What the kernel held back from the active containments (bytes, packets).
    pub contained_dropped: (u64, u64),
}

/// What `/metrics` serves.
#[derive(Debug, Default)]
pub struct Metrics {
    snapshot: Mutex<Snapshot>,
    sinks: Mutex<Vec<(String, Arc<SinkCounters>)>>,
}

impl Metrics {
    /// The sinks whose delivery counters are served.
    pub fn add_sinks(&self, sinks: impl IntoIterator<Item = (String, Arc<SinkCounters>)>) {
        if let Ok(mut s) = self.sinks.lock() {
            s.extend(sinks);
        }
    }

    /// Replaces the sinks whose counters are served (their delivery restarted on a reload).
    pub fn set_sinks(&self, sinks: impl IntoIterator<Item = (String, Arc<SinkCounters>)>) {
        if let Ok(mut s) = self.sinks.lock() {
            *s = sinks.into_iter().collect();
        }
    }

    /// Copies the detector's figures (after a poll).
    pub fn update_detection(
        &self,
        detector: &Detector,
        events: &[crate::detect::alerts::AlertEvent],
    ) {
        let Ok(mut snap) = self.snapshot.lock() else {
            return;
        };
        snap.egress_bytes.clear();
        snap.egress_bytes.extend(
            detector
                .services()
                .iter()
                .map(|s| (Arc::clone(&s.name), s.bytes_by_class)),
        );
        for e in events {
            *snap
                .alert_events
                .entry((e.alert.rule.id(), e.event.name()))
                .or_default() += 1;
        }
        snap.open_alerts.clear();
        for rule in crate::detect::rules::RuleId::ALL {
            snap.open_alerts.insert(rule.id(), 0);
        }
        for rule in detector.book().open_rules() {
            *snap.open_alerts.entry(rule.id()).or_default() += 1;
        }
        snap.pairs = detector.stats.peers;
        snap.prefix_groups = detector.stats.prefix_groups;
        snap.identities = detector.acquaintances().len() as u64;
        snap.networks = detector.acquaintances().networks() as u64;
        snap.identities_refused = detector.acquaintances().refused;
    }

    /// Copies the containment book's figures (after each of its changes).
    pub fn update_containment(
        &self,
        book: &crate::contain::policy::ContainmentBook,
        events: &[crate::contain::record::ContainmentEvent],
    ) {
        let Ok(mut snap) = self.snapshot.lock() else {
            return;
        };
        snap.contained.clear();
        for enforcement in ["dry_run", "enforced"] {
            for action in ["throttle", "block"] {
                snap.contained.insert((enforcement, action), 0);
            }
        }
        let mut dropped = (0, 0);
        for c in book.active() {
            *snap
                .contained
                .entry((c.enforcement.name(), c.action.name()))
                .or_default() += 1;
            dropped.0 += c.dropped_bytes;
            dropped.1 += c.dropped_packets;
        }
        snap.contained_dropped = dropped;
        for e in events {
            *snap.containment_events.entry(e.event.name()).or_default() += 1;
        }
        snap.containments_refused.clone_from(&book.stats.refused);
    }

    /// Copies the collector's totals (after a poll).
    pub fn update_collector(&self, stats: &CollectorStats, max_flows: u64) {
        if let Ok(mut snap) = self.snapshot.lock() {
            snap.collector.clone_from(stats);
            snap.max_flows = max_flows;
        }
    }
}

type Result = std::result::Result<(), std::fmt::Error>;

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result {
    let c = ConstCounter::new(value);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result {
    let g = ConstGauge::new(saturating_i64(value));
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

impl Collector for Metrics {
    fn encode(&self, mut e: DescriptorEncoder) -> Result {
        if let Ok(snap) = self.snapshot.lock() {
            encode_detection(&snap, &mut e)?;
            encode_containment(&snap, &mut e)?;
            encode_collector(&snap, &mut e)?;
        }
        if let Ok(sinks) = self.sinks.lock() {
            encode_sinks(&sinks, &mut e)?;
        }
        Ok(())
    }
}

fn encode_detection(snap: &Snapshot, e: &mut DescriptorEncoder) -> Result {
    let mut family = e.encode_descriptor(
        "egress_monitor_egress_bytes",
        "Bytes sent since the agent started, by service and destination class",
        None,
        MetricType::Counter,
    )?;
    for (service, by_class) in &snap.egress_bytes {
        for (class, bytes) in CLASSES.iter().zip(by_class) {
            let labels = [("service", &**service), ("class", class.name())];
            ConstCounter::new(*bytes).encode(family.encode_family(&labels)?)?;
        }
    }
    let mut family = e.encode_descriptor(
        "egress_monitor_alert_events",
        "Alert events since the agent started, by rule and event (opened, updated, resolved...)",
        None,
        MetricType::Counter,
    )?;
    for ((rule, event), n) in &snap.alert_events {
        let labels = [("rule", *rule), ("event", *event)];
        ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
    }
    let mut family = e.encode_descriptor(
        "egress_monitor_alerts_open",
        "Alerts open now, by rule",
        None,
        MetricType::Gauge,
    )?;
    for (rule, n) in &snap.open_alerts {
        let labels = [("rule", *rule)];
        ConstGauge::new(saturating_i64(*n)).encode(family.encode_family(&labels)?)?;
    }
    gauge(
        e,
        "egress_monitor_detector_pairs",
        "(service, peer) pairs the detector tracks",
        snap.pairs,
    )?;
    gauge(
        e,
        "egress_monitor_detector_prefix_groups",
        "Prefix groups the detector tracks",
        snap.prefix_groups,
    )?;
    gauge(
        e,
        "egress_monitor_detector_identities",
        "Client identities (IPv4 address, IPv6 /64) remembered as met, which decide newcomers",
        snap.identities,
    )?;
    gauge(
        e,
        "egress_monitor_detector_networks",
        "Provider networks (IPv4 /16, IPv6 /32) TCP clients came from, which vouch for new addresses",
        snap.networks,
    )?;
    counter(
        e,
        "egress_monitor_detector_identities_refused",
        "Identities or networks not remembered because their table was full (they stay strangers)",
        snap.identities_refused,
    )?;
    Ok(())
}

fn encode_containment(snap: &Snapshot, e: &mut DescriptorEncoder) -> Result {
    let mut family = e.encode_descriptor(
        "egress_monitor_contained_peers",
        "Containments active now, by enforcement (dry_run: decided only) and action",
        None,
        MetricType::Gauge,
    )?;
    for ((enforcement, action), n) in &snap.contained {
        let labels = [("enforcement", *enforcement), ("action", *action)];
        ConstGauge::new(saturating_i64(*n)).encode(family.encode_family(&labels)?)?;
    }
    let mut family = e.encode_descriptor(
        "egress_monitor_containment_events",
        "Containment events since the agent started, by event (started, renewed, lifted, expired)",
        None,
        MetricType::Counter,
    )?;
    for (event, n) in &snap.containment_events {
        ConstCounter::new(*n).encode(family.encode_family(&[("event", *event)])?)?;
    }
    let mut family = e.encode_descriptor(
        "egress_monitor_containments_refused",
        "Containments the safety rails refused since the agent started, by reason",
        None,
        MetricType::Counter,
    )?;
    for (reason, n) in &snap.containments_refused {
        ConstCounter::new(*n).encode(family.encode_family(&[("reason", *reason)])?)?;
    }
    gauge(
        e,
        "egress_monitor_contained_dropped_bytes",
        "Bytes the kernel held back from the active containments' peers",
        snap.contained_dropped.0,
    )?;
    gauge(
        e,
        "egress_monitor_contained_dropped_packets",
        "Packets the kernel held back from the active containments' peers",
        snap.contained_dropped.1,
    )?;
    Ok(())
}

fn encode_collector(snap: &Snapshot, e: &mut DescriptorEncoder) -> Result {
    let c = &snap.collector;
    let mut family = e.encode_descriptor(
        "egress_monitor_kernel_program_errors",
        "Errors counted by the kernel programs (summed over CPUs), by kind",
        None,
        MetricType::Counter,
    )?;
    let mut errors: Vec<_> = c.kernel_errors.iter().collect();
    errors.sort();
    for (kind, n) in errors {
        let labels = [("kind", *kind)];
        ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
    }
    gauge(
        e,
        "egress_monitor_flow_map_entries",
        "Flows in the kernel flow table",
        c.flows_live,
    )?;
    gauge(
        e,
        "egress_monitor_flow_map_capacity",
        "Capacity of the kernel flow table (agent.max_flows)",
        snap.max_flows,
    )?;
    counter(
        e,
        "egress_monitor_flows_evicted_pressure",
        "Flows evicted early because the flow table was nearly full",
        c.evicted_pressure,
    )?;
    counter(
        e,
        "egress_monitor_flows_lost",
        "Flows that vanished from the kernel table before the agent read them",
        c.lost_entries,
    )?;
    counter(
        e,
        "egress_monitor_untracked_bytes",
        "Bytes counted in the kernel but not attributed to a flow (table full, no socket)",
        c.untracked_bytes,
    )?;
    counter(
        e,
        "egress_monitor_polls",
        "Polls of the kernel tables",
        c.polls,
    )
}

fn encode_sinks(sinks: &[(String, Arc<SinkCounters>)], e: &mut DescriptorEncoder) -> Result {
    type Field = fn(&SinkCounters) -> &AtomicU64;
    let counters: [(&str, &str, Field); 4] = [
        (
            "egress_monitor_sink_delivered_events",
            "Alert events delivered, by sink",
            |c| &c.delivered,
        ),
        (
            "egress_monitor_sink_failures",
            "Failed delivery attempts, by sink",
            |c| &c.failures,
        ),
        (
            "egress_monitor_sink_rejected_events",
            "Alert events the receiver refused for good (in the dead-letter file), by sink",
            |c| &c.rejected,
        ),
        (
            "egress_monitor_sink_dropped_events",
            "Alert events skipped because the sink's backlog was full (max_backlog), by sink",
            |c| &c.dropped,
        ),
    ];
    for (name, help, field) in counters {
        let mut family = e.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (sink, c) in sinks {
            ConstCounter::new(field(c).load(Ordering::Relaxed))
                .encode(family.encode_family(&[("sink", sink.as_str())])?)?;
        }
    }
    let mut family = e.encode_descriptor(
        "egress_monitor_sink_backlog_events",
        "Alert events waiting for delivery, by sink",
        None,
        MetricType::Gauge,
    )?;
    for (sink, c) in sinks {
        ConstGauge::new(saturating_i64(c.backlog.load(Ordering::Relaxed)))
            .encode(family.encode_family(&[("sink", sink.as_str())])?)?;
    }
    Ok(())
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The OpenMetrics text of `metrics`.
pub fn render(metrics: &Arc<Metrics>) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(Arc::clone(metrics)));
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::detect::tests::{T0, config, owner, sample};

    #[test]
    fn bytes_by_service_and_class_alerts_sinks_and_kernel_figures() {
        let config = config(
            "[detect]\nlearning_period = \"1m\"\n[destinations]\ninternal = [\"10.0.0.0/8\"]\n\
             [rules.unknown_volume]\n1m = \"1MiB\"\n",
        );
        let mut detector = Detector::new(&config);
        let backup = owner();
        let mut events = Vec::new();
        // Learning: 203.0.113.5 becomes learned; then internal traffic and an unknown peer.
        detector.observe(
            &[sample(&backup, T0, "203.0.113.5", 443, 1000)],
            &mut events,
        );
        detector.observe(
            &[
                sample(&backup, T0 + 120, "10.1.2.3", 5432, 70),
                sample(&backup, T0 + 120, "198.51.100.9", 443, 5 << 20),
            ],
            &mut events,
        );
        assert_eq!(events.len(), 1, "rule 1 opened");
        let metrics = Arc::new(Metrics::default());
        metrics.update_detection(&detector, &events);
        let stats = CollectorStats {
            flows_live: 12,
            kernel_errors: HashMap::from([("ringbuf_full", 3)]),
            ..CollectorStats::default()
        };
        metrics.update_collector(&stats, 65_536);
        let sink = Arc::new(SinkCounters::default());
        sink.backlog.store(4, Ordering::Relaxed);
        sink.failures.store(2, Ordering::Relaxed);
        metrics.add_sinks([("soc".to_owned(), sink)]);

        let text = render(&metrics);
        has_lines(
            &text,
            &[
                "egress_monitor_egress_bytes_total{service=\"backup.service\",class=\"learned\"} 1000",
                "egress_monitor_egress_bytes_total{service=\"backup.service\",class=\"internal\"} 70",
                "egress_monitor_egress_bytes_total{service=\"backup.service\",class=\"unknown\"} 5242880",
                "egress_monitor_egress_bytes_total{service=\"backup.service\",class=\"allowlisted\"} 0",
                "egress_monitor_alert_events_total{rule=\"unknown_volume\",event=\"opened\"} 1",
                "egress_monitor_alerts_open{rule=\"unknown_volume\"} 1",
                "egress_monitor_alerts_open{rule=\"slow_drip\"} 0",
                "egress_monitor_kernel_program_errors_total{kind=\"ringbuf_full\"} 3",
                "egress_monitor_flow_map_entries 12",
                "egress_monitor_flow_map_capacity 65536",
                "egress_monitor_detector_pairs 3",
                "egress_monitor_detector_identities 0",
                "egress_monitor_detector_identities_refused_total 0",
                "egress_monitor_sink_backlog_events{sink=\"soc\"} 4",
                "egress_monitor_sink_failures_total{sink=\"soc\"} 2",
                "egress_monitor_sink_dropped_events_total{sink=\"soc\"} 0",
            ],
        );
        assert!(
            text.contains("# TYPE egress_monitor_egress_bytes counter"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "OpenMetrics framing");
    }

    /// Every one of `lines` is a whole line of `text`.
    fn has_lines(text: &str, lines: &[&str]) {
        for line in lines {
            assert!(
                text.lines().any(|l| l == *line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn the_detectors_tables_count_clients_met() {
        let mut detector = Detector::new(&config("[detect]\nlearning_period = \"1m\"\n"));
        let nginx = owner();
        let served = |peer: &str| {
            let mut s = sample(&nginx, T0, peer, 50_000, 1000);
            s.direction = Some(crate::flow::Direction::Served);
            s
        };
        // Two clients, the second a new privacy address of the first one's /64: one identity,
        // one network.
        detector.observe(
            &[served("2001:db8:1:2::a"), served("2001:db8:1:2::b")],
            &mut Vec::new(),
        );
        let metrics = Arc::new(Metrics::default());
        metrics.update_detection(&detector, &[]);
        let text = render(&metrics);
        has_lines(
            &text,
            &[
                "egress_monitor_detector_identities 1",
                "egress_monitor_detector_networks 1",
                "egress_monitor_detector_identities_refused_total 0",
            ],
        );
    }
}
