//! The ECS validator on hand-written documents: the alert the exporter is expected to produce
//! passes, and each kind of mistake is caught with a message naming the field.

use serde_json::{Value, json};

use super::{CUSTOM_NAMESPACES, ECS_VERSION, validate_ecs, validate_ecs_with_custom};

/// An ECS 9.4.0 alert for an egress volume above baseline.
fn alert() -> Value {
    json!({
        "@timestamp": "2026-01-01T00:00:00.000Z",
        "ecs": { "version": ECS_VERSION },
        "message": "curl sent 1.2 GB to 203.0.113.9 in 1h (baseline 40 MB)",
        "event": {
            "kind": "alert",
            "category": ["network", "intrusion_detection"],
            "type": ["info"],
            "action": "egress-alert-create",
            "severity": 73,
            "start": "2025-12-31T23:00:00Z",
            "end": "2026-01-01T00:00:00Z",
            "duration": 3_600_000_000_000_i64,
            "dataset": "egress_monitor.alert",
            "module": "egress_monitor",
            "id": "5f0c6a52-6d4b-4c1e-9a53-2f1d8b7e4a10",
        },
        "source": { "ip": "10.0.0.5", "port": 43_512, "bytes": 1_200_000_000_i64 },
        "destination": { "ip": "203.0.113.9", "port": 443, "domain": "upload.example.com" },
        "network": { "direction": "egress", "transport": "tcp", "type": "ipv4", "bytes": 1_200_000_000_i64 },
        "process": { "pid": 4242, "name": "curl", "executable": "/usr/bin/curl" },
        "host": { "name": "web-1", "hostname": "web-1", "ip": ["10.0.0.5"] },
        "rule": { "id": "volume", "name": "Egress volume above baseline", "category": "exfiltration" },
        "threat": {
            "framework": "MITRE ATT&CK",
            "tactic": { "id": ["TA0010"], "name": ["Exfiltration"] },
            "technique": { "id": ["T1041"], "name": ["Exfiltration Over C2 Channel"] },
        },
        "labels": { "alert_status": "new", "threshold_bytes": "500000000" },
        "tags": ["egress-monitor"],
    })
}

fn errors_of(doc: &Value) -> Vec<String> {
    match validate_ecs(doc) {
        Ok(()) => panic!("accepted an invalid document: {doc:#}"),
        Err(e) => e,
    }
}

fn assert_one_error(doc: &Value, prefix: &str) {
    let errors = errors_of(doc);
    assert!(
        errors.len() == 1 && errors[0].starts_with(prefix),
        "expected one error starting {prefix:?}, got {errors:#?}"
    );
}

/// Sets (or with `None` removes) the value at a `/`-separated JSON pointer.
fn with(mut doc: Value, pointer: &str, value: Option<Value>) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer has a /");
    let map = doc
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .expect("parent object");
    match value {
        Some(v) => drop(map.insert(key.to_owned(), v)),
        None => drop(map.remove(key)),
    }
    doc
}

#[test]
fn the_alert_passes() {
    assert_eq!(validate_ecs(&alert()), Ok(()));
}

#[test]
fn dotted_keys_are_the_same_fields() {
    let doc = json!({
        "@timestamp": 1_767_225_600_000_i64,
        "ecs.version": "9.4.0",
        "event.kind": "alert",
        "source": { "bytes": 12 },
    });
    assert_eq!(validate_ecs(&doc), Ok(()));
    assert_one_error(
        &with(doc, "/event.kind", Some(json!("signal"))),
        "event.kind: ",
    );
}

#[test]
fn signal_is_reserved() {
    let doc = with(alert(), "/event/kind", Some(json!("signal")));
    assert_one_error(&doc, "event.kind: \"signal\" is reserved");
    let doc = with(alert(), "/event/kind", Some(json!("Alert")));
    assert_one_error(
        &doc,
        "event.kind: \"Alert\" is not one of the allowed values",
    );
    let doc = with(
        alert(),
        "/event/category",
        Some(json!(["network", "exfiltration"])),
    );
    assert_one_error(
        &doc,
        "event.category[1]: \"exfiltration\" is not one of the allowed values",
    );
    let doc = with(alert(), "/network/direction", Some(json!("out")));
    assert_one_error(
        &doc,
        "network.direction: \"out\" is not one of the expected values",
    );
}

#[test]
fn an_unknown_field_is_named() {
    let doc = with(alert(), "/source/byte_count", Some(json!(12)));
    assert_one_error(&doc, "source.byte_count: not an ECS 9.4.0 field");
    let doc = with(alert(), "/alert", Some(json!({ "id": "x" })));
    assert_one_error(&doc, "alert: not an ECS 9.4.0 field");
    // Multi-fields are the index's business, not the document's.
    let doc = with(
        alert(),
        "/process/command_line.text",
        Some(json!("curl -T x")),
    );
    assert_one_error(&doc, "process.command_line.text: not an ECS 9.4.0 field");
}

#[test]
fn custom_namespaces_are_not_checked() {
    assert_eq!(CUSTOM_NAMESPACES, ["egress_monitor"]);
    let doc = with(
        alert(),
        "/egress_monitor",
        Some(json!({ "peer_class": "new", "baseline": [1, 2] })),
    );
    assert_eq!(validate_ecs(&doc), Ok(()));
    let doc = with(alert(), "/acme", Some(json!({ "x": 1 })));
    assert_one_error(&doc, "acme: not an ECS 9.4.0 field");
    assert_eq!(validate_ecs_with_custom(&doc, &["acme"]), Ok(()));
}

#[test]
fn a_wrong_type_is_named() {
    let doc = with(alert(), "/source/bytes", Some(json!("12")));
    assert_one_error(
        &doc,
        "source.bytes: expected an integer (long), found string \"12\"",
    );
    let doc = with(
        alert(),
        "/destination/ip",
        Some(json!("upload.example.com")),
    );
    assert_one_error(&doc, "destination.ip: expected an IP address string (ip)");
    let doc = with(alert(), "/event/start", Some(json!("yesterday")));
    assert_one_error(
        &doc,
        "event.start: expected an RFC 3339 date string or epoch milliseconds",
    );
    let doc = with(alert(), "/labels/threshold_bytes", Some(json!(500_000_000)));
    assert_one_error(&doc, "labels.threshold_bytes: expected a string (keyword)");
    let doc = with(alert(), "/process", Some(json!("curl")));
    assert_one_error(
        &doc,
        "process: expected an object (ECS has fields process.*)",
    );
    let doc = with(alert(), "/rule/name", Some(Value::Null));
    assert_one_error(&doc, "rule.name: null");
}

#[test]
fn arrays_only_where_ecs_normalizes_to_array() {
    let doc = with(alert(), "/threat/tactic/id", Some(json!("TA0010")));
    assert_eq!(
        validate_ecs(&doc),
        Ok(()),
        "a single value for an array field is fine"
    );
    let doc = with(alert(), "/threat/framework", Some(json!(["MITRE ATT&CK"])));
    assert_one_error(
        &doc,
        "threat.framework: an array, but threat.framework is not an array field",
    );
    let doc = with(
        alert(),
        "/threat/technique",
        Some(json!([{ "id": "T1041" }])),
    );
    assert_one_error(&doc, "threat.technique: expected an object");
    let doc = with(alert(), "/host/ip", Some(json!(["10.0.0.5", "bogus"])));
    assert_one_error(&doc, "host.ip[1]: expected an IP address string (ip)");
}

#[test]
fn timestamp_and_version_are_required() {
    let doc = with(alert(), "/@timestamp", None);
    assert_one_error(&doc, "@timestamp: required field missing");
    let doc = with(alert(), "/ecs", None);
    assert_one_error(&doc, "ecs.version: required field missing");
    let doc = with(alert(), "/ecs/version", Some(json!("8.11.0")));
    assert_one_error(
        &doc,
        "ecs.version: \"8.11.0\", but validated against ECS 9.4.0",
    );
}

#[test]
fn every_error_is_reported() {
    let doc = with(alert(), "/@timestamp", None);
    let doc = with(doc, "/event/kind", Some(json!("signal")));
    let doc = with(doc, "/source/bytes", Some(json!(1.5)));
    assert_eq!(errors_of(&doc).len(), 3, "{:#?}", errors_of(&doc));
}

#[test]
fn nested_objects_and_geo_points() {
    let enrichments =
        json!([{ "indicator": { "ip": "203.0.113.9" }, "matched": { "field": "destination.ip" } }]);
    let doc = with(alert(), "/threat/enrichments", Some(enrichments));
    let doc = with(
        doc,
        "/destination/geo",
        Some(json!({ "location": { "lat": 48.85, "lon": 2.35 } })),
    );
    assert_eq!(validate_ecs(&doc), Ok(()));
    let doc = with(
        doc,
        "/destination/geo",
        Some(json!({ "location": "north" })),
    );
    assert_one_error(&doc, "destination.geo.location: expected a geo_point");
    let bad = json!([{ "indicator": { "ip": "nope" } }]);
    let doc = with(alert(), "/threat/enrichments", Some(bad));
    assert_one_error(
        &doc,
        "threat.enrichments[0].indicator.ip: expected an IP address string",
    );
}
