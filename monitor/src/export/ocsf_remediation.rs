//! OCSF 1.8.0 Network Remediation Activity (category 7 Remediation, class 7004) for a
//! containment event. The class follows D3FEND: a throttle or a block is the tactic Isolate
//! (activity 1) by Outbound Traffic Filtering (D3-OTF; a block also refuses the peer's new
//! connections, Inbound Traffic Filtering, D3-ITF), and its end the tactic Restore
//! (activity 3) by Restore Network Access (D3-RNA). A refused request reports the Isolate it
//! asked for, with status Failure.
//!
//! The class has no endpoints (its `connection_info` carries no address), so the target goes
//! in `observables` (IP Address or Subnet) pointing at `unmapped.target`, and the whole
//! containment in `unmapped`. `command_uid` is the containment id, the same across its
//! events; `metadata.correlation_uid` the alert it answers (the Detection Finding's
//! `finding_info.uid`), absent for an operator's. It claims the `host` profile for `device`
//! (the host that enforces) and `actor` (the operator, or the agent's policy).
//!
//! Dry run is status 99 "Dry Run" (the schema's Other, whose caption the source defines) with
//! `status_code` `dry_run` and a `status_detail` saying nothing was applied: never Success.

use serde_json::{Map, Value, json};

use super::{
    Reporter,
    containment::{Level, containment_event_id, operator, summary, target_text},
    ocsf::VERSION,
};
use crate::contain::record::{Action, ContainmentEvent, ContainmentEventKind, Enforcement};

const CLASS_UID: u32 = 7004;
const CATEGORY_UID: u32 = 7;
/// `activity_id` 1: "Creates logical or physical barriers in a system which reduces
/// opportunities for adversaries to create further accesses."
const ISOLATE: (u32, &str) = (1, "Isolate");
/// `activity_id` 3: "Returns the system to a better state."
const RESTORE: (u32, &str) = (3, "Restore");

fn activity(kind: ContainmentEventKind) -> (u32, &'static str) {
    match kind {
        ContainmentEventKind::Started
        | ContainmentEventKind::Renewed
        | ContainmentEventKind::Refused => ISOLATE,
        ContainmentEventKind::Lifted | ContainmentEventKind::Expired => RESTORE,
    }
}

const fn severity(level: Level) -> (u32, &'static str) {
    match level {
        Level::Info => (1, "Informational"),
        Level::Notice => (2, "Low"),
        Level::Warning => (3, "Medium"),
    }
}

/// `status_id`, `status`, and the detail: refused is 2 Failure; dry run 99 with the source's
/// caption "Dry Run" (nothing was applied, so not Success); enforced 1 Success.
fn status(e: &ContainmentEvent) -> (u32, &'static str, String) {
    let c = &e.containment;
    let action = c.action.describe();
    let dry = c.enforcement == Enforcement::DryRun;
    let why = c.end_reason.as_deref().unwrap_or(e.event.name());
    match (e.event, dry) {
        (ContainmentEventKind::Refused, _) => (
            2,
            "Failure",
            format!(
                "refused{}: {}: {}",
                if dry { " (dry run)" } else { "" },
                c.verb(),
                c.reason
            ),
        ),
        (ContainmentEventKind::Started | ContainmentEventKind::Renewed, true) => (
            99,
            "Dry Run",
            format!("dry run: {}, nothing applied in the kernel", c.verb()),
        ),
        (ContainmentEventKind::Lifted | ContainmentEventKind::Expired, true) => (
            99,
            "Dry Run",
            format!("dry run: no longer would {action} ({why}), nothing was applied in the kernel"),
        ),
        (ContainmentEventKind::Started, false) => {
            (1, "Success", format!("{action} applied in the kernel"))
        }
        (ContainmentEventKind::Renewed, false) => (
            1,
            "Success",
            format!("{action} renewed until {}", c.expires_at),
        ),
        (ContainmentEventKind::Lifted | ContainmentEventKind::Expired, false) => (
            1,
            "Success",
            format!("{action} removed from the kernel ({why})"),
        ),
    }
}

/// D3FEND countermeasures: the filtering while contained, the restoration when it ends.
fn countermeasures(e: &ContainmentEvent) -> Value {
    let technique = |uid: &str, name: &str, tactic: &str, url: &str| {
        json!({
            "d3f_tactic": {
                "name": tactic,
                "src_url": format!("https://d3fend.mitre.org/tactic/d3f:{tactic}/"),
            },
            "d3f_technique": {
                "uid": uid,
                "name": name,
                "src_url": format!("https://d3fend.mitre.org/technique/d3f:{url}/"),
            },
        })
    };
    if activity(e.event) == RESTORE {
        return json!([technique(
            "D3-RNA",
            "Restore Network Access",
            "Restore",
            "RestoreNetworkAccess"
        )]);
    }
    let mut out = vec![technique(
        "D3-OTF",
        "Outbound Traffic Filtering",
        "Isolate",
        "OutboundTrafficFiltering",
    )];
    if e.containment.action == Action::Block {
        out.push(technique(
            "D3-ITF",
            "Inbound Traffic Filtering",
            "Isolate",
            "InboundTrafficFiltering",
        ));
    }
    Value::Array(out)
}

/// The containment as the agent records it, with its target and enforcement spelled out.
fn unmapped(e: &ContainmentEvent) -> Value {
    let c = &e.containment;
    let mut u = Map::new();
    u.insert("event".into(), json!(e.event.name()));
    u.insert("target".into(), json!(target_text(&c.target)));
    u.insert("service".into(), json!(c.service));
    u.insert("action".into(), json!(c.action.name()));
    if let Action::Throttle { bytes_per_sec } = c.action {
        u.insert("bytes_per_sec".into(), json!(bytes_per_sec));
    }
    u.insert("enforcement".into(), json!(c.enforcement.name()));
    u.insert(
        "dry_run".into(),
        json!(c.enforcement == Enforcement::DryRun),
    );
    u.insert("state".into(), json!(c.state.name()));
    u.insert("decided_by".into(), json!(c.decided_by.name()));
    u.insert("reason".into(), json!(c.reason));
    if let Some(rule) = c.rule {
        u.insert("rule".into(), json!(rule.id()));
    }
    if let Some(id) = c.alert_id {
        u.insert("alert_id".into(), json!(id.to_string()));
    }
    u.insert("expires_at".into(), json!(c.expires_at.as_millisecond()));
    u.insert("renewals".into(), json!(c.renewals));
    if let Some(why) = &c.end_reason {
        u.insert("end_reason".into(), json!(why));
    }
    if let Some(by) = &c.ended_by {
        u.insert("ended_by".into(), json!(by.name()));
    }
    u.insert("dropped_bytes".into(), json!(c.dropped_bytes));
    u.insert("dropped_packets".into(), json!(c.dropped_packets));
    Value::Object(u)
}

/// The Network Remediation Activity for `e`.
pub fn network_remediation(e: &ContainmentEvent, reporter: &Reporter) -> Value {
    let c = &e.containment;
    let (activity_id, activity_name) = activity(e.event);
    let (severity_id, severity_name) = severity(Level::of(e));
    let (status_id, status_name, status_detail) = status(e);
    let (ip_version, ip_version_name) = if c.target.addr().is_ipv4() {
        (4, "Internet Protocol version 4 (IPv4)")
    } else {
        (6, "Internet Protocol version 6 (IPv6)")
    };
    let (observable_type, observable_name) = if c.target.prefix_len() == c.target.max_prefix_len() {
        (2, "IP Address")
    } else {
        (12, "Subnet")
    };
    let mut observables = vec![json!({
        "name": "unmapped.target",
        "type_id": observable_type,
        "type": observable_name,
        "value": target_text(&c.target),
    })];
    let actor = match operator(c, e) {
        Some(user) => {
            observables.push(json!({
                "name": "actor.user.name",
                "type_id": 4,
                "type": "User Name",
                "value": user,
            }));
            json!({ "user": { "name": user, "type_id": 1, "type": "User" } })
        }
        None => json!({ "app_name": reporter.product }),
    };
    let mut metadata = json!({
        "version": VERSION,
        "uid": containment_event_id(e).to_string(),
        "event_code": super::containment::action_name(e),
        "log_name": "containments",
        "profiles": ["host"],
        "product": {
            "name": reporter.product,
            "vendor_name": reporter.product,
            "version": reporter.version,
        },
        "labels": [
            format!("service:{}", c.service),
            format!("action:{}", c.action.name()),
            format!("enforcement:{}", c.enforcement.name()),
        ],
    });
    if let Some(id) = c.alert_id {
        metadata["correlation_uid"] = json!(id.to_string());
    }
    json!({
        "activity_id": activity_id,
        "activity_name": activity_name,
        "category_uid": CATEGORY_UID,
        "category_name": "Remediation",
        "class_uid": CLASS_UID,
        "class_name": "Network Remediation Activity",
        "type_uid": CLASS_UID * 100 + activity_id,
        "type_name": format!("Network Remediation Activity: {activity_name}"),
        "severity_id": severity_id,
        "severity": severity_name,
        "status_id": status_id,
        "status": status_name,
        "status_code": c.enforcement.name(),
        "status_detail": status_detail,
        "time": e.at.as_millisecond(),
        "start_time": c.started_at.as_millisecond(),
        "end_time": c.ended_at.unwrap_or(c.expires_at).as_millisecond(),
        "message": summary(e),
        "command_uid": c.id.to_string(),
        "connection_info": {
            "direction_id": 2,
            "direction": "Outbound",
            "protocol_ver_id": ip_version,
            "protocol_ver": ip_version_name,
        },
        "countermeasures": countermeasures(e),
        "metadata": metadata,
        "device": { "hostname": reporter.hostname, "type_id": 1, "type": "Server" },
        "actor": actor,
        "observables": observables,
        "unmapped": unmapped(e),
    })
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
        schema_check::validate_ocsf,
    };

    #[test]
    fn every_containment_event_validates() {
        let all = every_combination();
        assert_eq!(all.len(), 5 * 2 * 2 * 2 * 3);
        for e in all {
            let doc = network_remediation(&e, &reporter());
            if let Err(errors) = validate_ocsf(&doc) {
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
    fn the_validator_sees_a_broken_remediation() {
        let mut doc = network_remediation(&started(), &reporter());
        doc["connection_info"] = json!({ "direction": "Outbound" });
        assert!(validate_ocsf(&doc).is_err(), "direction_id is required");
        let mut doc = network_remediation(&started(), &reporter());
        doc["metadata"]["profiles"] = json!([]);
        assert!(
            validate_ocsf(&doc).is_err(),
            "device needs the host profile"
        );
    }

    #[test]
    fn a_dry_run_start_is_an_isolate_that_is_not_a_success() {
        let e = started();
        let d = network_remediation(&e, &reporter());
        assert_eq!(d["class_uid"], 7004);
        assert_eq!(d["category_uid"], 7);
        assert_eq!(d["type_uid"], 700_401);
        assert_eq!(d["activity_name"], "Isolate");
        assert_eq!(
            (&d["status_id"], &d["status"], &d["status_code"]),
            (&json!(99), &json!("Dry Run"), &json!("dry_run"))
        );
        assert_eq!(
            d["status_detail"],
            "dry run: would throttle 256.0 KiB/s, nothing applied in the kernel"
        );
        assert!(
            d["message"]
                .as_str()
                .unwrap()
                .starts_with("containment started (dry run): would throttle")
        );
        assert_eq!(d["unmapped"]["dry_run"], true);
        assert_eq!(d["severity_id"], 2);
        assert_eq!(d["command_uid"], e.containment.id.to_string());
        assert_eq!(d["metadata"]["correlation_uid"], alert_id().to_string());
        assert_eq!(
            d["metadata"]["uid"],
            containment_event_id(&e).to_string(),
            "the event id every format shares"
        );
        assert_eq!(
            d["countermeasures"][0]["d3f_technique"]["uid"], "D3-OTF",
            "{d:#}"
        );
        assert_eq!(d["countermeasures"].as_array().unwrap().len(), 1);
        assert_eq!(d["observables"][0]["value"], "198.51.100.7");
        assert_eq!(d["observables"][0]["type_id"], 2);
        assert_eq!(d["connection_info"]["protocol_ver_id"], 4);
        assert_eq!(d["actor"]["app_name"], "egress-monitor");
    }

    #[test]
    fn steps_map_to_activities_and_statuses() {
        let enforced = |kind| {
            let mut e = step(started(), kind);
            e.containment.enforcement = Enforcement::Enforced;
            e
        };
        let cases = [
            (ContainmentEventKind::Started, 700_401, 1, 3, "D3-OTF"),
            (ContainmentEventKind::Renewed, 700_401, 1, 3, "D3-OTF"),
            (ContainmentEventKind::Lifted, 700_403, 1, 1, "D3-RNA"),
            (ContainmentEventKind::Expired, 700_403, 1, 1, "D3-RNA"),
            (ContainmentEventKind::Refused, 700_401, 2, 2, "D3-OTF"),
        ];
        for (kind, type_uid, status_id, severity_id, technique) in cases {
            let d = network_remediation(&enforced(kind), &reporter());
            assert_eq!(
                (
                    d["type_uid"].as_u64(),
                    d["status_id"].as_u64(),
                    d["severity_id"].as_u64(),
                    d["countermeasures"][0]["d3f_technique"]["uid"].as_str(),
                ),
                (
                    Some(type_uid),
                    Some(status_id),
                    Some(severity_id),
                    Some(technique)
                ),
                "{kind:?}"
            );
        }
        let d = network_remediation(&enforced(ContainmentEventKind::Lifted), &reporter());
        assert_eq!(
            d["status_detail"],
            "throttle 256.0 KiB/s removed from the kernel (its alert resolved)"
        );
        let mut dry_lift = step(started(), ContainmentEventKind::Expired);
        dry_lift.containment.action = Action::Block;
        let d = network_remediation(&dry_lift, &reporter());
        assert_eq!(
            (&d["status_id"], &d["status"]),
            (&json!(99), &json!("Dry Run"))
        );
        assert_eq!(
            d["status_detail"],
            "dry run: no longer would block (ttl), nothing was applied in the kernel"
        );
    }

    #[test]
    fn a_block_filters_both_ways_and_a_network_is_a_subnet() {
        let mut e = started();
        e.containment.action = Action::Block;
        e.containment.target = "2001:db8:1::/48".parse().unwrap();
        let d = network_remediation(&e, &reporter());
        let techniques: Vec<&str> = d["countermeasures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["d3f_technique"]["uid"].as_str().unwrap())
            .collect();
        assert_eq!(techniques, ["D3-OTF", "D3-ITF"]);
        assert_eq!(d["observables"][0]["type_id"], 12);
        assert_eq!(d["observables"][0]["value"], "2001:db8:1::/48");
        assert_eq!(d["connection_info"]["protocol_ver_id"], 6);
        assert!(d["unmapped"].get("bytes_per_sec").is_none());
    }

    #[test]
    fn an_operators_containment_has_an_actor_and_no_correlation() {
        let mut e = started();
        e.containment.alert_id = None;
        e.containment.rule = None;
        e.containment.decided_by = Decider::Operator {
            user: "alice".into(),
        };
        let d = network_remediation(&e, &reporter());
        validate_ocsf(&d).unwrap_or_else(|errors| panic!("{errors:#?}\n{d:#}"));
        assert!(d["metadata"].get("correlation_uid").is_none(), "{d:#}");
        assert!(d["unmapped"].get("alert_id").is_none());
        assert_eq!(d["actor"]["user"]["name"], "alice");
        assert_eq!(d["observables"][1]["value"], "alice");
        // An operator lifting the policy's containment is the actor of the lift.
        let mut lift = step(started(), ContainmentEventKind::Lifted);
        lift.containment.ended_by = Some(Decider::Operator { user: "bob".into() });
        let d = network_remediation(&lift, &reporter());
        assert_eq!(d["actor"]["user"]["name"], "bob");
        assert_eq!(d["metadata"]["correlation_uid"], alert_id().to_string());
    }
}
