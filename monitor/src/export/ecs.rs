//! ECS 9.4.0 alert document for an alert event. The host is the source (`source.bytes` is
//! what it sent in the rule window), the peer the destination; `network.direction` is
//! `egress`. Values ECS has no field for (alert id, peer class, threshold, what it was judged
//! against, a prefix group's network) go in `labels`,
//! ECS's place for keyword extras, so the document uses ECS fields only.

use serde_json::{Map, Value, json};

use super::{Reporter, base_name, event_id, severity_score};
use crate::{
    detect::alerts::{AlertEvent, AlertEventKind, AlertStatus},
    flow::Owner,
};

pub const VERSION: &str = "9.4.0";

/// The ECS alert document for `e`.
pub fn alert(e: &AlertEvent, reporter: &Reporter) -> Value {
    let a = &e.alert;
    let duration_ns =
        i64::try_from((a.last_seen.as_nanosecond() - a.first_seen.as_nanosecond()).max(0))
            .unwrap_or(i64::MAX);
    let mut labels = Map::new();
    labels.insert("alert_id".into(), json!(a.id.to_string()));
    labels.insert("alert_status".into(), json!(status(e)));
    labels.insert("window".into(), json!(a.window.name()));
    labels.insert(
        "threshold_bytes".into(),
        json!(a.threshold.bytes.to_string()),
    );
    labels.insert("total_bytes".into(), json!(a.total_bytes.to_string()));
    if let Some(r) = a.threshold.reference {
        labels.insert("reference".into(), json!(r.name()));
    }
    if let Some(p) = &a.peer {
        labels.insert("peer_class".into(), json!(p.class.name()));
        if p.prefix_len.is_some() {
            // destination.ip is the network's address; the prefix says it is a group.
            labels.insert("destination_prefix".into(), json!(p.addr_text()));
            labels.insert(
                "prefix_members".into(),
                json!(p.members.unwrap_or_default().to_string()),
            );
        }
    }
    let mut doc = json!({
        "@timestamp": e.at.to_string(),
        "ecs": { "version": VERSION },
        "message": format!("{}: {}", a.title, crate::alert_output::summary(a)),
        "event": {
            "kind": "alert",
            "category": ["network", "intrusion_detection"],
            "type": ["info"],
            "action": format!("egress-alert-{}", e.event.name()),
            "id": event_id(e).to_string(),
            "severity": severity_score(a.severity),
            "risk_score": f64::from(severity_score(a.severity)),
            "start": a.first_seen.to_string(),
            "end": a.last_seen.to_string(),
            "duration": duration_ns,
            "created": a.opened_at.to_string(),
            "dataset": "egress_monitor.alert",
            "module": "egress_monitor",
            "provider": reporter.product,
            "reason": crate::alert_output::summary(a),
        },
        "rule": {
            "id": a.rule.id(),
            "name": a.title,
            "category": a.attack.tactic,
            "ruleset": reporter.product,
            "description": format!("Rule {} of {}", a.rule.number(), reporter.product),
        },
        "threat": {
            "framework": "MITRE ATT&CK",
            "tactic": {
                "id": [a.attack.tactic_id],
                "name": [a.attack.tactic],
                "reference": [format!("https://attack.mitre.org/tactics/{}/", a.attack.tactic_id)],
            },
            "technique": {
                "id": [a.attack.technique_id],
                "name": [a.attack.technique],
                "reference": [format!("https://attack.mitre.org/techniques/{}/", a.attack.technique_id)],
            },
        },
        "network": { "direction": "egress" },
        "source": { "bytes": a.bytes, "packets": a.packets },
        "host": { "hostname": reporter.hostname, "name": reporter.hostname },
        "observer": {
            "hostname": reporter.hostname,
            "product": reporter.product,
            "vendor": reporter.product,
            "version": reporter.version,
            "type": "host-agent",
        },
        "service": { "name": a.service },
        "labels": labels,
    });
    if let Some(p) = &a.peer {
        let mut dst = json!({ "ip": p.addr.to_string(), "port": p.port });
        if let Some(name) = &p.name {
            dst["domain"] = json!(name);
        }
        doc["destination"] = dst;
    }
    if let Some(o) = &a.process {
        doc["process"] = process(o);
        if let Some(id) = &o.container_id {
            doc["container"] = json!({ "id": id });
        }
    }
    doc
}

/// `process.*` of the owner.
fn process(o: &Owner) -> Value {
    let mut process = Map::new();
    if let Some(pid) = o.pid {
        process.insert("pid".into(), json!(pid));
    }
    if let Some(comm) = &o.comm {
        process.insert("name".into(), json!(comm));
    }
    if let Some(exe) = &o.exe {
        process.insert("executable".into(), json!(exe));
        process
            .entry("name")
            .or_insert_with(|| json!(base_name(exe)));
    }
    if !o.cmdline.is_empty() {
        process.insert("args".into(), json!(o.cmdline));
        process.insert("command_line".into(), json!(o.cmdline.join(" ")));
    }
    let mut user = Map::new();
    if let Some(uid) = o.uid {
        user.insert("id".into(), json!(uid.to_string()));
    }
    if let Some(name) = &o.user {
        user.insert("name".into(), json!(name));
    }
    if !user.is_empty() {
        process.insert("user".into(), Value::Object(user));
    }
    Value::Object(process)
}

fn status(e: &AlertEvent) -> &'static str {
    match (e.event, e.alert.status) {
        (AlertEventKind::Suppressed, _) => "suppressed",
        (_, AlertStatus::Resolved) => "resolved",
        (_, AlertStatus::Open) if e.alert.acknowledged => "acknowledged",
        (_, AlertStatus::Open) => "open",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::fixtures;

    #[test]
    fn the_alert_is_an_ecs_alert_with_egress_volume() {
        let e = fixtures::opened();
        let d = alert(&e, &fixtures::reporter());
        assert_eq!(d["ecs"]["version"], "9.4.0");
        assert_eq!(d["event"]["kind"], "alert");
        assert_eq!(
            d["event"]["category"],
            json!(["network", "intrusion_detection"])
        );
        assert_eq!(d["event"]["severity"], 73);
        assert_eq!(d["source"]["bytes"], 100_000_000);
        assert_eq!(d["destination"]["ip"], "2001:db8::8a");
        assert_eq!(d["network"]["direction"], "egress");
        assert_eq!(d["process"]["pid"], 1202);
        assert_eq!(d["process"]["user"]["name"], "www-data");
        assert_eq!(d["rule"]["id"], "peer_outlier");
        assert_eq!(d["threat"]["tactic"]["id"], json!(["TA0010"]));
        assert_eq!(d["labels"]["alert_id"], e.alert.id.to_string());
        let ns = d["event"]["duration"].as_i64().unwrap();
        assert_eq!(
            ns,
            (e.alert.last_seen.as_second() - e.alert.first_seen.as_second()) * 1_000_000_000
        );
    }
}
