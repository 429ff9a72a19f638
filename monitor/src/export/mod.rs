//! Alert formats for SIEMs: OCSF 1.8.0 Detection Finding, ECS 9.4.0, CEF, RFC 5424 syslog,
//! and the agent's own JSON. Pure functions from an [`AlertEvent`] to text or JSON; the
//! transports (sinks, outbox, retries) build on them.

pub mod backoff;
pub mod cef;
pub mod containment;
pub mod containment_syslog;
#[cfg(test)]
mod containment_tests;
pub mod deadline;
pub mod delivery;
#[cfg(test)]
mod delivery_tests;
pub mod ecs;
pub mod ecs_containment;
pub mod elasticsearch;
pub mod exported;
pub mod file;
#[cfg(test)]
mod hostile_tests;
pub mod http;
#[cfg(test)]
mod http_hostile_tests;
#[cfg(test)]
mod http_receiver;
mod http_settings;
mod http_setup;
#[cfg(test)]
mod http_tests;
pub mod ocsf;
pub mod ocsf_network;
pub mod ocsf_remediation;
pub mod settings;
pub mod splunk_hec;
pub mod stdout;
pub mod syslog;
pub mod syslog_sink;
pub mod tls;
pub mod transport;
pub mod webhook;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::detect::{alerts::AlertEvent, rules::Severity};

/// Namespace of event ids (UUID v5), distinct from alert ids.
const EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x6567_7265_7373_2d6d_6f6e_6974_6f72_0002);

/// Who reports: this agent on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reporter {
    pub hostname: String,
    pub product: &'static str,
    pub version: &'static str,
}

impl Reporter {
    pub fn this_host() -> Self {
        Self {
            hostname: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".to_owned()),
            product: "egress-monitor",
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

/// What a sink sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The agent's own `AlertEvent` JSON.
    Json,
    /// OCSF 1.8.0 Detection Finding (class 2004).
    Ocsf,
    /// ECS 9.4.0 alert document.
    Ecs,
    /// CEF (Common Event Format) line.
    Cef,
    /// A one-line readable summary.
    Text,
}

/// One event in `format`, as one line (JSON without newlines, or CEF).
pub fn render(format: Format, event: &AlertEvent, reporter: &Reporter) -> String {
    match format {
        Format::Json => serde_json::to_string(event).unwrap_or_default(),
        Format::Ocsf => ocsf::detection_finding(event, reporter).to_string(),
        Format::Ecs => ecs::alert(event, reporter).to_string(),
        Format::Cef => cef::line(event, reporter),
        Format::Text => format!(
            "{} {} {}",
            event.at,
            event.event.name(),
            crate::alert_output::summary(&event.alert)
        ),
    }
}

/// What a sink sends for one event: the event in `format`, then, with `network_activity`
/// (`ocsf_network_activity = true`, OCSF only), the Network Activity it is about.
pub fn records(
    format: Format,
    network_activity: bool,
    event: &AlertEvent,
    reporter: &Reporter,
) -> impl Iterator<Item = String> {
    let evidence = (network_activity && format == Format::Ocsf)
        .then(|| ocsf_network::network_activity(event, reporter))
        .flatten()
        .map(|v| v.to_string());
    std::iter::once(render(format, event, reporter)).chain(evidence)
}

/// A stable id per alert event: receivers deduplicate retried deliveries with it.
pub fn event_id(event: &AlertEvent) -> Uuid {
    let name = format!(
        "{}|{}|{}|{}",
        event.alert.id,
        event.event.name(),
        event.at.as_millisecond(),
        event.alert.updates
    );
    Uuid::new_v5(&EVENT_NAMESPACE, name.as_bytes())
}

/// `Severity` as a 0-100 score (ECS `event.severity`, CEF maps it to 0-10).
pub const fn severity_score(s: Severity) -> u8 {
    match s {
        Severity::Low => 21,
        Severity::Medium => 47,
        Severity::High => 73,
        Severity::Critical => 99,
    }
}

/// The executable's file name, for formats that want a process name and a path.
fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Sample alert events for tests and benchmarks (not part of the agent's API).
#[doc(hidden)]
pub mod fixtures {
    use jiff::Timestamp;

    use super::Reporter;
    use crate::{
        detect::{
            alerts::{AlertBook, AlertEvent, Lifecycle, fixtures::condition},
            rules::RuleId,
        },
        replay::synthetic::nginx_worker,
    };

    /// The reporter of every format test.
    pub fn reporter() -> Reporter {
        Reporter {
            hostname: "matrix.example.org".into(),
            product: "egress-monitor",
            version: "0.1.0",
        }
    }

    /// An opened `peer_outlier` alert of nginx towards `2001:db8::8a`, named, with a process.
    pub fn opened() -> AlertEvent {
        let mut book = AlertBook::new(Lifecycle {
            resolve_after_secs: 900,
            update_every_secs: 60,
            max_new_per_minute: 10,
        });
        let at = Timestamp::from_second(1_780_322_460).unwrap();
        let mut c = condition(
            RuleId::PeerOutlier,
            "2001:db8::8a",
            100_000_000,
            Timestamp::from_second(1_780_272_720).unwrap(),
            at,
        );
        c.process = Some(nginx_worker(1));
        book.raise(c, at).expect("opens")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::alerts::AlertEventKind;

    #[test]
    fn event_ids_are_stable_and_distinct_per_step() {
        let e = fixtures::opened();
        assert_eq!(event_id(&e), event_id(&e.clone()));
        let mut update = e.clone();
        update.event = AlertEventKind::Updated;
        assert_ne!(event_id(&e), event_id(&update));
        assert_ne!(event_id(&e), e.alert.id, "not the alert's id");
    }

    #[test]
    fn every_format_renders_one_line() {
        let e = fixtures::opened();
        let reporter = fixtures::reporter();
        for f in [
            Format::Json,
            Format::Ocsf,
            Format::Ecs,
            Format::Cef,
            Format::Text,
        ] {
            let line = render(f, &e, &reporter);
            assert!(!line.is_empty() && !line.contains('\n'), "{f:?}: {line}");
        }
    }
}

/// Every OCSF and ECS document the exporters can produce validates against the official
/// schema files (`spec/`): each lifecycle step, each rule, with and without the optional
/// parts (peer, name, process).
#[cfg(test)]
mod schema_tests {
    use super::*;
    use crate::{
        detect::{
            alerts::{AlertEventKind, AlertStatus, Reference, ThresholdKind},
            rules::RuleId,
        },
        schema_check::{validate_ecs, validate_ocsf},
    };

    fn variants() -> Vec<AlertEvent> {
        let mut out = Vec::new();
        for rule in RuleId::ALL {
            for kind in [
                AlertEventKind::Opened,
                AlertEventKind::Updated,
                AlertEventKind::Acknowledged,
                AlertEventKind::Resolved,
                AlertEventKind::Suppressed,
            ] {
                let mut e = fixtures::opened();
                e.alert.rule = rule;
                e.alert.title = rule.title().into();
                e.alert.attack = rule.into();
                e.event = kind;
                e.alert.acknowledged = kind == AlertEventKind::Acknowledged;
                if matches!(kind, AlertEventKind::Resolved | AlertEventKind::Suppressed) {
                    e.alert.status = AlertStatus::Resolved;
                    e.alert.resolved_at = Some(e.at);
                }
                if !rule.per_peer() {
                    e.alert.peer = None;
                }
                if rule == RuleId::NewDestinations {
                    e.alert.threshold.kind = ThresholdKind::Count;
                    e.alert.new_destinations = Some(51);
                    e.alert.examples = vec!["2001:db8::1".parse().unwrap()];
                }
                out.push(e);
            }
        }
        // Each rule judged against what it is in the detector, with a learned baseline.
        for (rule, reference) in [
            (RuleId::PeerOutlier, Reference::Clients),
            (RuleId::PeerOutlier, Reference::Destinations),
            (RuleId::PrefixOutlier, Reference::Prefixes),
            (RuleId::PeerRise, Reference::OwnCurve),
            (RuleId::ServiceBaseline, Reference::ServiceCurve),
            (RuleId::NewClientVolume, Reference::NewClientCurve),
        ] {
            let mut e = fixtures::opened();
            e.alert.rule = rule;
            e.alert.title = rule.title().into();
            e.alert.attack = rule.into();
            let t = &mut e.alert.threshold;
            t.kind = ThresholdKind::Baseline;
            t.reference = Some(reference);
            t.baseline_bytes = Some(12 << 20);
            t.quantile = (reference != Reference::OwnCurve).then_some(0.999);
            t.factor = Some(3.0);
            t.samples = Some(4_000);
            t.activity = Some(1.4);
            if rule.per_peer() {
                if rule == RuleId::PrefixOutlier {
                    let p = e.alert.peer.as_mut().unwrap();
                    p.addr = "2001:db8:1::".parse().unwrap();
                    p.prefix_len = Some(48);
                    p.members = Some(12);
                    p.name = None;
                }
            } else {
                e.alert.peer = None;
            }
            out.push(e);
        }
        let mut bare = fixtures::opened();
        bare.alert.process = None;
        if let Some(p) = &mut bare.alert.peer {
            p.name = None;
            p.addr = "198.51.100.7".parse().unwrap();
        }
        out.push(bare);
        out
    }

    #[test]
    fn ocsf_detection_findings_validate() {
        for e in variants() {
            let doc = ocsf::detection_finding(&e, &fixtures::reporter());
            if let Err(errors) = validate_ocsf(&doc) {
                panic!("{:?} {:?}: {errors:#?}\n{doc:#}", e.alert.rule, e.event);
            }
        }
    }

    #[test]
    fn ecs_alerts_validate() {
        for e in variants() {
            let doc = ecs::alert(&e, &fixtures::reporter());
            if let Err(errors) = validate_ecs(&doc) {
                panic!("{:?} {:?}: {errors:#?}\n{doc:#}", e.alert.rule, e.event);
            }
        }
    }

    /// A prefix group's alert names the network in every form that carries a peer, and
    /// every form says what the volume was judged against.
    #[test]
    fn prefix_groups_and_references_reach_every_form() {
        let e = variants()
            .into_iter()
            .find(|e| {
                e.alert
                    .peer
                    .as_ref()
                    .is_some_and(|p| p.prefix_len.is_some())
            })
            .unwrap();
        let r = fixtures::reporter();
        let ecs = ecs::alert(&e, &r);
        assert_eq!(ecs["labels"]["destination_prefix"], "2001:db8:1::/48");
        assert_eq!(ecs["labels"]["prefix_members"], "12");
        assert_eq!(ecs["labels"]["reference"], "prefixes");
        assert_eq!(ecs["destination"]["ip"], "2001:db8:1::");
        let cef = cef::line(&e, &r);
        assert!(
            cef.contains("cs6=2001:db8:1::/48 cs6Label=destinationPrefix"),
            "{cef}"
        );
        assert!(cef.contains("cs5=prefixes cs5Label=judgedAgainst"), "{cef}");
        let ocsf = ocsf::detection_finding(&e, &r).to_string();
        assert!(ocsf.contains("2001:db8:1::/48"), "{ocsf}");
        let text = render(Format::Text, &e, &r);
        assert!(text.contains("2001:db8:1::/48"), "{text}");
        let sys = syslog::message(&e, &r, 13, syslog::Payload::Text);
        assert!(sys.contains(" peer=\"2001:db8:1::/48\""), "{sys}");
        assert!(sys.contains(" reference=\"prefixes\""), "{sys}");
    }

    #[test]
    fn the_validators_see_a_broken_export() {
        let e = fixtures::opened();
        let mut doc = ocsf::detection_finding(&e, &fixtures::reporter());
        doc["type_uid"] = 200_409.into();
        assert!(validate_ocsf(&doc).is_err());
        let mut doc = ecs::alert(&e, &fixtures::reporter());
        doc["source"]["bytes"] = "many".into();
        assert!(validate_ecs(&doc).is_err());
    }
}
