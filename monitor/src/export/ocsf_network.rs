//! The optional OCSF 1.8.0 Network Activity event (category 4, class 4001, activity 6
//! "Traffic") sent after a Detection Finding as its evidence: the traffic the alert is about
//! (the window's bytes and packets out, host to peer), with the process as actor. It claims
//! the `host` profile, which is what allows `actor` and `device`. Its `metadata.uid` is
//! derived from the finding's event id (stable across retries) and `correlation_uid` is the
//! alert id, so a SIEM can join the two.

use serde_json::{Value, json};
use uuid::Uuid;

use super::{
    Reporter, event_id,
    ocsf::{VERSION, process},
};
use crate::detect::alerts::{AlertEvent, AlertEventKind};

const CLASS_UID: u32 = 4001;
const TRAFFIC: u32 = 6;

/// The Network Activity for `e`: only for alerts about one peer, when they open or grow.
pub fn network_activity(e: &AlertEvent, reporter: &Reporter) -> Option<Value> {
    let a = &e.alert;
    let peer = a.peer.as_ref()?;
    if !matches!(e.event, AlertEventKind::Opened | AlertEventKind::Updated) {
        return None;
    }
    let mut dst = json!({ "ip": peer.addr.to_string(), "port": peer.port });
    if let Some(name) = &peer.name {
        dst["hostname"] = json!(name);
    }
    let window_start = a.last_seen.as_millisecond() - i64::from(a.window.secs()) * 1000;
    let mut event = json!({
        "activity_id": TRAFFIC,
        "activity_name": "Traffic",
        "category_uid": 4,
        "category_name": "Network Activity",
        "class_uid": CLASS_UID,
        "class_name": "Network Activity",
        "type_uid": CLASS_UID * 100 + TRAFFIC,
        "type_name": "Network Activity: Traffic",
        // A traffic record: the finding carries the alert's severity.
        "severity_id": 1,
        "severity": "Informational",
        "time": e.at.as_millisecond(),
        "start_time": window_start.max(a.first_seen.as_millisecond()),
        "end_time": a.last_seen.as_millisecond(),
        "message": format!(
            "{} sent {} bytes to {} in {} (evidence of alert {})",
            a.service, a.bytes, peer.addr, a.window, a.id
        ),
        "metadata": {
            "version": VERSION,
            "uid": Uuid::new_v5(&event_id(e), b"ocsf-network-activity").to_string(),
            "correlation_uid": a.id.to_string(),
            "event_code": "egress-traffic",
            "log_name": "alerts",
            "profiles": ["host"],
            "product": {
                "name": reporter.product,
                "vendor_name": reporter.product,
                "version": reporter.version,
            },
            "labels": [format!("service:{}", a.service), format!("rule:{}", a.rule.id())],
        },
        "device": { "hostname": reporter.hostname, "type_id": 1, "type": "Server" },
        "src_endpoint": { "hostname": reporter.hostname },
        "dst_endpoint": dst,
        "connection_info": { "direction_id": 2, "direction": "Outbound" },
        "traffic": { "bytes_out": a.bytes, "packets_out": a.packets },
        "is_src_dst_assignment_known": true,
    });
    if let Some(process) = process(e) {
        event["actor"] = json!({ "process": process });
    }
    Some(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        detect::alerts::AlertEventKind,
        export::fixtures::{self, reporter},
        schema_check::validate_ocsf,
    };

    #[test]
    fn the_traffic_of_an_alert_validates_and_points_at_its_finding() {
        let e = fixtures::opened();
        let n = network_activity(&e, &reporter()).unwrap();
        validate_ocsf(&n).unwrap_or_else(|errors| panic!("{errors:#?}\n{n:#}"));
        assert_eq!(n["type_uid"], 400_106);
        assert_eq!(n["traffic"]["bytes_out"], e.alert.bytes);
        assert_eq!(n["dst_endpoint"]["ip"], "2001:db8::8a");
        assert_eq!(n["actor"]["process"]["pid"], 1202);
        assert_eq!(n["metadata"]["correlation_uid"], e.alert.id.to_string());
        assert_ne!(
            n["metadata"]["uid"],
            crate::export::ocsf::detection_finding(&e, &reporter())["metadata"]["uid"],
            "its own id"
        );
        assert_eq!(
            n["metadata"]["uid"],
            network_activity(&e, &reporter()).unwrap()["metadata"]["uid"],
            "stable"
        );
    }

    #[test]
    fn only_for_a_peer_opening_or_growing() {
        let mut e = fixtures::opened();
        e.event = AlertEventKind::Resolved;
        assert!(network_activity(&e, &reporter()).is_none());
        let mut e = fixtures::opened();
        e.alert.peer = None;
        assert!(network_activity(&e, &reporter()).is_none());
    }

    #[test]
    fn without_the_host_profile_actor_is_refused() {
        // The validator checks profiles: the claim is what makes `actor` legal.
        let mut n = network_activity(&fixtures::opened(), &reporter()).unwrap();
        n["metadata"]["profiles"] = json!([]);
        let errors = validate_ocsf(&n).unwrap_err();
        assert!(errors.iter().any(|e| e.starts_with("actor")), "{errors:?}");
    }
}
