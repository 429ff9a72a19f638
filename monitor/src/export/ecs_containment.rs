//! ECS 9.4.0 document for a containment event: `event.kind` `event` (the agent's own action,
//! not a detection), `event.category` `network`, `event.action`
//! `egress-containment-<step>`, the target as `destination`, the rule as `rule`, the operator
//! as `user`. `event.type` takes only the values ECS expects with `network`: `start`/`end`
//! for the containment's first and last steps, `denied` while the kernel holds traffic back,
//! `info` otherwise (dry run, a renewal in dry run, a refusal).
//!
//! Dry run: `event.outcome` `unknown` (nothing was applied, so not `success`), no `denied`,
//! `labels.enforcement` `dry_run` and `labels.dry_run` `true`, and the message and reason
//! start with what would be done. The ids, the action and the enforcement go in `labels`
//! (keyword extras), like the alert document's.

use serde_json::{Map, Value, json};

use super::{
    Reporter,
    containment::{Level, action_name, containment_event_id, operator, summary, target_text},
    ecs::VERSION,
};
use crate::contain::record::{Action, ContainmentEvent, ContainmentEventKind, Enforcement};

/// `event.outcome`: a refusal failed, a dry run's effect is unknown (nothing was applied),
/// an enforced step succeeded.
pub(super) fn outcome(e: &ContainmentEvent) -> &'static str {
    match (e.event, e.containment.enforcement) {
        (ContainmentEventKind::Refused, _) => "failure",
        (_, Enforcement::DryRun) => "unknown",
        (_, Enforcement::Enforced) => "success",
    }
}

fn event_types(e: &ContainmentEvent) -> Vec<&'static str> {
    let enforced = e.containment.enforcement == Enforcement::Enforced;
    match e.event {
        ContainmentEventKind::Started if enforced => vec!["start", "denied"],
        ContainmentEventKind::Started => vec!["start", "info"],
        ContainmentEventKind::Renewed if enforced => vec!["denied"],
        ContainmentEventKind::Renewed | ContainmentEventKind::Refused => vec!["info"],
        ContainmentEventKind::Lifted | ContainmentEventKind::Expired => vec!["end"],
    }
}

fn labels(e: &ContainmentEvent) -> Map<String, Value> {
    let c = &e.containment;
    let mut labels = Map::new();
    let mut put = |k: &str, v: String| {
        labels.insert(k.into(), Value::String(v));
    };
    put("containment_id", c.id.to_string());
    if let Some(id) = c.alert_id {
        put("alert_id", id.to_string());
    }
    put("containment_action", c.action.name().into());
    if let Action::Throttle { bytes_per_sec } = c.action {
        put("bytes_per_sec", bytes_per_sec.to_string());
    }
    put("enforcement", c.enforcement.name().into());
    put(
        "dry_run",
        (c.enforcement == Enforcement::DryRun).to_string(),
    );
    put("containment_state", c.state.name().into());
    put("decided_by", c.decided_by.name());
    put("target", target_text(&c.target));
    put("expires_at", c.expires_at.to_string());
    put("renewals", c.renewals.to_string());
    if let Some(why) = &c.end_reason {
        put("end_reason", why.clone());
    }
    if let Some(by) = &c.ended_by {
        put("ended_by", by.name());
    }
    put("dropped_bytes", c.dropped_bytes.to_string());
    put("dropped_packets", c.dropped_packets.to_string());
    labels
}

/// The ECS document for `e`.
pub fn document(e: &ContainmentEvent, reporter: &Reporter) -> Value {
    let c = &e.containment;
    let score = Level::of(e).score();
    let ip = c.target.addr().to_string();
    let mut event = json!({
        "kind": "event",
        "category": ["network"],
        "type": event_types(e),
        "action": action_name(e),
        "outcome": outcome(e),
        "id": containment_event_id(e).to_string(),
        "severity": score,
        "risk_score": f64::from(score),
        "start": c.started_at.to_string(),
        "dataset": "egress_monitor.containment",
        "module": "egress_monitor",
        "provider": reporter.product,
        "reason": format!("{}: {}", c.verb(), c.reason),
    });
    if let Some(end) = c.ended_at {
        event["end"] = json!(end.to_string());
    }
    let mut doc = json!({
        "@timestamp": e.at.to_string(),
        "ecs": { "version": VERSION },
        "message": summary(e),
        "event": event,
        "network": {
            "direction": "egress",
            "type": if c.target.addr().is_ipv4() { "ipv4" } else { "ipv6" },
        },
        // A network's first address; `labels.target` has the prefix.
        "destination": { "ip": ip, "address": ip },
        "related": { "ip": [ip] },
        "host": { "hostname": reporter.hostname, "name": reporter.hostname },
        "observer": {
            "hostname": reporter.hostname,
            "product": reporter.product,
            "vendor": reporter.product,
            "version": reporter.version,
            "type": "host-agent",
        },
        "service": { "name": c.service },
        "labels": labels(e),
    });
    if let Some(rule) = c.rule {
        doc["rule"] = json!({
            "id": rule.id(),
            "name": rule.title(),
            "ruleset": reporter.product,
            "description": format!("Rule {} of {}", rule.number(), reporter.product),
        });
    }
    if let Some(user) = operator(c, e) {
        doc["related"]["user"] = json!([user]);
        doc["user"] = json!({ "name": user });
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        contain::record::Decider,
        export::{
            containment::fixtures::{alert_id, every_combination, started, step},
            fixtures::reporter,
        },
        schema_check::validate_ecs,
    };

    #[test]
    fn every_containment_event_validates() {
        for e in every_combination() {
            let doc = document(&e, &reporter());
            if let Err(errors) = validate_ecs(&doc) {
                panic!(
                    "{:?} {:?} {:?} {:?}: {errors:#?}\n{doc:#}",
                    e.event,
                    e.containment.action,
                    e.containment.enforcement,
                    e.containment.decided_by
                );
            }
        }
    }

    #[test]
    fn the_validator_sees_a_broken_document() {
        let mut doc = document(&started(), &reporter());
        doc["event"]["type"] = json!(["throttled"]);
        assert!(validate_ecs(&doc).is_err());
    }

    #[test]
    fn a_dry_run_start_is_not_a_denial() {
        let e = started();
        let d = document(&e, &reporter());
        assert_eq!(d["event"]["kind"], "event");
        assert_eq!(d["event"]["category"], json!(["network"]));
        assert_eq!(d["event"]["type"], json!(["start", "info"]));
        assert_eq!(d["event"]["outcome"], "unknown");
        assert_eq!(d["event"]["action"], "egress-containment-started");
        assert!(
            d["event"]["reason"]
                .as_str()
                .unwrap()
                .starts_with("would throttle 256.0 KiB/s: ")
        );
        assert_eq!(d["labels"]["enforcement"], "dry_run");
        assert_eq!(d["labels"]["dry_run"], "true");
        assert_eq!(d["labels"]["alert_id"], alert_id().to_string());
        assert_eq!(d["labels"]["containment_id"], e.containment.id.to_string());
        assert_eq!(d["destination"]["ip"], "198.51.100.7");
        assert_eq!(d["related"]["ip"], json!(["198.51.100.7"]));
        assert_eq!(d["rule"]["id"], "peer_outlier");
        assert_eq!(d["event"]["id"], containment_event_id(&e).to_string());
        assert!(d.get("user").is_none());
    }

    #[test]
    fn enforced_steps() {
        let mut e = started();
        e.containment.enforcement = Enforcement::Enforced;
        let types = |e: &ContainmentEvent| document(e, &reporter())["event"]["type"].clone();
        assert_eq!(types(&e), json!(["start", "denied"]));
        assert_eq!(
            types(&step(e.clone(), ContainmentEventKind::Renewed)),
            json!(["denied"])
        );
        let lifted = step(e.clone(), ContainmentEventKind::Lifted);
        let d = document(&lifted, &reporter());
        assert_eq!(d["event"]["type"], json!(["end"]));
        assert_eq!(d["event"]["outcome"], "success");
        assert_eq!(d["event"]["end"], "2026-12-07T10:30:00Z");
        assert_eq!(d["labels"]["dropped_bytes"], "52428800");
        let refused = step(e, ContainmentEventKind::Refused);
        assert_eq!(
            document(&refused, &reporter())["event"]["outcome"],
            "failure"
        );
    }

    #[test]
    fn an_operators_containment_has_a_user_and_no_alert() {
        let mut e = started();
        e.containment.alert_id = None;
        e.containment.rule = None;
        e.containment.decided_by = Decider::Operator {
            user: "alice".into(),
        };
        e.containment.target = "2001:db8:1::/48".parse().unwrap();
        let d = document(&e, &reporter());
        validate_ecs(&d).unwrap_or_else(|errors| panic!("{errors:#?}\n{d:#}"));
        assert!(d["labels"].get("alert_id").is_none());
        assert!(d.get("rule").is_none());
        assert_eq!(d["user"]["name"], "alice");
        assert_eq!(d["related"]["user"], json!(["alice"]));
        assert_eq!(d["labels"]["target"], "2001:db8:1::/48");
        assert_eq!(d["destination"]["ip"], "2001:db8:1::");
        assert_eq!(d["network"]["type"], "ipv6");
    }
}
