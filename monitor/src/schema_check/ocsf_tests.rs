//! The OCSF validator on hand-written events: a valid one of each class we export passes, and
//! each kind of mistake is caught with a message that names the JSON path.

use serde_json::{Value, json};

use super::validate_ocsf;

/// A Detection Finding as the exporters are expected to produce one: an egress volume alert.
fn detection_finding() -> Value {
    json!({
        "activity_id": 1,
        "activity_name": "Create",
        "category_uid": 2,
        "category_name": "Findings",
        "class_uid": 2004,
        "class_name": "Detection Finding",
        "type_uid": 200_401,
        "type_name": "Detection Finding: Create",
        "severity_id": 4,
        "severity": "High",
        "status_id": 1,
        "status": "New",
        "time": 1_767_225_600_000_i64,
        "start_time": 1_767_222_000_000_i64,
        "end_time": 1_767_225_600_000_i64,
        "message": "curl sent 1.2 GB to 203.0.113.9 in 1h (baseline 40 MB)",
        "metadata": {
            "version": "1.8.0",
            "product": { "name": "egress-monitor", "vendor_name": "egress-monitor", "version": "0.1.0" },
            "uid": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
        },
        "finding_info": {
            "uid": "5f0c6a52-6d4b-4c1e-9a53-2f1d8b7e4a10",
            "title": "Egress volume above baseline",
            "analytic": { "type_id": 3, "type": "Statistical", "name": "volume-baseline", "uid": "volume" },
            "attacks": [{
                "tactic": { "uid": "TA0010", "name": "Exfiltration" },
                "technique": { "uid": "T1041", "name": "Exfiltration Over C2 Channel" },
            }],
            "types": ["egress"],
        },
        "evidences": [{
            "src_endpoint": { "ip": "10.0.0.5", "port": 43_512 },
            "dst_endpoint": { "ip": "203.0.113.9", "port": 443, "hostname": "upload.example.com" },
            "connection_info": { "direction_id": 2, "direction": "Outbound", "protocol_num": 6, "protocol_name": "tcp" },
            "process": {
                "pid": 4242,
                "name": "curl",
                "file": { "name": "curl", "type_id": 1, "path": "/usr/bin/curl" },
            },
        }],
        "anomaly_analyses": [{
            "analysis_targets": [{ "name": "curl -> 203.0.113.9", "type": "process-destination" }],
            "anomalies": [{
                "observation_parameter": "bytes_out",
                "observations": [{ "value": "1200000000" }],
            }],
            "baselines": [{
                "observation_parameter": "bytes_out",
                "observations": [{ "value": "40000000" }],
            }],
        }],
    })
}

/// Network Activity "Traffic" (activity 6) with the host profile, the process in `actor`.
fn network_activity() -> Value {
    json!({
        "activity_id": 6,
        "category_uid": 4,
        "class_uid": 4001,
        "type_uid": 400_106,
        "severity_id": 1,
        "time": 1_767_225_600_000_i64,
        "metadata": {
            "version": "1.8.0",
            "product": { "name": "egress-monitor" },
            "profiles": ["host"],
        },
        "src_endpoint": { "ip": "10.0.0.5", "port": 43_512 },
        "dst_endpoint": { "ip": "2001:db8::9", "port": 443 },
        "connection_info": { "direction_id": 2, "protocol_num": 6 },
        "traffic": { "bytes_out": 1_200_000_000_i64, "packets_out": 900_000 },
        "actor": { "process": { "pid": 4242, "name": "curl" } },
        "device": { "type_id": 1, "hostname": "web-1" },
    })
}

/// The errors for `event`, which must be invalid.
fn errors_of(event: &Value) -> Vec<String> {
    match validate_ocsf(event) {
        Ok(()) => panic!("accepted an invalid event: {event:#}"),
        Err(e) => e,
    }
}

/// Asserts that exactly one error was reported and that it starts with `prefix`.
fn assert_one_error(event: &Value, prefix: &str) {
    let errors = errors_of(event);
    assert!(
        errors.len() == 1 && errors[0].starts_with(prefix),
        "expected one error starting {prefix:?}, got {errors:#?}"
    );
}

/// Sets the value at a `/`-separated JSON pointer; `None` removes it.
fn with(mut event: Value, pointer: &str, value: Option<Value>) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer has a /");
    match (event.pointer_mut(parent).expect("parent exists"), value) {
        (Value::Object(map), Some(v)) => drop(map.insert(key.to_owned(), v)),
        (Value::Object(map), None) => drop(map.remove(key)),
        (Value::Array(list), Some(v)) => list[key.parse::<usize>().expect("index")] = v,
        (Value::Array(list), None) => drop(list.remove(key.parse::<usize>().expect("index"))),
        (other, _) => panic!("cannot set {key} in {other}"),
    }
    event
}

#[test]
fn a_complete_detection_finding_passes() {
    assert_eq!(validate_ocsf(&detection_finding()), Ok(()));
}

#[test]
fn a_network_activity_traffic_event_passes() {
    assert_eq!(validate_ocsf(&network_activity()), Ok(()));
}

#[test]
fn a_missing_required_attribute_is_named() {
    let e = with(detection_finding(), "/finding_info/uid", None);
    assert_one_error(&e, "finding_info.uid: required attribute missing");
    let e = with(detection_finding(), "/metadata/version", None);
    assert_one_error(&e, "metadata.version: required attribute missing");
    let e = with(
        detection_finding(),
        "/evidences/0/connection_info/direction_id",
        None,
    );
    assert_one_error(
        &e,
        "evidences[0].connection_info.direction_id: required attribute missing",
    );
}

#[test]
fn a_wrong_type_is_named() {
    let e = with(
        detection_finding(),
        "/evidences/0/process/pid",
        Some(json!("4242")),
    );
    assert_one_error(&e, "evidences[0].process.pid: expected integer");
    let e = with(
        detection_finding(),
        "/evidences/0/dst_endpoint/port",
        Some(json!(70_000)),
    );
    assert_one_error(&e, "evidences[0].dst_endpoint.port: 70000 is outside");
    let e = with(
        detection_finding(),
        "/evidences/0/dst_endpoint/ip",
        Some(json!("203x0x113x9")),
    );
    assert_one_error(&e, "evidences[0].dst_endpoint.ip: ");
    let e = with(
        detection_finding(),
        "/finding_info/types",
        Some(json!("egress")),
    );
    assert_one_error(&e, "finding_info.types: expected an array of string_t");
    let e = with(
        detection_finding(),
        "/metadata/product",
        Some(json!([{ "name": "x" }])),
    );
    assert_one_error(
        &e,
        "metadata.product: expected object product, found an array",
    );
    let e = with(detection_finding(), "/message", Some(Value::Null));
    assert_one_error(&e, "message: null");
}

#[test]
fn time_must_be_epoch_milliseconds() {
    let e = with(detection_finding(), "/time", Some(json!(1_767_225_600)));
    assert_one_error(&e, "time: 1767225600 does not look like epoch milliseconds");
    let e = with(
        detection_finding(),
        "/time",
        Some(json!("2026-01-01T00:00:00Z")),
    );
    assert_one_error(&e, "time: expected integer (64-bit) (timestamp_t)");
}

#[test]
fn a_bad_enum_id_is_named() {
    let e = with(detection_finding(), "/severity_id", Some(json!(7)));
    let errors = errors_of(&e);
    assert!(
        errors
            .iter()
            .any(|m| m.starts_with("severity_id: 7 is not a value")),
        "{errors:#?}"
    );
    let e = with(
        detection_finding(),
        "/finding_info/analytic/type_id",
        Some(json!(42)),
    );
    assert_one_error(&e, "finding_info.analytic.type_id: 42 is not a value");
    // Activity 6 (Traffic) is Network Activity's, not Detection Finding's.
    let e = with(detection_finding(), "/activity_id", Some(json!(6)));
    let e = with(e, "/type_uid", Some(json!(200_406)));
    let e = with(e, "/activity_name", None);
    assert_one_error(&e, "activity_id: 6 is not a value");
}

#[test]
fn a_caption_that_contradicts_its_id_is_named() {
    let e = with(detection_finding(), "/severity", Some(json!("Low")));
    assert_one_error(&e, "severity: \"Low\" is not the caption of severity_id 4");
    // Case is not held against it; and with 99 (Other) the caption is the source's own.
    let e = with(detection_finding(), "/severity", Some(json!("high")));
    assert_eq!(validate_ocsf(&e), Ok(()));
    let e = with(
        with(detection_finding(), "/severity_id", Some(json!(99))),
        "/severity",
        Some(json!("Severe")),
    );
    assert_eq!(validate_ocsf(&e), Ok(()));
}

#[test]
fn an_unknown_attribute_is_named() {
    let e = with(
        detection_finding(),
        "/evidences/0/src_endpoint/foo",
        Some(json!(1)),
    );
    assert_one_error(
        &e,
        "evidences[0].src_endpoint.foo: unknown attribute (object network_endpoint",
    );
    // Detection Finding has no top-level endpoints or traffic: they go in evidences.
    let e = with(
        detection_finding(),
        "/dst_endpoint",
        Some(json!({ "ip": "203.0.113.9" })),
    );
    assert_one_error(
        &e,
        "dst_endpoint: unknown attribute (class detection_finding (2004)",
    );
}

#[test]
fn type_uid_must_be_class_times_100_plus_activity() {
    let e = with(detection_finding(), "/type_uid", Some(json!(200_402)));
    assert_one_error(
        &e,
        "type_uid: 200402, expected class_uid * 100 + activity_id = 200401",
    );
}

#[test]
fn category_and_class_must_agree() {
    let e = with(detection_finding(), "/category_uid", Some(json!(4)));
    assert_one_error(
        &e,
        "category_uid: 4, but class detection_finding is in category findings (2)",
    );
    let e = with(detection_finding(), "/class_uid", Some(json!(2099)));
    assert_one_error(&e, "class_uid: 2099 is not an OCSF 1.8.0 event class");
    let e = with(
        detection_finding(),
        "/metadata/version",
        Some(json!("1.7.0")),
    );
    assert_one_error(
        &e,
        "metadata.version: \"1.7.0\", but validated against OCSF 1.8.0",
    );
}

#[test]
fn profile_attributes_need_the_profile_listed() {
    // `actor` comes from the host profile, `disposition_id` from security_control.
    let actor = json!({ "process": { "pid": 4242 } });
    let e = with(detection_finding(), "/actor", Some(actor.clone()));
    assert_one_error(
        &e,
        "actor: attribute of the host profile, which metadata.profiles does not list",
    );
    let e = with(detection_finding(), "/disposition_id", Some(json!(1)));
    assert_one_error(
        &e,
        "disposition_id: attribute of the security_control profile",
    );

    let e = with(
        with(e, "/actor", Some(actor)),
        "/metadata/profiles",
        Some(json!(["host", "security_control"])),
    );
    assert_eq!(validate_ocsf(&e), Ok(()));

    // Network Activity: `device` is the host profile's.
    let e = with(network_activity(), "/metadata/profiles", None);
    let errors = errors_of(&e);
    assert!(
        errors
            .iter()
            .any(|m| m.starts_with("device: attribute of the host profile"))
            && errors
                .iter()
                .any(|m| m.starts_with("actor: attribute of the host profile")),
        "{errors:#?}"
    );
    let e = with(
        network_activity(),
        "/metadata/profiles",
        Some(json!(["hots"])),
    );
    assert!(
        errors_of(&e)
            .iter()
            .any(|m| m == "metadata.profiles[0]: unknown profile \"hots\"")
    );
}

#[test]
fn in_findings_device_and_is_alert_need_no_profile() {
    // finding.json lists `device` and detection_finding.json `is_alert` with "profile": null:
    // in these classes they are ordinary attributes.
    let e = with(
        detection_finding(),
        "/device",
        Some(json!({ "type_id": 1, "hostname": "web-1" })),
    );
    let e = with(e, "/is_alert", Some(json!(true)));
    assert_eq!(validate_ocsf(&e), Ok(()));
    let e = with(e, "/device/type_id", None);
    assert_one_error(&e, "device.type_id: required attribute missing");
}

#[test]
fn datetime_siblings_need_the_datetime_profile() {
    let e = with(
        detection_finding(),
        "/time_dt",
        Some(json!("2026-01-01T00:00:00Z")),
    );
    assert_one_error(&e, "time_dt: attribute of the datetime profile");
    let e = with(e, "/metadata/profiles", Some(json!(["datetime"])));
    assert_eq!(validate_ocsf(&e), Ok(()));
    let e = with(e, "/time_dt", Some(json!("yesterday")));
    assert_one_error(
        &e,
        "time_dt: \"yesterday\" does not match the datetime_t pattern",
    );
}

#[test]
fn object_constraints_are_enforced() {
    let e = with(
        detection_finding(),
        "/evidences/0/dst_endpoint",
        Some(json!({ "port": 443 })),
    );
    assert_one_error(
        &e,
        "evidences[0].dst_endpoint: object network_endpoint needs at least one of [ip",
    );
    let e = with(detection_finding(), "/evidences/0/process/pid", None);
    let e = with(e, "/evidences/0/process/name", None);
    assert_one_error(
        &e,
        "evidences[0].process: object process needs at least one of [pid, uid, cpid]",
    );
    let e = with(
        detection_finding(),
        "/evidences/0",
        Some(json!({ "name": "nothing" })),
    );
    assert_one_error(
        &e,
        "evidences[0]: object evidences needs at least one of [actor",
    );
    // Network classes need an endpoint at the top level.
    let e = with(
        with(network_activity(), "/src_endpoint", None),
        "/dst_endpoint",
        None,
    );
    assert_one_error(
        &e,
        "(event): class network_activity (4001) needs at least one of [dst_endpoint",
    );
}

#[test]
fn every_error_is_reported() {
    let e = with(detection_finding(), "/finding_info/uid", None);
    let e = with(e, "/severity_id", Some(json!("4")));
    let e = with(e, "/evidences/0/bogus", Some(json!(true)));
    let errors = errors_of(&e);
    assert_eq!(errors.len(), 3, "{errors:#?}");
}
