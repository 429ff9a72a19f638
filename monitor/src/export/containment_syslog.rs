//! RFC 5424 syslog messages carrying a containment event, with the header conventions of
//! the alert messages ([`syslog`](super::syslog)): MSGID `containment`, structured data
//! with the containment's key facts, then the summary or one of the formats. The SD-ID is
//! its own (`containment@32473`), since its parameters are not the alert's.
//!
//! Values from the record (the reason, names) have their control characters escaped
//! (`\n`), so a hostile reason cannot end the message early under LF framing.
//!
//! Dry run: `enforcement="dry_run"` and `action="would throttle 256.0 KiB/s"` in the
//! structured data, and the text says "(dry run)".

use std::fmt::Write as _;

use super::{
    Reporter,
    containment::{
        Level, containment_event_id, one_line, operator, render_containment, summary, target_text,
    },
    syslog::{Payload, header_field, sd_value, timestamp},
};
use crate::contain::record::{Action, ContainmentEvent};

/// SD-ID of containment events: `name@<private enterprise number>`, the number of the
/// alerts' [`SD_ID`](super::syslog::SD_ID) (RFC 5612's documentation number).
pub const SD_ID: &str = "containment@32473";

/// The MSGID of every containment event (the step is in the structured data).
pub const MSGID: &str = "containment";

/// Syslog severity: warning (4) while the kernel holds traffic back, notice (5) for a dry
/// run or a refusal, informational (6) when it ends.
const fn severity(level: Level) -> u8 {
    match level {
        Level::Warning => 4,
        Level::Notice => 5,
        Level::Info => 6,
    }
}

/// One RFC 5424 message (no framing; [`syslog::frame`](super::syslog::frame) frames it).
pub fn message(
    e: &ContainmentEvent,
    reporter: &Reporter,
    facility: u8,
    payload: Payload,
) -> String {
    let c = &e.containment;
    let pri = u16::from(facility.min(23)) * 8 + u16::from(severity(Level::of(e)));
    let mut s = format!(
        "<{pri}>1 {} {} {} {} {MSGID} [{SD_ID}",
        timestamp(e.at),
        header_field(&reporter.hostname, 255),
        header_field(reporter.product, 48),
        std::process::id(),
    );
    let mut params: Vec<(&str, String)> = vec![
        ("eventId", containment_event_id(e).to_string()),
        ("containmentId", c.id.to_string()),
        ("event", e.event.name().into()),
        ("action", c.verb()),
        ("enforcement", c.enforcement.name().into()),
        ("service", c.service.clone()),
        ("target", target_text(&c.target)),
        ("decidedBy", c.decided_by.name()),
        ("expires", timestamp(c.expires_at)),
        ("renewals", c.renewals.to_string()),
    ];
    if let Some(id) = c.alert_id {
        params.push(("alertId", id.to_string()));
    }
    if let Some(rule) = c.rule {
        params.push(("rule", rule.id().into()));
    }
    if let Action::Throttle { bytes_per_sec } = c.action {
        params.push(("bytesPerSec", bytes_per_sec.to_string()));
    }
    if let Some(user) = operator(c, e) {
        params.push(("user", user));
    }
    if let Some(why) = &c.end_reason {
        params.push(("endReason", why.clone()));
    }
    params.push(("reason", c.reason.clone()));
    for (k, v) in params {
        // Line breaks as `\n`: LF framing must see one message (RFC 5424 would allow them).
        let _ = write!(s, " {k}=\"{}\"", sd_value(&one_line(&v)));
    }
    s.push_str("] ");
    match payload {
        Payload::Text | Payload::Format(super::Format::Text) => s.push_str(&summary(e)),
        Payload::Format(f) => s.push_str(&render_containment(f, e, reporter)),
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        contain::record::{ContainmentEventKind, Decider, Enforcement},
        export::{
            Format,
            containment::fixtures::{alert_id, started, step},
            fixtures::reporter,
            syslog::{DEFAULT_FACILITY, Framing, frame},
        },
    };

    #[test]
    fn a_5424_message_with_the_containment_in_structured_data() {
        let e = started();
        let m = message(&e, &reporter(), DEFAULT_FACILITY, Payload::Text);
        // facility 13 x 8 + notice (5): a dry run.
        assert!(m.starts_with("<109>1 2026-12-07T10:00:00.000000Z "), "{m}");
        let fields: Vec<&str> = m.splitn(7, ' ').collect();
        assert_eq!(fields[2], "matrix.example.org");
        assert_eq!(fields[3], "egress-monitor");
        assert_eq!(fields[5], "containment");
        assert!(
            fields[6].starts_with("[containment@32473 eventId=\""),
            "{m}"
        );
        for want in [
            format!(" containmentId=\"{}\"", e.containment.id),
            format!(" alertId=\"{}\"", alert_id()),
            " event=\"started\"".into(),
            " action=\"would throttle 256.0 KiB/s\"".into(),
            " enforcement=\"dry_run\"".into(),
            " target=\"198.51.100.7\"".into(),
            " bytesPerSec=\"262144\"".into(),
            " expires=\"2026-12-07T11:00:00.000000Z\"".into(),
        ] {
            assert!(m.contains(&want), "{want} in {m}");
        }
        assert!(
            m.contains("] containment started (dry run): would throttle"),
            "{m}"
        );
    }

    #[test]
    fn enforced_is_a_warning_and_its_end_informational() {
        let mut e = started();
        e.containment.enforcement = Enforcement::Enforced;
        let m = message(&e, &reporter(), DEFAULT_FACILITY, Payload::Text);
        assert!(m.starts_with("<108>1 "), "{m}");
        assert!(m.contains(" enforcement=\"enforced\""), "{m}");
        let m = message(
            &step(e, ContainmentEventKind::Expired),
            &reporter(),
            DEFAULT_FACILITY,
            Payload::Text,
        );
        assert!(m.starts_with("<110>1 "), "{m}");
        assert!(m.contains(" endReason=\"ttl\""), "{m}");
    }

    #[test]
    fn an_operators_message_has_no_alert_id() {
        let mut e = started();
        e.containment.alert_id = None;
        e.containment.rule = None;
        e.containment.decided_by = Decider::Operator {
            user: "alice".into(),
        };
        let m = message(&e, &reporter(), DEFAULT_FACILITY, Payload::Text);
        assert!(!m.contains("alertId="), "{m}");
        assert!(m.contains(" decidedBy=\"operator alice\" "), "{m}");
        assert!(m.contains(" user=\"alice\""), "{m}");
    }

    #[test]
    fn carries_a_format_and_frames() {
        let e = started();
        let m = message(
            &e,
            &reporter(),
            DEFAULT_FACILITY,
            Payload::Format(Format::Ocsf),
        );
        let framed = frame(&m, Framing::OctetCounting);
        let (len, rest) = std::str::from_utf8(&framed)
            .unwrap()
            .split_once(' ')
            .unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), rest.len());
        let json = rest.split_once("] ").unwrap().1;
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["class_uid"], 7004);
        crate::schema_check::validate_ocsf(&v).unwrap();
    }
}
