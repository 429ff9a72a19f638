//! RFC 5424 syslog messages carrying an alert: structured data with the alert's key facts,
//! and as MSG either a short text or one of the formats. Framing for stream transports:
//! octet counting (RFC 5425/6587 `LEN SP MSG`, the default) or a trailing LF.

use std::fmt::Write as _;

use jiff::Timestamp;

use super::{Format, Reporter, event_id, render};
use crate::detect::{
    alerts::{AlertEvent, AlertEventKind},
    rules::Severity,
};

/// SD-ID: `name@<private enterprise number>`. 32473 is the number RFC 5612 reserves for
/// documentation and examples; a deployment with its own number can change it.
pub const SD_ID: &str = "egress@32473";

/// The default facility: 13, log audit.
pub const DEFAULT_FACILITY: u8 = 13;

/// What goes after the structured data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// A one-line summary.
    Text,
    /// The event in a format (OCSF, ECS, CEF or JSON).
    Format(Format),
}

/// Stream framing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Framing {
    /// RFC 5425 / RFC 6587 octet counting: `LEN SP MSG`.
    OctetCounting,
    /// Legacy: the message then LF (messages must not contain LF).
    Lf,
}

/// Syslog severity: alerts by their severity, the end of an alert as informational.
fn severity(e: &AlertEvent) -> u8 {
    match e.event {
        AlertEventKind::Resolved | AlertEventKind::Suppressed => 6,
        AlertEventKind::Acknowledged => 5,
        AlertEventKind::Opened | AlertEventKind::Updated => match e.alert.severity {
            Severity::Critical => 2,
            Severity::High => 3,
            Severity::Medium => 4,
            Severity::Low => 5,
        },
    }
}

/// Keeps printable US-ASCII (33-126), at most `max` characters; nil (`-`) when empty.
pub(super) fn header_field(s: &str, max: usize) -> String {
    let v: String = s.chars().filter(char::is_ascii_graphic).take(max).collect();
    if v.is_empty() { "-".to_owned() } else { v }
}

/// Escapes an SD-PARAM value: `"`, `\` and `]`.
pub(super) fn sd_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// RFC 3339 with at most 6 fraction digits (RFC 5424 allows no more).
pub(super) fn timestamp(t: Timestamp) -> String {
    let micros = t.as_microsecond();
    Timestamp::from_microsecond(micros)
        .unwrap_or(t)
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// One RFC 5424 message (no framing).
pub fn message(e: &AlertEvent, reporter: &Reporter, facility: u8, payload: Payload) -> String {
    let a = &e.alert;
    let mut s = header(e, reporter, facility, e.event.name());
    match payload {
        Payload::Text | Payload::Format(Format::Text) => {
            let _ = write!(s, "{}: {}", a.title, crate::alert_output::summary(a));
        }
        Payload::Format(f) => s.push_str(&render(f, e, reporter)),
    }
    s
}

/// The message carrying the OCSF Network Activity of `e` (`ocsf_network_activity`), with the
/// alert's structured data and MSGID `traffic`; none when the alert has no single peer.
pub fn network_activity_message(
    e: &AlertEvent,
    reporter: &Reporter,
    facility: u8,
) -> Option<String> {
    let activity = super::ocsf_network::network_activity(e, reporter)?;
    let mut s = header(e, reporter, facility, "traffic");
    s.push_str(&activity.to_string());
    Some(s)
}

/// Header and structured data, up to the message part.
fn header(e: &AlertEvent, reporter: &Reporter, facility: u8, msgid: &str) -> String {
    let a = &e.alert;
    let pri = u16::from(facility.min(23)) * 8 + u16::from(severity(e));
    let mut s = format!(
        "<{pri}>1 {} {} {} {} {} [{SD_ID}",
        timestamp(e.at),
        header_field(&reporter.hostname, 255),
        header_field(reporter.product, 48),
        std::process::id(),
        header_field(msgid, 32),
    );
    let mut params: Vec<(&str, String)> = vec![
        ("eventId", event_id(e).to_string()),
        ("alertId", a.id.to_string()),
        ("rule", a.rule.id().to_owned()),
        ("severity", a.severity.name().to_owned()),
        ("service", a.service.clone()),
        ("bytes", a.bytes.to_string()),
        ("window", a.window.name().to_owned()),
        ("threshold", a.threshold.bytes.to_string()),
        ("tactic", a.attack.tactic_id.clone()),
        ("technique", a.attack.technique_id.clone()),
    ];
    if let Some(r) = a.threshold.reference {
        params.push(("reference", r.name().to_owned()));
    }
    if let Some(p) = &a.peer {
        // A prefix group's peer is its network in CIDR form (`198.51.100.0/24`).
        params.push(("peer", p.addr_text()));
        params.push(("port", p.port.to_string()));
        params.push(("class", p.class.name().to_owned()));
    }
    if let Some(pid) = a.process.as_ref().and_then(|o| o.pid) {
        params.push(("pid", pid.to_string()));
    }
    for (k, v) in params {
        let _ = write!(s, " {k}=\"{}\"", sd_value(&v));
    }
    s.push_str("] ");
    s
}

/// Frames `msg` for a stream transport.
pub fn frame(msg: &str, framing: Framing) -> Vec<u8> {
    match framing {
        Framing::OctetCounting => format!("{} {msg}", msg.len()).into_bytes(),
        Framing::Lf => format!("{msg}\n").into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::fixtures::{self, reporter};

    #[test]
    fn a_5424_message_with_structured_data() {
        let e = fixtures::opened();
        let m = message(&e, &reporter(), DEFAULT_FACILITY, Payload::Text);
        // facility 13 x 8 + severity 3 (high).
        assert!(m.starts_with("<107>1 2026-06-01T"), "{m}");
        let fields: Vec<&str> = m.splitn(7, ' ').collect();
        assert_eq!(
            fields[1].len(),
            "2026-06-01T14:01:00.000000Z".len(),
            "{}",
            fields[1]
        );
        assert_eq!(fields[2], "matrix.example.org");
        assert_eq!(fields[3], "egress-monitor");
        assert_eq!(fields[5], "opened");
        assert!(m.contains(&format!("[{SD_ID} eventId=\"")), "{m}");
        assert!(m.contains(" rule=\"peer_outlier\""), "{m}");
        assert!(m.contains(" peer=\"2001:db8::8a\""), "{m}");
        assert!(m.contains("] One peer receives"), "{m}");
    }

    #[test]
    fn sd_values_are_escaped_and_headers_sanitized() {
        let mut e = fixtures::opened();
        e.alert.service = "a\"b]c\\d".into();
        let mut r = reporter();
        r.hostname = "bad host\n".into();
        let m = message(&e, &r, 4, Payload::Text);
        assert!(m.contains(r#"service="a\"b\]c\\d""#), "{m}");
        assert!(m.contains(" badhost "), "{m}");
        assert!(m.starts_with("<35>1 "), "auth (4) x 8 + 3: {m}");
    }

    #[test]
    fn framings() {
        assert_eq!(
            frame("<13>1 - - - - - - hi", Framing::OctetCounting),
            b"20 <13>1 - - - - - - hi"
        );
        assert_eq!(frame("x", Framing::Lf), b"x\n");
        let e = fixtures::opened();
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
        assert_eq!(v["class_uid"], 2004);
    }

    #[test]
    fn resolution_is_informational() {
        let mut e = fixtures::opened();
        e.event = AlertEventKind::Resolved;
        let m = message(&e, &reporter(), DEFAULT_FACILITY, Payload::Text);
        assert!(m.starts_with("<110>1 "), "{m}");
    }

    #[test]
    fn the_network_activity_message_shares_the_structured_data() {
        let e = fixtures::opened();
        let m = network_activity_message(&e, &reporter(), DEFAULT_FACILITY).unwrap();
        let finding = message(
            &e,
            &reporter(),
            DEFAULT_FACILITY,
            Payload::Format(Format::Ocsf),
        );
        let sd = |m: &str| {
            m.split_once(" [")
                .unwrap()
                .1
                .split_once("] ")
                .unwrap()
                .0
                .to_owned()
        };
        assert_eq!(sd(&m), sd(&finding));
        assert_eq!(m.split(' ').nth(5), Some("traffic"), "MSGID: {m}");
        let json: serde_json::Value = serde_json::from_str(m.split_once("] ").unwrap().1).unwrap();
        crate::schema_check::validate_ocsf(&json).unwrap();
        assert_eq!(json["class_uid"], 4001);
    }
}
