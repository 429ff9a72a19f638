//! What every containment format must say: dry run, unmistakably; the alert for the
//! policy's containments and none for an operator's; and a hostile `reason` that stays one
//! value on one line.

use serde_json::Value;

use super::{
    Format,
    containment::{
        cef_line, containment_event_id,
        fixtures::{alert_id, every_combination, started},
        render_containment, summary,
    },
    containment_syslog, ecs_containment,
    fixtures::reporter,
    ocsf_remediation,
    syslog::{DEFAULT_FACILITY, Payload},
};
use crate::contain::record::{ContainmentEvent, Decider, Enforcement};

fn syslog(e: &ContainmentEvent) -> String {
    containment_syslog::message(e, &reporter(), DEFAULT_FACILITY, Payload::Text)
}

/// The SD-PARAMs of a message, unescaped, as a receiver reads them: `name="value"` pairs up
/// to the unescaped `]` that ends the element.
fn sd_params(msg: &str) -> Vec<(String, String)> {
    let start = msg.find(" [").expect("structured data") + 2;
    let mut chars = msg[start..].chars();
    // The SD-ID.
    for c in chars.by_ref() {
        if c == ' ' {
            break;
        }
    }
    let mut params = Vec::new();
    loop {
        let name: String = chars.by_ref().take_while(|&c| c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "{msg}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.push(chars.next().expect("escaped character")),
                '"' => break,
                c => value.push(c),
            }
        }
        params.push((name, value));
        match chars.next() {
            Some(' ') => {}
            Some(']') => return params,
            other => panic!("after a param: {other:?} in {msg}"),
        }
    }
}

fn param(msg: &str, name: &str) -> Option<String> {
    sd_params(msg)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

#[test]
fn dry_run_is_marked_in_every_format_and_only_in_dry_run() {
    let r = reporter();
    for e in every_combination() {
        let dry = e.containment.enforcement == Enforcement::DryRun;
        let case = format!("{:?} {:?}", e.event, e.containment.enforcement);
        let json: Value = serde_json::from_str(&render_containment(Format::Json, &e, &r)).unwrap();
        assert_eq!(
            json["containment"]["enforcement"] == "dry_run",
            dry,
            "json {case}"
        );

        let ocsf = ocsf_remediation::network_remediation(&e, &r);
        let detail = ocsf["status_detail"].as_str().unwrap();
        assert_eq!(detail.contains("dry run"), dry, "ocsf {case}: {detail}");
        assert_eq!(ocsf["status_code"] == "dry_run", dry, "ocsf {case}");
        assert_eq!(ocsf["unmapped"]["dry_run"], dry, "ocsf {case}");
        if dry {
            assert_ne!(ocsf["status_id"], 1, "a dry run is never Success: {case}");
        }

        let ecs = ecs_containment::document(&e, &r);
        assert_eq!(ecs["labels"]["dry_run"], dry.to_string(), "ecs {case}");
        assert_eq!(ecs["labels"]["enforcement"] == "dry_run", dry, "ecs {case}");
        if dry {
            assert_ne!(ecs["event"]["outcome"], "success", "ecs {case}");
            let types = ecs["event"]["type"].as_array().unwrap();
            assert!(!types.contains(&"denied".into()), "ecs {case}: {types:?}");
        }

        let cef = cef_line(&e, &r);
        assert_eq!(cef.contains(" (dry run)|"), dry, "cef name {case}: {cef}");
        assert_eq!(cef.contains(" cs4=dry_run "), dry, "cef {case}: {cef}");
        assert_eq!(cef.contains(" act=would "), dry, "cef {case}: {cef}");

        let sys = syslog(&e);
        assert_eq!(
            param(&sys, "enforcement").as_deref() == Some("dry_run"),
            dry,
            "syslog {case}: {sys}"
        );
        assert_eq!(
            param(&sys, "action").unwrap().starts_with("would "),
            dry,
            "syslog {case}: {sys}"
        );

        let text = summary(&e);
        assert_eq!(
            text.contains(" (dry run): would "),
            dry,
            "text {case}: {text}"
        );
    }
}

#[test]
fn the_alert_is_named_for_the_policys_containments_only() {
    let r = reporter();
    let alert = alert_id().to_string();
    for e in every_combination() {
        let policy = e.containment.decided_by == Decider::Policy;
        let case = format!("{:?} {:?}", e.event, e.containment.decided_by);
        let ocsf = ocsf_remediation::network_remediation(&e, &r);
        let ecs = ecs_containment::document(&e, &r);
        let json: Value = serde_json::from_str(&render_containment(Format::Json, &e, &r)).unwrap();
        let sys = syslog(&e);
        let cef = cef_line(&e, &r);
        if policy {
            assert_eq!(ocsf["metadata"]["correlation_uid"], alert, "ocsf {case}");
            assert_eq!(ecs["labels"]["alert_id"], alert, "ecs {case}");
            assert_eq!(json["containment"]["alert_id"], alert, "json {case}");
            assert_eq!(param(&sys, "alertId"), Some(alert.clone()), "syslog {case}");
            assert!(
                cef.contains(&format!(" cs2={alert} cs2Label=alertId ")),
                "{cef}"
            );
            assert!(summary(&e).contains(&format!("(alert {alert}, policy")));
        } else {
            // Absent, not empty or null: the documents still validate (the schema tests).
            assert!(
                ocsf["metadata"].get("correlation_uid").is_none(),
                "ocsf {case}"
            );
            assert!(ecs["labels"].get("alert_id").is_none(), "ecs {case}");
            assert!(json["containment"].get("alert_id").is_none(), "json {case}");
            assert_eq!(param(&sys, "alertId"), None, "syslog {case}");
            assert!(!cef.contains("alertId"), "cef {case}: {cef}");
            assert!(summary(&e).contains("(no alert, operator alice"));
        }
    }
}

const HOSTILE: &str = "x=1 \\ y] \"q\"\nCEF:0|forged|line\r\n<13>1 - - - - - - forged";

fn hostile() -> ContainmentEvent {
    let mut e = started();
    e.containment.reason = HOSTILE.into();
    e
}

#[test]
fn a_hostile_reason_is_one_cef_value() {
    let line = cef_line(&hostile(), &reporter());
    assert!(!line.contains(['\n', '\r']), "{line}");
    let escaped =
        "reason=x\\=1 \\\\ y] \"q\"\\nCEF:0|forged|line\\r\\n<13>1 - - - - - - forged msg=";
    assert!(line.contains(escaped), "{line}");
    // No unescaped `=` in the value: a parser finds no key inside it.
    let value = line
        .split_once(" reason=")
        .unwrap()
        .1
        .split_once(" msg=")
        .unwrap()
        .0;
    let bytes = value.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'=' {
            assert_eq!(bytes[i - 1], b'\\', "unescaped = at {i} in {value}");
        }
    }
}

#[test]
fn a_hostile_reason_is_one_sd_param_on_one_line() {
    let m = syslog(&hostile());
    assert!(!m.contains(['\n', '\r']), "{m}");
    // Line breaks are escaped as text (for LF framing); the rest reads back exactly.
    let want = HOSTILE.replace('\n', "\\n").replace('\r', "\\r");
    assert_eq!(param(&m, "reason"), Some(want), "{m}");
    assert!(m.contains(r#" reason="x=1 \\ y\] \"q\"\\nCEF:0"#), "{m}");
    // The params before it are intact, and the element ends where it should.
    assert_eq!(param(&m, "event").as_deref(), Some("started"));
    assert!(
        m.contains("\"] containment started (dry run): would throttle"),
        "{m}"
    );
}

#[test]
fn a_hostile_reason_reads_back_from_every_json_form() {
    let e = hostile();
    let r = reporter();
    for f in [Format::Json, Format::Ocsf, Format::Ecs] {
        let line = render_containment(f, &e, &r);
        assert!(!line.contains(['\n', '\r']), "{f:?}: {line}");
        let v: Value = serde_json::from_str(&line).unwrap();
        let reason = match f {
            Format::Json => v["containment"]["reason"].clone(),
            Format::Ocsf => v["unmapped"]["reason"].clone(),
            _ => v["event"]["reason"]
                .as_str()
                .unwrap()
                .strip_prefix("would throttle 256.0 KiB/s: ")
                .unwrap()
                .into(),
        };
        assert_eq!(reason, HOSTILE, "{f:?}");
    }
    let text = render_containment(Format::Text, &e, &r);
    assert!(!text.contains(['\n', '\r']), "{text}");
}

#[test]
fn the_event_id_is_the_same_in_every_format() {
    let e = started();
    let id = containment_event_id(&e).to_string();
    let r = reporter();
    assert_eq!(
        ocsf_remediation::network_remediation(&e, &r)["metadata"]["uid"],
        id
    );
    assert_eq!(ecs_containment::document(&e, &r)["event"]["id"], id);
    assert!(cef_line(&e, &r).contains(&format!(" externalId={id} ")));
    assert_eq!(param(&syslog(&e), "eventId"), Some(id));
}
