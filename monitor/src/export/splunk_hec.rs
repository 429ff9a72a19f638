//! Splunk HTTP Event Collector: one POST to `/services/collector/event` per batch, the body
//! the batch's envelopes concatenated (`{"time", "host", "source", "sourcetype", "index"?,
//! "event", "fields": {"event_id"}}`), `Authorization: Splunk <token>`.
//!
//! HEC reads a batch in order and stops at the first event it cannot take: it answers 400
//! with `{"text", "code", "invalid-event-number": n}` (0-based) after handing the events
//! before `n` to the indexers. So events `0..n` are delivered, `n` is refused for good (dead
//! letter), and the rest is sent again. Busy (503, code 9), 429 and 5xx answers and
//! transport failures retry the whole batch; `fields.event_id` lets searches drop the
//! duplicates a retry after a lost answer can make.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    Format, Reporter,
    http::{self, HttpClient, Secret, SetupError, Status},
    settings::SinkConfig,
    transport::{Sent, Transport, TransportError},
};
use crate::store::Pending;

/// HEC answers are short; anything longer is not HEC.
const ANSWER_LIMIT: u64 = 64 * 1024;

pub struct SplunkHec {
    client: HttpClient,
    endpoint: String,
    authorization: Secret,
    format: Format,
    source: String,
    sourcetype: String,
    index: Option<String>,
}

/// `url` as given when it already names the event endpoint, else that endpoint under it.
pub fn endpoint(url: &str) -> String {
    let url = url.trim_end_matches('/');
    if url.ends_with("/services/collector") {
        format!("{url}/event")
    } else if url.contains("/services/collector/") {
        url.to_owned()
    } else {
        format!("{url}/services/collector/event")
    }
}

const fn format_name(format: Format) -> &'static str {
    match format {
        Format::Json => "json",
        Format::Ocsf => "ocsf",
        Format::Ecs => "ecs",
        Format::Cef => "cef",
        Format::Text => "text",
    }
}

impl SplunkHec {
    pub fn new(c: &SinkConfig) -> Result<Self, SetupError> {
        let url = c
            .url
            .as_ref()
            .map(|u| u.get_ref().as_str())
            .unwrap_or_default();
        let token =
            http::load_token(c, |name| std::env::var(name).ok())?.ok_or(SetupError::NoToken)?;
        http::warn_if_plain(c, url);
        Ok(Self {
            client: HttpClient::new(c, c.gzip.unwrap_or(true))?,
            endpoint: endpoint(url),
            authorization: Secret::new(format!("Splunk {}", token.expose())),
            format: c.format,
            source: c.source.clone().unwrap_or_else(|| "egress-monitor".into()),
            sourcetype: c
                .sourcetype
                .clone()
                .unwrap_or_else(|| format!("egress-monitor:{}", format_name(c.format))),
            index: c.index.clone(),
        })
    }

    /// The batch's envelopes, concatenated as HEC wants them.
    pub fn body(&self, batch: &[Pending], reporter: &Reporter) -> Vec<u8> {
        let mut body = Vec::new();
        for p in batch {
            let mut envelope = Map::new();
            envelope.insert(
                "time".into(),
                json!(p.event.at().as_millisecond() as f64 / 1000.0),
            );
            envelope.insert("host".into(), json!(reporter.hostname));
            envelope.insert("source".into(), json!(self.source));
            envelope.insert("sourcetype".into(), json!(self.sourcetype));
            if let Some(index) = &self.index {
                envelope.insert("index".into(), json!(index));
            }
            envelope.insert("event".into(), p.event.value(self.format, reporter));
            envelope.insert(
                "fields".into(),
                json!({ "event_id": p.event.id().to_string() }),
            );
            // Writing a Value into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut body, &Value::Object(envelope));
        }
        body
    }
}

impl Transport for SplunkHec {
    fn target(&self) -> String {
        http::redacted(&self.endpoint)
    }

    fn send(&mut self, batch: &[Pending], reporter: &Reporter) -> Result<Sent, TransportError> {
        let body = self.body(batch, reporter);
        let reply = self.client.post(
            &self.endpoint,
            &[
                ("Authorization", self.authorization.expose()),
                ("Content-Type", "application/json"),
            ],
            &body,
            ANSWER_LIMIT,
        )?;
        outcome(reply.status, &reply.body, batch.len(), &self.target())
    }
}

/// HEC's answer body.
#[derive(Debug, Deserialize)]
struct Answer {
    #[serde(default)]
    text: String,
    code: Option<u32>,
    #[serde(rename = "invalid-event-number")]
    invalid_event: Option<usize>,
}

/// HEC codes that blame one event's data (not the token, index or channel).
const fn event_at_fault(code: u32) -> bool {
    // 6 invalid data format, 12 event field is required, 13 event field cannot be blank,
    // 15 error in handling indexed fields.
    matches!(code, 6 | 12 | 13 | 15)
}

fn outcome(status: u16, body: &str, len: usize, target: &str) -> Result<Sent, TransportError> {
    let answer: Option<Answer> = serde_json::from_str(body).ok();
    let what = match &answer {
        Some(a) => format!("{} (code {})", a.text, a.code.map_or(-1, i64::from)),
        None => http::snippet(body),
    };
    match (http::classify(status), &answer) {
        (Status::Success, Some(Answer { code: Some(0), .. })) => Ok(http::delivered(len)),
        (Status::Success, _) => Err(TransportError::Refused(format!(
            "{target}: HTTP {status} but not a HEC answer: {what}"
        ))),
        (Status::Config, _) => Err(TransportError::Refused(format!(
            "{target}: HTTP {status} {what}: {}",
            http::config_hint(status)
        ))),
        (
            Status::Refused,
            Some(Answer {
                code: Some(code),
                invalid_event,
                text,
            }),
        ) if event_at_fault(*code) => {
            let reason = format!("HEC HTTP {status}: {text} (code {code})");
            Ok(match invalid_event {
                Some(n) if *n < len => Sent {
                    done: n + 1,
                    rejected: vec![(*n, reason)],
                },
                // HEC did not say which event: none of the batch can be trusted to pass.
                _ => Sent {
                    done: len,
                    rejected: (0..len).map(|i| (i, reason.clone())).collect(),
                },
            })
        }
        (
            Status::Refused,
            Some(Answer {
                code: Some(10 | 11 | 14),
                ..
            }),
        ) => Err(TransportError::Refused(format!(
            "{target}: HTTP {status} {what}: the token has indexer acknowledgement on, \
                 which egress-monitor does not use: turn it off for this token"
        ))),
        (Status::Refused, Some(Answer { code: Some(7), .. })) => {
            Err(TransportError::Refused(format!(
                "{target}: HTTP {status} {what}: check index (the token may not be allowed \
                 to write to it)"
            )))
        }
        _ => Err(TransportError::Refused(format!(
            "{target}: HTTP {status} {what}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            endpoint("https://h:8088"),
            "https://h:8088/services/collector/event"
        );
        assert_eq!(
            endpoint("https://h:8088/services/collector/"),
            "https://h:8088/services/collector/event"
        );
        assert_eq!(
            endpoint("https://h/services/collector/event"),
            "https://h/services/collector/event"
        );
        assert_eq!(
            endpoint("https://h/services/collector/event/1.0"),
            "https://h/services/collector/event/1.0"
        );
    }

    #[test]
    fn answers_map_to_what_was_delivered() {
        let t = "https://h/services/collector/event";
        let ok = r#"{"text":"Success","code":0}"#;
        assert_eq!(outcome(200, ok, 3, t).unwrap(), http::delivered(3));
        let bad = r#"{"text":"Invalid data format","code":6,"invalid-event-number":1}"#;
        let sent = outcome(400, bad, 3, t).unwrap();
        assert_eq!(sent.done, 2, "event 0 indexed, 1 refused, 2 sent again");
        assert_eq!(sent.rejected.len(), 1);
        assert_eq!(sent.rejected[0].0, 1);
        assert!(sent.rejected[0].1.contains("Invalid data format (code 6)"));
        let blank = r#"{"text":"Event field cannot be blank","code":13}"#;
        assert_eq!(outcome(400, blank, 2, t).unwrap().rejected.len(), 2);
        let busy = r#"{"text":"Server is busy","code":9}"#;
        let e = outcome(503, busy, 3, t).unwrap_err().to_string();
        assert!(e.contains("HTTP 503 Server is busy (code 9)"), "{e}");
        let index = r#"{"text":"Incorrect index","code":7,"invalid-event-number":0}"#;
        let e = outcome(400, index, 3, t).unwrap_err().to_string();
        assert!(
            e.contains("check index"),
            "a configuration error, not a dead letter: {e}"
        );
        let token = r#"{"text":"Invalid token","code":4}"#;
        let e = outcome(403, token, 1, t).unwrap_err().to_string();
        assert!(e.contains("403") && e.contains("Invalid token"), "{e}");
        let e = outcome(200, "<html>login</html>", 1, t)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not a HEC answer") && e.contains("<html>"),
            "{e}"
        );
        let ack = r#"{"text":"Data channel is missing","code":10}"#;
        let e = outcome(400, ack, 1, t).unwrap_err().to_string();
        assert!(e.contains("indexer acknowledgement"), "{e}");
    }
}
