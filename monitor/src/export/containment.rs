//! Containment events for SIEMs, beside the alert formats: one dispatch per format, the stable
//! event id receivers deduplicate on, the one-line summary, and the CEF line. The OCSF
//! document is [`ocsf_remediation`](super::ocsf_remediation), the ECS one
//! [`ecs_containment`](super::ecs_containment), the syslog message
//! [`containment_syslog`](super::containment_syslog).
//!
//! Dry run is said in every form, since a SIEM that takes "would throttle" for "throttled"
//! misleads whoever reads it: the verb is "would throttle", and each format also carries the
//! enforcement as a field of its own.

use std::fmt::Write as _;

use ipnet::IpNet;
use serde_json::Value;
use uuid::Uuid;

use super::{
    EVENT_NAMESPACE, Format, Reporter,
    cef::{header as cef_header, value as cef_value},
    ecs_containment, ocsf_remediation,
};
use crate::contain::record::{
    Containment, ContainmentEvent, ContainmentEventKind, Decider, Enforcement,
};

/// One containment event in `format`, as one line (JSON without newlines, CEF, or text).
pub fn render_containment(format: Format, e: &ContainmentEvent, reporter: &Reporter) -> String {
    match format {
        Format::Json => serde_json::to_string(e).unwrap_or_default(),
        Format::Ocsf => ocsf_remediation::network_remediation(e, reporter).to_string(),
        Format::Ecs => ecs_containment::document(e, reporter).to_string(),
        Format::Cef => cef_line(e, reporter),
        Format::Text => format!("{} {}", e.at, summary(e)),
    }
}

/// The event in `format` as JSON: an object for json, ocsf and ecs, a string for cef and text
/// (for sinks that wrap each record in an envelope, such as Splunk HEC).
pub fn containment_event_value(format: Format, e: &ContainmentEvent, reporter: &Reporter) -> Value {
    match format {
        Format::Json => serde_json::to_value(e).unwrap_or_default(),
        Format::Ocsf => ocsf_remediation::network_remediation(e, reporter),
        Format::Ecs => ecs_containment::document(e, reporter),
        Format::Cef | Format::Text => Value::String(render_containment(format, e, reporter)),
    }
}

/// A stable id per containment event: receivers deduplicate retried deliveries with it. The
/// renewal count tells two renewals in the same millisecond apart; the `containment|` prefix
/// keeps these ids apart from alert event ids, which share the namespace.
pub fn containment_event_id(e: &ContainmentEvent) -> Uuid {
    let c = &e.containment;
    let name = format!(
        "containment|{}|{}|{}|{}",
        c.id,
        e.event.name(),
        e.at.as_millisecond(),
        c.renewals
    );
    Uuid::new_v5(&EVENT_NAMESPACE, name.as_bytes())
}

/// How much a containment event matters, shared by the formats' severities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Level {
    /// A containment ends: traffic flows again.
    Info,
    /// Decided but not applied (dry run), or an operator's request refused.
    Notice,
    /// A service's traffic to a peer is held back in the kernel.
    Warning,
}

impl Level {
    pub(super) fn of(e: &ContainmentEvent) -> Self {
        match (e.event, e.containment.enforcement) {
            (ContainmentEventKind::Lifted | ContainmentEventKind::Expired, _) => Self::Info,
            (ContainmentEventKind::Refused, _)
            | (
                ContainmentEventKind::Started | ContainmentEventKind::Renewed,
                Enforcement::DryRun,
            ) => Self::Notice,
            (
                ContainmentEventKind::Started | ContainmentEventKind::Renewed,
                Enforcement::Enforced,
            ) => Self::Warning,
        }
    }

    /// As a 0-100 score (ECS `event.severity`; CEF maps it to 0-10 like alerts).
    pub(super) const fn score(self) -> u8 {
        match self {
            Self::Info => 5,
            Self::Notice => 21,
            Self::Warning => 47,
        }
    }
}

/// `198.51.100.7` for one address, `198.51.100.0/24` for a network.
pub(super) fn target_text(target: &IpNet) -> String {
    if target.prefix_len() == target.max_prefix_len() {
        target.addr().to_string()
    } else {
        target.trunc().to_string()
    }
}

/// `event.action` and the CEF signature id: `egress-containment-started`.
pub(super) fn action_name(e: &ContainmentEvent) -> String {
    format!("egress-containment-{}", e.event.name())
}

/// Text from the record (the reason, an operator's name) on one line: line breaks and other
/// control characters escaped, so a hostile reason cannot forge a second log line.
pub(super) fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// `containment started (dry run): would throttle 256.0 KiB/s messaging -> 198.51.100.7
/// (alert 1f0c..., policy, expires 2026-12-07T11:00:00Z): <reason> id=...`, on one line.
pub fn summary(e: &ContainmentEvent) -> String {
    let c = &e.containment;
    let mut s = format!("containment {}", e.event.name());
    if c.enforcement == Enforcement::DryRun {
        s.push_str(" (dry run)");
    }
    let _ = write!(
        s,
        ": {} {} -> {} (",
        c.verb(),
        one_line(&c.service),
        target_text(&c.target)
    );
    match c.alert_id {
        Some(id) => {
            let _ = write!(s, "alert {id}, ");
        }
        None => s.push_str("no alert, "),
    }
    s.push_str(&one_line(&c.decided_by.name()));
    match e.event {
        ContainmentEventKind::Started => {
            let _ = write!(s, ", expires {}", c.expires_at);
        }
        ContainmentEventKind::Renewed => {
            let _ = write!(s, ", renewal {}, expires {}", c.renewals, c.expires_at);
        }
        ContainmentEventKind::Lifted => {
            if let Some(by) = &c.ended_by {
                let _ = write!(s, ", lifted by {}", one_line(&by.name()));
            }
            if let Some(why) = &c.end_reason {
                let _ = write!(s, ": {}", one_line(why));
            }
        }
        ContainmentEventKind::Expired => {
            let _ = write!(s, ", expired at {}", c.ended_at.unwrap_or(e.at));
        }
        ContainmentEventKind::Refused => s.push_str(", refused"),
    }
    let _ = write!(s, "): {} id={}", one_line(&c.reason), c.id);
    s
}

/// The operator's login, when an operator decided the step (or ended it).
pub(super) fn operator(c: &Containment, e: &ContainmentEvent) -> Option<String> {
    let by = match e.event {
        ContainmentEventKind::Lifted => c.ended_by.as_ref().unwrap_or(&c.decided_by),
        _ => &c.decided_by,
    };
    match by {
        Decider::Operator { user } => Some(user.clone()),
        Decider::Policy => None,
    }
}

/// The CEF line: signature id `egress-containment-<event>`, the name says "(dry run)", `act`
/// is the verb ("would throttle 256.0 KiB/s"), `cs4` the enforcement; counts in `cn1..3`.
pub fn cef_line(e: &ContainmentEvent, reporter: &Reporter) -> String {
    let c = &e.containment;
    let mut name = format!("Egress containment {}", e.event.name());
    if c.enforcement == Enforcement::DryRun {
        name.push_str(" (dry run)");
    }
    let mut s = format!(
        "CEF:0|{}|{}|{}|{}|{}|{}|",
        cef_header(reporter.product),
        cef_header(reporter.product),
        cef_header(reporter.version),
        cef_header(&action_name(e)),
        cef_header(&name),
        (u32::from(Level::of(e).score()) + 5) / 10
    );
    let mut ext: Vec<(&str, String)> = vec![
        ("rt", e.at.as_millisecond().to_string()),
        ("start", c.started_at.as_millisecond().to_string()),
        (
            "end",
            c.ended_at
                .unwrap_or(c.expires_at)
                .as_millisecond()
                .to_string(),
        ),
        ("act", c.verb()),
        ("cat", "containment".into()),
        ("outcome", super::ecs_containment::outcome(e).into()),
        ("shost", reporter.hostname.clone()),
        ("externalId", containment_event_id(e).to_string()),
        ("dst", c.target.addr().to_string()),
        ("cs1", c.service.clone()),
        ("cs1Label", "service".into()),
        ("cs3", c.id.to_string()),
        ("cs3Label", "containmentId".into()),
        ("cs4", c.enforcement.name().into()),
        ("cs4Label", "enforcement".into()),
        ("cs5", c.decided_by.name()),
        ("cs5Label", "decidedBy".into()),
        ("cs6", c.target.trunc().to_string()),
        ("cs6Label", "target".into()),
        ("cn2", c.renewals.to_string()),
        ("cn2Label", "renewals".into()),
        ("cn3", c.dropped_bytes.to_string()),
        ("cn3Label", "droppedBytes".into()),
    ];
    if let Some(id) = c.alert_id {
        ext.push(("cs2", id.to_string()));
        ext.push(("cs2Label", "alertId".into()));
    }
    if let crate::contain::record::Action::Throttle { bytes_per_sec } = c.action {
        ext.push(("cn1", bytes_per_sec.to_string()));
        ext.push(("cn1Label", "bytesPerSecond".into()));
    }
    if let Some(rule) = c.rule {
        ext.push(("flexString1", rule.id().into()));
        ext.push(("flexString1Label", "rule".into()));
    }
    if let Some(user) = operator(c, e) {
        ext.push(("suser", user));
    }
    ext.push(("reason", c.reason.clone()));
    ext.push(("msg", summary(e)));
    for (i, (k, v)) in ext.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        let _ = write!(s, "{k}={}", cef_value(v));
    }
    s
}

/// Sample containment events for tests (not part of the agent's API).
#[doc(hidden)]
pub mod fixtures {
    use jiff::Timestamp;
    use uuid::Uuid;

    use crate::{
        contain::record::{
            Action, Containment, ContainmentEvent, ContainmentEventKind, ContainmentState, Decider,
            Enforcement,
        },
        detect::rules::RuleId,
    };

    pub const KINDS: [ContainmentEventKind; 5] = [
        ContainmentEventKind::Started,
        ContainmentEventKind::Renewed,
        ContainmentEventKind::Lifted,
        ContainmentEventKind::Expired,
        ContainmentEventKind::Refused,
    ];

    /// The alert the policy answered.
    pub fn alert_id() -> Uuid {
        Uuid::from_u128(0x1234_5678_9abc_4def_8123_4567_89ab_cdef)
    }

    /// The policy's dry-run throttle of messaging towards `198.51.100.7`, just started.
    pub fn started() -> ContainmentEvent {
        let at: Timestamp = "2026-12-07T10:00:00Z".parse().unwrap();
        let target = "198.51.100.7/32".parse().unwrap();
        ContainmentEvent {
            event: ContainmentEventKind::Started,
            at,
            containment: Containment {
                id: Containment::id_for("messaging", &target, at),
                service: "messaging".into(),
                target,
                action: Action::Throttle {
                    bytes_per_sec: 256 * 1024,
                },
                enforcement: Enforcement::DryRun,
                state: ContainmentState::Active,
                alert_id: Some(alert_id()),
                rule: Some(RuleId::PeerOutlier),
                reason: "One peer receives far more than the service's other peers".into(),
                decided_by: Decider::Policy,
                started_at: at,
                renewed_at: at,
                expires_at: "2026-12-07T11:00:00Z".parse().unwrap(),
                renewals: 0,
                ended_at: None,
                ended_by: None,
                end_reason: None,
                dropped_bytes: 0,
                dropped_packets: 0,
            },
        }
    }

    /// `base` as the step `kind` would leave it: renewed twice, lifted by its decider,
    /// expired at its TTL, or refused.
    pub fn step(mut e: ContainmentEvent, kind: ContainmentEventKind) -> ContainmentEvent {
        let c = &mut e.containment;
        e.event = kind;
        match kind {
            ContainmentEventKind::Started | ContainmentEventKind::Refused => {}
            ContainmentEventKind::Renewed => {
                e.at = "2026-12-07T10:20:00Z".parse().unwrap();
                c.renewed_at = e.at;
                c.renewals = 2;
                c.expires_at = "2026-12-07T11:20:00Z".parse().unwrap();
            }
            ContainmentEventKind::Lifted => {
                e.at = "2026-12-07T10:30:00Z".parse().unwrap();
                c.state = ContainmentState::Lifted;
                c.ended_at = Some(e.at);
                c.ended_by = Some(c.decided_by.clone());
                c.end_reason = Some("its alert resolved".into());
            }
            ContainmentEventKind::Expired => {
                e.at = c.expires_at;
                c.state = ContainmentState::Expired;
                c.ended_at = Some(e.at);
                c.end_reason = Some("ttl".into());
            }
        }
        if c.enforcement == Enforcement::Enforced && kind != ContainmentEventKind::Refused {
            c.dropped_bytes = 52_428_800;
            c.dropped_packets = 36_000;
        }
        e
    }

    /// Every event kind x action x enforcement x decider, on one address (v4 and v6) and on
    /// a prefix group's network.
    pub fn every_combination() -> Vec<ContainmentEvent> {
        let mut out = Vec::new();
        for kind in KINDS {
            for action in [
                Action::Throttle {
                    bytes_per_sec: 256 * 1024,
                },
                Action::Block,
            ] {
                for enforcement in [Enforcement::DryRun, Enforcement::Enforced] {
                    for decider in [
                        Decider::Policy,
                        Decider::Operator {
                            user: "alice".into(),
                        },
                    ] {
                        for target in ["198.51.100.7/32", "2001:db8::8a/128", "2001:db8:1::/48"] {
                            let mut e = started();
                            let c = &mut e.containment;
                            c.action = action;
                            c.enforcement = enforcement;
                            c.target = target.parse().unwrap();
                            if let Decider::Operator { .. } = decider {
                                c.alert_id = None;
                                c.rule = None;
                                c.reason = "contain add by alice: ticket SEC-42".into();
                            }
                            c.decided_by = decider.clone();
                            out.push(step(e, kind));
                        }
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::{fixtures::*, *};
    use crate::export::fixtures::reporter;

    const FORMATS: [Format; 5] = [
        Format::Json,
        Format::Ocsf,
        Format::Ecs,
        Format::Cef,
        Format::Text,
    ];

    #[test]
    fn event_ids_are_stable_and_distinct_per_step() {
        let e = started();
        assert_eq!(containment_event_id(&e), containment_event_id(&e.clone()));
        let ids: std::collections::HashSet<Uuid> = KINDS
            .iter()
            .map(|&k| containment_event_id(&step(started(), k)))
            .collect();
        assert_eq!(ids.len(), KINDS.len(), "one id per step");
        let mut again = step(started(), ContainmentEventKind::Renewed);
        let first = containment_event_id(&again);
        again.containment.renewals += 1;
        assert_ne!(first, containment_event_id(&again), "a later renewal");
        assert_ne!(containment_event_id(&e), e.containment.id);
        // Pinned (checked with Python's uuid.uuid5): a receiver that deduplicates on it must
        // see the same id after an upgrade.
        assert_eq!(
            containment_event_id(&e).to_string(),
            "54af1a51-d792-58f6-87fb-3f8940741377"
        );
    }

    #[test]
    fn every_format_renders_one_line_and_the_values_agree() {
        let r = reporter();
        for e in every_combination() {
            for f in FORMATS {
                let line = render_containment(f, &e, &r);
                assert!(!line.is_empty() && !line.contains('\n'), "{f:?}: {line}");
                let v = containment_event_value(f, &e, &r);
                match f {
                    Format::Cef | Format::Text => assert_eq!(v, Value::String(line)),
                    _ => assert_eq!(v, serde_json::from_str::<Value>(&line).unwrap(), "{f:?}"),
                }
            }
        }
    }

    #[test]
    fn the_agents_json_is_the_event() {
        let e = step(started(), ContainmentEventKind::Lifted);
        let line = render_containment(Format::Json, &e, &reporter());
        let back: ContainmentEvent = serde_json::from_str(&line).unwrap();
        assert_eq!(back, e);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["containment"]["enforcement"], "dry_run");
        assert_eq!(v["event"], "lifted");
    }

    #[test]
    fn the_summary_says_what_would_be_done_to_whom() {
        let text = render_containment(Format::Text, &started(), &reporter());
        assert!(
            text.starts_with(
                "2026-12-07T10:00:00Z containment started (dry run): would throttle 256.0 \
                 KiB/s messaging -> 198.51.100.7 (alert 12345678-9abc-4def-8123-456789abcdef, \
                 policy, expires 2026-12-07T11:00:00Z): One peer"
            ),
            "{text}"
        );
        let mut e = step(started(), ContainmentEventKind::Lifted);
        e.containment.enforcement = Enforcement::Enforced;
        e.containment.target = "2001:db8:1::/48".parse().unwrap();
        e.containment.ended_by = Some(Decider::Operator { user: "bob".into() });
        let text = summary(&e);
        assert!(
            text.starts_with(
                "containment lifted: throttle 256.0 KiB/s messaging -> 2001:db8:1::/48 (alert"
            ),
            "{text}"
        );
        assert!(
            text.contains(", lifted by operator bob: its alert resolved)"),
            "{text}"
        );
    }

    #[test]
    fn an_operators_containment_names_no_alert() {
        let e = every_combination()
            .into_iter()
            .find(|e| matches!(e.containment.decided_by, Decider::Operator { .. }))
            .unwrap();
        let text = summary(&e);
        assert!(text.contains("(no alert, operator alice"), "{text}");
        let cef = cef_line(&e, &reporter());
        assert!(!cef.contains("alertId"), "{cef}");
        assert!(cef.contains(" suser=alice "), "{cef}");
        assert!(
            cef.contains("cs5=operator alice cs5Label=decidedBy"),
            "{cef}"
        );
    }

    #[test]
    fn the_cef_line_carries_the_containment() {
        let e = started();
        let line = cef_line(&e, &reporter());
        assert!(
            line.starts_with(
                "CEF:0|egress-monitor|egress-monitor|0.1.0|egress-containment-started|Egress \
                 containment started (dry run)|2|"
            ),
            "{line}"
        );
        for want in [
            " act=would throttle 256.0 KiB/s ",
            " dst=198.51.100.7 ",
            " cs4=dry_run cs4Label=enforcement ",
            " cs6=198.51.100.7/32 cs6Label=target ",
            " cn1=262144 cn1Label=bytesPerSecond ",
            " outcome=unknown ",
            " flexString1=peer_outlier flexString1Label=rule ",
            &format!(" cs2={} cs2Label=alertId ", alert_id()),
            &format!(" externalId={} ", containment_event_id(&e)),
        ] {
            assert!(line.contains(want), "{want:?} in {line}");
        }
        let mut enforced = step(started(), ContainmentEventKind::Started);
        enforced.containment.enforcement = Enforcement::Enforced;
        enforced.containment.action = crate::contain::record::Action::Block;
        let line = cef_line(&enforced, &reporter());
        assert!(line.contains("|Egress containment started|5|"), "{line}");
        assert!(
            line.contains(" act=block ") && !line.contains("cn1="),
            "{line}"
        );
    }

    #[test]
    fn hostile_text_stays_on_one_line_in_the_summary() {
        let mut e = started();
        e.containment.reason = "x\ny\r\u{1b}[31m".into();
        e.containment.service = "svc\nFAKE".into();
        let text = summary(&e);
        assert!(!text.contains(['\n', '\r', '\u{1b}']), "{text}");
        assert!(text.contains("svc\\nFAKE -> "), "{text}");
        assert!(text.contains("): x\\ny\\r\\u{1b}[31m id="), "{text}");
    }
}
