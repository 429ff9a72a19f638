//! The HTTP sinks end to end within the process: configuration text -> `Deliverer` -> a
//! loopback receiver that checks what arrives (method, path, headers, gzip, framing) and
//! answers as Splunk HEC, Elasticsearch or a webhook do; then what the outbox, the counters
//! and the dead-letter file say.

use std::{
    path::{Path, PathBuf},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::{
    delivery::Deliverer,
    event_id, fixtures,
    http_receiver::{Answer, Request, serve},
};
use crate::{
    config::{Config, Origin},
    detect::alerts::AlertEvent,
    schema_check::{validate_ecs, validate_ocsf},
    store::Store,
};

pub const TOKEN: &str = "tok-Zq8RnWbT4xLp-do-not-log";
pub const HEC_OK: &str = r#"{"text":"Success","code":0}"#;

/// A fresh directory with the token file in it.
pub fn workdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("egress-http-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("token"), format!("{TOKEN}\n")).unwrap();
    dir
}

/// `n` distinct events (distinct event ids), oldest first.
pub fn events(n: u32) -> Vec<AlertEvent> {
    (0..n)
        .map(|i| {
            let mut e = fixtures::opened();
            e.alert.updates = i;
            e.at += jiff::SignedDuration::from_secs(i64::from(i));
            e
        })
        .collect()
}

/// A deliverer for one `[[sinks]]` table (its `token_file` is `dir/token`) and an outbox
/// holding `events`.
pub fn setup(sink: &str, dir: &Path, events: &[AlertEvent]) -> (Deliverer, Store) {
    let text = format!(
        "[[sinks]]\nname = \"http\"\ntoken_file = {:?}\n{sink}",
        dir.join("token").display().to_string()
    );
    let config = Config::parse(&text, &Origin::Embedded).unwrap();
    let mut store = Store::in_memory().unwrap();
    let d = Deliverer::new(&config.sinks, dir, fixtures::reporter()).unwrap();
    d.register(&mut store).unwrap();
    store.record(events, &[]).unwrap();
    (d, store)
}

/// A time after any backoff.
pub fn later() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

/// The JSON objects of a HEC body (concatenated, no separator).
fn envelopes(r: &Request) -> Vec<Value> {
    serde_json::Deserializer::from_slice(&r.body)
        .into_iter::<Value>()
        .map(Result::unwrap)
        .collect()
}

fn dead_letters(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("dead-letter").join("http.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn splunk_hec_gets_one_request_of_concatenated_envelopes() {
    let dir = workdir("hec-ok");
    let rx = serve(vec![Answer::Http(200, HEC_OK.into())]);
    let sent = events(3);
    let sink = format!(
        "type = \"splunk_hec\"\nurl = \"{}\"\nformat = \"ocsf\"\nindex = \"security\"\n",
        rx.url("http")
    );
    let (mut d, mut store) = setup(&sink, &dir, &sent);
    assert_eq!(d.round(&mut store, Instant::now()).unwrap().delivered, 3);
    let requests = rx.requests();
    assert_eq!(requests.len(), 1, "one request per batch");
    let r = &requests[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/services/collector/event")
    );
    assert_eq!(
        r.header("authorization"),
        Some(format!("Splunk {TOKEN}").as_str())
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.gzipped, "gzip by default");
    let envelopes = envelopes(r);
    assert_eq!(envelopes.len(), 3);
    for (env, e) in envelopes.iter().zip(&sent) {
        assert_eq!(env["time"], json!(e.at.as_millisecond() as f64 / 1000.0));
        assert_eq!(env["host"], "matrix.example.org");
        assert_eq!(env["source"], "egress-monitor");
        assert_eq!(env["sourcetype"], "egress-monitor:ocsf");
        assert_eq!(env["index"], "security");
        assert_eq!(env["fields"]["event_id"], event_id(e).to_string());
        validate_ocsf(&env["event"]).unwrap();
        assert_eq!(
            env["event"]["metadata"]["uid"],
            event_id(e).to_string(),
            "in order"
        );
    }
    assert_eq!(store.backlog("http").unwrap(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn splunk_hec_busy_then_success_loses_nothing_and_keeps_the_order() {
    let dir = workdir("hec-busy");
    let rx = serve(vec![
        Answer::Http(503, r#"{"text":"Server is busy","code":9}"#.into()),
        Answer::Http(200, HEC_OK.into()),
    ]);
    let sink = format!(
        "type = \"splunk_hec\"\nurl = \"{}/services/collector\"\nformat = \"cef\"\ngzip = false\n",
        rx.url("http")
    );
    let sent = events(3);
    let (mut d, mut store) = setup(&sink, &dir, &sent);
    let r = d.round(&mut store, Instant::now()).unwrap();
    assert_eq!((r.delivered, r.failed_sinks, r.rejected), (0, 1, 0));
    assert_eq!(store.backlog("http").unwrap(), 3, "all kept");
    assert_eq!(d.round(&mut store, later()).unwrap().delivered, 3);
    let requests = rx.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].body, requests[1].body, "the same batch again");
    assert!(!requests[0].gzipped);
    let cef: Vec<String> = envelopes(&requests[1])
        .iter()
        .map(|e| e["event"].as_str().expect("CEF as a string").to_owned())
        .collect();
    for (line, e) in cef.iter().zip(&sent) {
        assert!(line.starts_with("CEF:0|") && line.contains(&event_id(e).to_string()));
    }
    assert_eq!(store.backlog("http").unwrap(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn splunk_hec_invalid_event_number_dead_letters_that_event_and_resends_the_rest() {
    let dir = workdir("hec-invalid");
    let rx = serve(vec![
        Answer::Http(
            400,
            r#"{"text":"Invalid data format","code":6,"invalid-event-number":1}"#.into(),
        ),
        Answer::Http(200, HEC_OK.into()),
    ]);
    let sink = format!("type = \"splunk_hec\"\nurl = \"{}\"\n", rx.url("http"));
    let sent = events(3);
    let (mut d, mut store) = setup(&sink, &dir, &sent);
    let r = d.round(&mut store, Instant::now()).unwrap();
    assert_eq!((r.delivered, r.rejected, r.failed_sinks), (1, 1, 1));
    let dead = dead_letters(&dir);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["event_id"], event_id(&sent[1]).to_string());
    assert!(
        dead[0]["reason"]
            .as_str()
            .unwrap()
            .contains("Invalid data format (code 6)")
    );
    assert_eq!(d.round(&mut store, later()).unwrap().delivered, 1);
    let requests = rx.requests();
    let resent = envelopes(&requests[1]);
    assert_eq!(resent.len(), 1, "only the event after the bad one");
    assert_eq!(
        resent[0]["fields"]["event_id"],
        event_id(&sent[2]).to_string()
    );
    let counters = &d.counters()[0].1;
    assert_eq!(counters.delivered.load(Ordering::Relaxed), 2);
    assert_eq!(counters.rejected.load(Ordering::Relaxed), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A bulk answer with these item statuses (errors as Elasticsearch words them).
pub fn bulk_answer(statuses: &[u16]) -> String {
    let items: Vec<Value> = statuses
        .iter()
        .map(|s| match s {
            201 => json!({"create": {"status": 201}}),
            409 => json!({"create": {"status": 409, "error": {
                "type": "version_conflict_engine_exception",
                "reason": "[3f0c]: version conflict, document already exists (current version [1])"}}}),
            429 => json!({"create": {"status": 429, "error": {
                "type": "es_rejected_execution_exception",
                "reason": "rejected execution of coordinating operation"}}}),
            _ => json!({"create": {"status": s, "error": {
                "type": "document_parsing_exception",
                "reason": "[1:812] failed to parse field [source.bytes] of type [long] in document",
                "caused_by": {"type": "illegal_argument_exception", "reason": "For input string"}}}}),
        })
        .collect();
    let errors = statuses.iter().any(|s| *s != 201);
    json!({"errors": errors, "items": items}).to_string()
}

#[test]
fn elasticsearch_bulk_partial_failure_delivers_dead_letters_and_retries_per_item() {
    let dir = workdir("es-partial");
    let rx = serve(vec![
        Answer::Http(200, bulk_answer(&[201, 400, 409, 429, 201])),
        Answer::Http(200, bulk_answer(&[201, 201])),
    ]);
    let sink = format!(
        "type = \"elasticsearch\"\nurl = \"{}/\"\nformat = \"ecs\"\n",
        rx.url("http")
    );
    let sent = events(5);
    let (mut d, mut store) = setup(&sink, &dir, &sent);
    let r = d.round(&mut store, Instant::now()).unwrap();
    assert_eq!(
        (r.delivered, r.rejected, r.failed_sinks),
        (2, 1, 1),
        "201 and 409 delivered, the 400 dead-lettered, the 429 and after retried"
    );
    assert_eq!(store.backlog("http").unwrap(), 2);
    let dead = dead_letters(&dir);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["event_id"], event_id(&sent[1]).to_string());
    assert!(
        dead[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("HTTP 400 document_parsing_exception: [1:812] failed to parse")
    );
    assert_eq!(d.round(&mut store, later()).unwrap().delivered, 2);
    assert_eq!(store.backlog("http").unwrap(), 0);

    let requests = rx.requests();
    let r = &requests[0];
    assert_eq!(
        r.path,
        "/logs-egress_monitor.alerts-default/_bulk?filter_path=errors,items.*.status,items.*.error"
    );
    assert_eq!(
        r.header("authorization"),
        Some(format!("ApiKey {TOKEN}").as_str())
    );
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    assert!(r.gzipped);
    assert!(r.text().ends_with('\n'), "NDJSON ends with a newline");
    let ids = |r: &Request| -> Vec<String> {
        let lines: Vec<Value> = r
            .text()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len() % 2, 0, "action and document pairs");
        lines
            .chunks(2)
            .map(|pair| {
                validate_ecs(&pair[1]).unwrap();
                assert!(pair[1]["@timestamp"].is_string());
                pair[0]["create"]["_id"].as_str().unwrap().to_owned()
            })
            .collect()
    };
    let want: Vec<String> = sent.iter().map(|e| event_id(e).to_string()).collect();
    assert_eq!(ids(&requests[0]), want);
    assert_eq!(ids(&requests[1]), want[3..], "from the 429 on");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn webhook_posts_a_json_array_and_dead_letters_a_refused_batch() {
    let dir = workdir("webhook");
    let rx = serve(vec![
        Answer::Http(204, String::new()),
        Answer::Http(
            422,
            r#"{"error":"schema mismatch: expected field 'title'"}"#.into(),
        ),
    ]);
    let sink = format!(
        "type = \"webhook\"\nurl = \"{}/hooks/egress?team=net\"\nformat = \"ecs\"\n",
        rx.url("http")
    );
    let sent = events(2);
    let (mut d, mut store) = setup(&sink, &dir, &sent);
    assert_eq!(d.round(&mut store, Instant::now()).unwrap().delivered, 2);
    store.record(&events(4)[2..], &[]).unwrap();
    let r = d.round(&mut store, Instant::now()).unwrap();
    assert_eq!((r.delivered, r.rejected, r.failed_sinks), (0, 2, 0));
    let dead = dead_letters(&dir);
    assert_eq!(dead.len(), 2);
    assert!(
        dead[1]["reason"]
            .as_str()
            .unwrap()
            .starts_with("HTTP 422 {\"error\":\"schema mismatch")
    );

    let requests = rx.requests();
    let r = &requests[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/hooks/egress?team=net")
    );
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(!r.gzipped, "webhooks are not gzipped by default");
    let key = super::webhook::idempotency_key(&store_pending(&sent));
    assert_eq!(r.header("idempotency-key"), Some(key.to_string().as_str()));
    let array: Vec<Value> = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(array.len(), 2);
    assert_eq!(array[1]["event"]["id"], event_id(&sent[1]).to_string());
    std::fs::remove_dir_all(&dir).unwrap();
}

fn store_pending(events: &[AlertEvent]) -> Vec<crate::store::Pending> {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| crate::store::Pending {
            seq: i as i64,
            event: e.clone().into(),
        })
        .collect()
}
