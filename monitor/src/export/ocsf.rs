//! OCSF 1.8.0 Detection Finding (category 2, class 2004) for an alert event: opened is
//! activity 1 (Create), updated and acknowledged 2 (Update), resolved and suppressed 3
//! (Close). The process and the endpoints go in `evidences`, the observed volume against the
//! threshold in `anomaly_analyses` (Detection Finding has no top-level endpoints). No profile
//! is claimed, so no profile-only attribute (`device`, `actor`) is used.

use serde_json::{Value, json};

use super::{Reporter, base_name, event_id};
use crate::detect::{
    alerts::{AlertEvent, AlertEventKind, AlertStatus, ThresholdKind},
    rules::{RuleId, Severity},
};

pub const VERSION: &str = "1.8.0";
const CLASS_UID: u32 = 2004;
const CATEGORY_UID: u32 = 2;

fn activity(kind: AlertEventKind) -> (u32, &'static str) {
    match kind {
        AlertEventKind::Opened => (1, "Create"),
        AlertEventKind::Updated | AlertEventKind::Acknowledged => (2, "Update"),
        AlertEventKind::Resolved | AlertEventKind::Suppressed => (3, "Close"),
    }
}

const fn severity(s: Severity) -> (u32, &'static str) {
    match s {
        Severity::Low => (2, "Low"),
        Severity::Medium => (3, "Medium"),
        Severity::High => (4, "High"),
        Severity::Critical => (5, "Critical"),
    }
}

/// Finding status: new until acknowledged (in progress), suppressed, or resolved.
fn status(e: &AlertEvent) -> (u32, &'static str) {
    match (e.event, e.alert.status, e.alert.acknowledged) {
        (AlertEventKind::Suppressed, _, _) => (3, "Suppressed"),
        (_, AlertStatus::Resolved, _) => (4, "Resolved"),
        (_, AlertStatus::Open, true) => (2, "In Progress"),
        (_, AlertStatus::Open, false) => (1, "New"),
    }
}

/// Threshold rules are "Rule" analytics; rules against a learned distribution "Statistical".
const fn analytic_type(rule: RuleId) -> (u32, &'static str) {
    match rule {
        RuleId::PeerOutlier
        | RuleId::ServiceBaseline
        | RuleId::PrefixOutlier
        | RuleId::PeerRise
        | RuleId::NewClientVolume => (3, "Statistical"),
        RuleId::UnknownVolume | RuleId::NewDestinations | RuleId::SlowDrip => (1, "Rule"),
    }
}

/// The Detection Finding for `e`.
pub fn detection_finding(e: &AlertEvent, reporter: &Reporter) -> Value {
    let a = &e.alert;
    let (activity_id, activity_name) = activity(e.event);
    let (severity_id, severity_name) = severity(a.severity);
    let (status_id, status_name) = status(e);
    let (analytic_id, analytic_name) = analytic_type(a.rule);
    let mut finding = json!({
        "activity_id": activity_id,
        "activity_name": activity_name,
        "category_uid": CATEGORY_UID,
        "category_name": "Findings",
        "class_uid": CLASS_UID,
        "class_name": "Detection Finding",
        "type_uid": CLASS_UID * 100 + activity_id,
        "type_name": format!("Detection Finding: {activity_name}"),
        "severity_id": severity_id,
        "severity": severity_name,
        "status_id": status_id,
        "status": status_name,
        "time": e.at.as_millisecond(),
        "start_time": a.first_seen.as_millisecond(),
        "end_time": a.last_seen.as_millisecond(),
        "message": format!("{}: {}", a.title, crate::alert_output::summary(a)),
        "metadata": {
            "version": VERSION,
            "uid": event_id(e).to_string(),
            "event_code": a.rule.id(),
            "log_name": "alerts",
            "product": {
                "name": reporter.product,
                "vendor_name": reporter.product,
                "version": reporter.version,
            },
            "labels": [format!("service:{}", a.service)],
        },
        "finding_info": {
            "uid": a.id.to_string(),
            "title": a.title,
            "desc": format!("Rule {} ({}) on service {}", a.rule.number(), a.rule.id(), a.service),
            "types": ["egress", a.rule.id()],
            "created_time": a.opened_at.as_millisecond(),
            "modified_time": a.updated_at.as_millisecond(),
            "first_seen_time": a.first_seen.as_millisecond(),
            "last_seen_time": a.last_seen.as_millisecond(),
            "analytic": {
                "uid": a.rule.id(),
                "name": a.rule.title(),
                "type_id": analytic_id,
                "type": analytic_name,
            },
            "attacks": [{
                "tactic": { "uid": a.attack.tactic_id, "name": a.attack.tactic },
                "technique": { "uid": a.attack.technique_id, "name": a.attack.technique },
            }],
        },
        "evidences": [evidence(e, reporter)],
        "anomaly_analyses": [anomaly(e)],
    });
    if let Some(obj) = finding.as_object_mut() {
        obj.retain(|_, v| !v.is_null());
    }
    finding
}

/// The process, the host as source and the peer as destination, outbound.
fn evidence(e: &AlertEvent, reporter: &Reporter) -> Value {
    let a = &e.alert;
    let mut ev = serde_json::Map::new();
    ev.insert(
        "src_endpoint".into(),
        json!({ "hostname": reporter.hostname }),
    );
    ev.insert(
        "connection_info".into(),
        json!({ "direction_id": 2, "direction": "Outbound" }),
    );
    if let Some(p) = &a.peer {
        let mut dst = json!({ "ip": p.addr.to_string(), "port": p.port });
        if let Some(name) = &p.name {
            dst["hostname"] = json!(name);
        }
        if p.prefix_len.is_some() {
            // A prefix group: the network's first address, and the network.
            dst["subnet_uid"] = json!(p.addr_text());
        }
        ev.insert("dst_endpoint".into(), dst);
    }
    if let Some(process) = process(e) {
        ev.insert("process".into(), process);
    }
    Value::Object(ev)
}

/// The sending process (pid, name, command line, executable, user), if known.
pub(super) fn process(e: &AlertEvent) -> Option<Value> {
    let o = e.alert.process.as_ref()?;
    if o.pid.is_none() && o.uid.is_none() {
        return None;
    }
    let mut process = serde_json::Map::new();
    if let Some(pid) = o.pid {
        process.insert("pid".into(), json!(pid));
    }
    if let Some(comm) = &o.comm {
        process.insert("name".into(), json!(comm));
    }
    if !o.cmdline.is_empty() {
        process.insert("cmd_line".into(), json!(o.cmdline.join(" ")));
    }
    if let Some(exe) = &o.exe {
        // type_id 1: regular file.
        process.insert(
            "file".into(),
            json!({ "name": base_name(exe), "path": exe, "type_id": 1, "type": "Regular File" }),
        );
    }
    if o.uid.is_some() || o.user.is_some() {
        let mut user = serde_json::Map::new();
        if let Some(uid) = o.uid {
            user.insert("uid".into(), json!(uid.to_string()));
        }
        if let Some(name) = &o.user {
            user.insert("name".into(), json!(name));
        }
        process.insert("user".into(), Value::Object(user));
    }
    Some(Value::Object(process))
}

/// Observed volume in the rule window against the threshold (or learned baseline).
fn anomaly(e: &AlertEvent) -> Value {
    let a = &e.alert;
    let (parameter, observed, threshold) = match a.threshold.kind {
        ThresholdKind::Count => (
            format!("new_destinations_in_{}", a.window),
            a.new_destinations.unwrap_or_default(),
            a.threshold.bytes,
        ),
        _ => (
            format!("bytes_sent_in_{}", a.window),
            a.bytes,
            a.threshold.bytes,
        ),
    };
    let window_ms = i64::from(a.window.secs()) * 1000;
    let thr = &a.threshold;
    let against = thr.reference.map_or(
        "learned baseline",
        crate::detect::alerts::Reference::describe,
    );
    let pattern = match (thr.quantile, thr.factor, thr.baseline_bytes) {
        (Some(q), Some(f), Some(base)) => format!(
            "{against}: max(floor, p{} of {} values = {base} bytes x {f}{})",
            q * 100.0,
            thr.samples.unwrap_or_default(),
            busier(thr.activity),
        ),
        (None, Some(f), Some(base)) => format!(
            "{against}: max({base} bytes x {f}{}, population bar)",
            busier(thr.activity)
        ),
        _ => against.to_owned(),
    };
    let target = match &a.peer {
        Some(p) if p.prefix_len.is_some() => json!({
            "name": format!("{} -> {}", a.service, p.addr_text()),
            "type": "service_prefix",
        }),
        Some(p) => {
            json!({ "name": format!("{} -> {}", a.service, p.addr), "type": "service_peer" })
        }
        None => json!({ "name": a.service, "type": "service" }),
    };
    json!({
        "analysis_targets": [target],
        "anomalies": [{
            "observation_parameter": parameter,
            "observation_type": "volume",
            "observations": [{
                "value": observed.to_string(),
                "count": a.packets,
                "timespan": { "duration": window_ms },
            }],
        }],
        "baselines": [{
            "observation_parameter": parameter,
            "observation_type": "threshold",
            "observed_pattern": pattern,
            "observations": [{ "value": threshold.to_string() }],
        }],
    })
}

/// " x activity 1.40" when the service was busier than usual.
fn busier(a: Option<f64>) -> String {
    a.filter(|a| *a > 1.0)
        .map(|a| format!(" x activity {a:.2}"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::fixtures::{self, reporter};

    #[test]
    fn an_opened_alert_is_a_create_with_its_evidence() {
        let e = fixtures::opened();
        let f = detection_finding(&e, &reporter());
        assert_eq!(f["class_uid"], 2004);
        assert_eq!(f["type_uid"], 200_401);
        assert_eq!(f["severity_id"], 4);
        assert_eq!(f["status_id"], 1);
        assert_eq!(f["time"], e.at.as_millisecond());
        assert_eq!(f["metadata"]["version"], "1.8.0");
        assert_eq!(f["finding_info"]["uid"], e.alert.id.to_string());
        assert_eq!(f["finding_info"]["analytic"]["type_id"], 3);
        assert_eq!(f["finding_info"]["attacks"][0]["tactic"]["uid"], "TA0010");
        let ev = &f["evidences"][0];
        assert_eq!(ev["dst_endpoint"]["ip"], "2001:db8::8a");
        assert_eq!(ev["dst_endpoint"]["hostname"], "x.example.org");
        assert_eq!(ev["connection_info"]["direction_id"], 2);
        assert_eq!(ev["process"]["pid"], 1202);
        assert_eq!(ev["process"]["file"]["path"], "/usr/sbin/nginx");
        assert_eq!(ev["process"]["user"]["name"], "www-data");
        let an = &f["anomaly_analyses"][0];
        assert_eq!(an["anomalies"][0]["observations"][0]["value"], "100000000");
        assert_eq!(an["baselines"][0]["observations"][0]["value"], "1000");
    }

    #[test]
    fn lifecycle_maps_to_activities_and_statuses() {
        let mut e = fixtures::opened();
        let cases = [
            (
                AlertEventKind::Updated,
                AlertStatus::Open,
                false,
                200_402,
                1,
            ),
            (
                AlertEventKind::Acknowledged,
                AlertStatus::Open,
                true,
                200_402,
                2,
            ),
            (
                AlertEventKind::Resolved,
                AlertStatus::Resolved,
                false,
                200_403,
                4,
            ),
            (
                AlertEventKind::Suppressed,
                AlertStatus::Resolved,
                false,
                200_403,
                3,
            ),
        ];
        for (kind, st, ack, type_uid, status_id) in cases {
            e.event = kind;
            e.alert.status = st;
            e.alert.acknowledged = ack;
            let f = detection_finding(&e, &reporter());
            assert_eq!(
                (f["type_uid"].as_u64(), f["status_id"].as_u64()),
                (Some(type_uid), Some(status_id)),
                "{kind:?}"
            );
        }
    }
}
