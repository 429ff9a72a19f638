//! Elasticsearch / `OpenSearch` `_bulk` into a data stream: one POST to
//! `<url>/<data_stream>/_bulk` per batch, NDJSON pairs `{"create":{"_id":<event id>}}` +
//! document. Data streams take only `create`; the event id as `_id` makes a resent event a
//! 409 conflict instead of a duplicate (within a backing index: after a rollover a resend
//! can duplicate, as with any at-least-once sender).
//!
//! The answer is judged per item, not by its HTTP status: 2xx and 409 (already there) are
//! delivered; 429 and 5xx items are retried, so `done` stops before the first of them (the
//! later items are resent with it; `create` + `_id` makes that safe); other 4xx items
//! (mapping errors) are refused for good (dead letter, with the error type and reason).
//! Documents are ECS (they have `@timestamp`) or OCSF findings given an `@timestamp` of the
//! event time (settings refuse other formats).

use base64::Engine as _;
use serde_json::{Value, json};

use super::{
    Format, Reporter,
    http::{self, HttpClient, Secret, SetupError, Status},
    settings::{HttpAuth, SinkConfig},
    transport::{Sent, Transport, TransportError},
};
use crate::store::Pending;

pub const DEFAULT_DATA_STREAM: &str = "logs-egress_monitor.alerts-default";

/// A bulk answer lists every item; 10,000 items with long errors stay well under this.
const ANSWER_LIMIT: u64 = 32 * 1024 * 1024;

pub struct Elasticsearch {
    client: HttpClient,
    bulk_url: String,
    authorization: Secret,
    format: Format,
}

impl Elasticsearch {
    pub fn new(c: &SinkConfig) -> Result<Self, SetupError> {
        let url = c
            .url
            .as_ref()
            .map(|u| u.get_ref().as_str())
            .unwrap_or_default();
        let token =
            http::load_token(c, |name| std::env::var(name).ok())?.ok_or(SetupError::NoToken)?;
        let authorization = authorization(c.auth.unwrap_or(HttpAuth::ApiKey), &token)?;
        http::warn_if_plain(c, url);
        let data_stream = c
            .data_stream
            .as_ref()
            .map_or(DEFAULT_DATA_STREAM, |d| d.get_ref().as_str());
        Ok(Self {
            client: HttpClient::new(c, c.gzip.unwrap_or(true))?,
            // filter_path: only what is judged comes back (a bulk answer is otherwise ~200
            // bytes per item).
            bulk_url: format!(
                "{}/{data_stream}/_bulk?filter_path=errors,items.*.status,items.*.error",
                url.trim_end_matches('/')
            ),
            authorization,
            format: c.format,
        })
    }

    /// The NDJSON body: a `create` with the event id, then the document, per event.
    pub fn body(&self, batch: &[Pending], reporter: &Reporter) -> Vec<u8> {
        let mut body = Vec::new();
        for p in batch {
            let action = json!({ "create": { "_id": p.event.id().to_string() } });
            // Writing a Value into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut body, &action);
            body.push(b'\n');
            let _ = serde_json::to_writer(&mut body, &p.event.document(self.format, reporter));
            body.push(b'\n');
        }
        body
    }
}

/// The `Authorization` header value for `auth`.
fn authorization(auth: HttpAuth, token: &Secret) -> Result<Secret, SetupError> {
    Ok(Secret::new(match auth {
        HttpAuth::ApiKey => format!("ApiKey {}", token.expose()),
        HttpAuth::Bearer => format!("Bearer {}", token.expose()),
        HttpAuth::Basic => {
            if !token.expose().contains(':') {
                return Err(SetupError::BasicToken);
            }
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(token.expose())
            )
        }
    }))
}

impl Transport for Elasticsearch {
    fn target(&self) -> String {
        http::redacted(&self.bulk_url)
    }

    fn send(&mut self, batch: &[Pending], reporter: &Reporter) -> Result<Sent, TransportError> {
        let body = self.body(batch, reporter);
        let reply = self.client.post(
            &self.bulk_url,
            &[
                ("Authorization", self.authorization.expose()),
                ("Content-Type", "application/x-ndjson"),
            ],
            &body,
            ANSWER_LIMIT,
        )?;
        let target = self.target();
        match http::classify(reply.status) {
            Status::Success => items(&reply.body, batch.len(), &target),
            Status::Config => Err(TransportError::Refused(format!(
                "{target}: HTTP {} {}: {}",
                reply.status,
                http::snippet(&reply.body),
                http::config_hint(reply.status)
            ))),
            // A whole-request 4xx is about the request (or the cluster), not one event:
            // retried, never dead-lettered.
            Status::Retry | Status::Refused => Err(TransportError::Refused(format!(
                "{target}: HTTP {} {}",
                reply.status,
                http::snippet(&reply.body)
            ))),
        }
    }
}

/// Judges a bulk answer item by item (see the module doc).
fn items(body: &str, len: usize, target: &str) -> Result<Sent, TransportError> {
    let garbage = |why: &str| {
        TransportError::Refused(format!(
            "{target}: not a bulk answer ({why}): {}",
            http::snippet(body)
        ))
    };
    let answer: Value = serde_json::from_str(body).map_err(|_| garbage("not JSON"))?;
    let items = answer
        .get("items")
        .and_then(Value::as_array)
        .ok_or_else(|| garbage("no items"))?;
    if items.len() != len {
        return Err(garbage(&format!("{} items for {len} events", items.len())));
    }
    let mut rejected = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let result = item
            .as_object()
            .and_then(|o| o.values().next())
            .ok_or_else(|| garbage("an item without its action"))?;
        let status = result
            .get("status")
            .and_then(Value::as_u64)
            .ok_or_else(|| garbage("an item without status"))?;
        match status {
            200..=299 | 409 => {}
            429 | 500..=599 => {
                tracing::warn!(
                    target_url = %target,
                    status,
                    error = %reason(status, result),
                    retried = len - i,
                    "the cluster deferred part of a bulk request; the rest is sent again"
                );
                return Ok(Sent { done: i, rejected });
            }
            _ => rejected.push((i, reason(status, result))),
        }
    }
    Ok(Sent {
        done: len,
        rejected,
    })
}

/// `HTTP 400 mapper_parsing_exception: failed to parse field [...]`, bounded.
fn reason(status: u64, result: &Value) -> String {
    let error = result.get("error");
    let kind = error
        .and_then(|e| e.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("error");
    let why = error
        .and_then(|e| e.get("reason"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    http::snippet(&format!("HTTP {status} {kind}: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_is_encoded_and_needs_a_colon() {
        let a = authorization(HttpAuth::Basic, &Secret::new("elastic:changeme".into())).unwrap();
        assert_eq!(a.expose(), "Basic ZWxhc3RpYzpjaGFuZ2VtZQ==");
        assert!(authorization(HttpAuth::Basic, &Secret::new("nocolon".into())).is_err());
        let a = authorization(
            HttpAuth::ApiKey,
            &Secret::new("VnVhQ2ZHY0JDZGJrUW0=".into()),
        );
        assert_eq!(a.unwrap().expose(), "ApiKey VnVhQ2ZHY0JDZGJrUW0=");
    }

    #[test]
    fn ocsf_documents_get_a_timestamp() {
        use crate::export::exported::Exported;
        let r = crate::export::fixtures::reporter();
        let e = Exported::from(crate::export::fixtures::opened());
        let doc = e.document(Format::Ocsf, &r);
        assert_eq!(doc["@timestamp"], json!(e.at().to_string()));
        assert_eq!(doc["class_uid"], json!(2004));
        let doc = e.document(Format::Ecs, &r);
        assert_eq!(doc["ecs"]["version"], json!(crate::export::ecs::VERSION));
        // A containment: OCSF Network Remediation Activity, or its ECS document.
        let c = Exported::from(crate::export::containment::fixtures::started());
        let doc = c.document(Format::Ocsf, &r);
        assert_eq!(doc["@timestamp"], json!(c.at().to_string()));
        assert_eq!(doc["class_uid"], json!(7004));
        let doc = c.document(Format::Ecs, &r);
        assert_eq!(doc["ecs"]["version"], json!(crate::export::ecs::VERSION));
    }

    #[test]
    fn bulk_answers_are_judged_per_item() {
        let t = "https://es/_bulk";
        let answer = json!({"errors": true, "items": [
            {"create": {"status": 201}},
            {"create": {"status": 409, "error": {"type": "version_conflict_engine_exception",
                "reason": "[x]: version conflict, document already exists"}}},
            {"create": {"status": 400, "error": {"type": "mapper_parsing_exception",
                "reason": "failed to parse field [source.bytes] of type [long]"}}},
            {"create": {"status": 201}},
            {"create": {"status": 429, "error": {"type": "es_rejected_execution_exception",
                "reason": "rejected execution"}}},
            {"create": {"status": 201}},
        ]})
        .to_string();
        let sent = items(&answer, 6, t).unwrap();
        assert_eq!(
            sent.done, 4,
            "stops before the 429; the 201 after it is resent"
        );
        assert_eq!(sent.rejected.len(), 1);
        assert_eq!(sent.rejected[0].0, 2);
        assert!(
            sent.rejected[0]
                .1
                .starts_with("HTTP 400 mapper_parsing_exception: failed to parse field"),
            "{}",
            sent.rejected[0].1
        );
        let e = items("<html>", 1, t).unwrap_err().to_string();
        assert!(e.contains("not a bulk answer (not JSON)"), "{e}");
        let e = items(r#"{"errors":false,"items":[]}"#, 2, t)
            .unwrap_err()
            .to_string();
        assert!(e.contains("0 items for 2 events"), "{e}");
    }
}
