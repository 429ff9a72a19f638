//! Webhook: one POST per batch to `url`, the body a JSON array of the batch's events in the
//! sink's format (objects for json, ocsf and ecs; strings for cef and text),
//! `Content-Type: application/json`, `Authorization: Bearer <token>` when a token is set.
//!
//! `Idempotency-Key` (IETF httpapi draft): a UUID derived from the batch's event ids, the
//! same when the same batch is sent again, so a receiver can drop a retried request whose
//! answer was lost. Each event carries its own id too (ocsf `metadata.uid`, ecs `event.id`,
//! cef `eventId`) for receivers that deduplicate per event.
//!
//! 2xx: delivered. 408, 409 (key still in progress), 429, 5xx and transport failures: the
//! batch is retried. 401/403/404/405/407/413 and redirects: a configuration error, retried
//! (never dead-lettered: the events are not at fault). Other 4xx: the receiver refuses the
//! content; the batch goes to the dead-letter file with the status and the answer's start.

use serde_json::Value;
use uuid::Uuid;

use super::{
    Format, Reporter,
    http::{self, HttpClient, Secret, SetupError, Status},
    settings::SinkConfig,
    transport::{Sent, Transport, TransportError},
};
use crate::store::Pending;

/// Namespace of batch idempotency keys (UUID v5 of the event ids).
const KEY_NAMESPACE: Uuid = Uuid::from_u128(0x6567_7265_7373_2d6d_6f6e_6974_6f72_0003);

const ANSWER_LIMIT: u64 = 64 * 1024;

pub struct Webhook {
    client: HttpClient,
    url: String,
    authorization: Option<Secret>,
    format: Format,
}

impl Webhook {
    pub fn new(c: &SinkConfig) -> Result<Self, SetupError> {
        let url = c
            .url
            .as_ref()
            .map(|u| u.get_ref().clone())
            .unwrap_or_default();
        let token = http::load_token(c, |name| std::env::var(name).ok())?;
        http::warn_if_plain(c, &url);
        Ok(Self {
            // Off by default: many receivers do not decode gzip request bodies.
            client: HttpClient::new(c, c.gzip.unwrap_or(false))?,
            url,
            authorization: token.map(|t| Secret::new(format!("Bearer {}", t.expose()))),
            format: c.format,
        })
    }
}

/// The same key for the same events in the same order.
pub fn idempotency_key(batch: &[Pending]) -> Uuid {
    let ids: Vec<String> = batch.iter().map(|p| p.event.id().to_string()).collect();
    Uuid::new_v5(&KEY_NAMESPACE, ids.join(",").as_bytes())
}

impl Transport for Webhook {
    fn target(&self) -> String {
        http::redacted(&self.url)
    }

    fn send(&mut self, batch: &[Pending], reporter: &Reporter) -> Result<Sent, TransportError> {
        let events: Vec<Value> = batch
            .iter()
            .map(|p| p.event.value(self.format, reporter))
            .collect();
        let body = serde_json::to_vec(&events).map_err(std::io::Error::other)?;
        let key = idempotency_key(batch).to_string();
        let mut headers = vec![
            ("Content-Type", "application/json"),
            ("Idempotency-Key", key.as_str()),
        ];
        if let Some(a) = &self.authorization {
            headers.push(("Authorization", a.expose()));
        }
        let reply = self.client.post(&self.url, &headers, &body, ANSWER_LIMIT)?;
        let target = self.target();
        let status = reply.status;
        let answer = http::snippet(&reply.body);
        match http::classify(status) {
            Status::Success => Ok(http::delivered(batch.len())),
            Status::Retry => Err(TransportError::Refused(format!(
                "{target}: HTTP {status} {answer}"
            ))),
            Status::Config => Err(TransportError::Refused(format!(
                "{target}: HTTP {status} {answer}: {}",
                http::config_hint(status)
            ))),
            Status::Refused => {
                let reason = format!("HTTP {status} {answer}");
                Ok(Sent {
                    done: batch.len(),
                    rejected: (0..batch.len()).map(|i| (i, reason.clone())).collect(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::fixtures;

    #[test]
    fn the_idempotency_key_follows_the_events() {
        let a = Pending {
            seq: 1,
            event: fixtures::opened().into(),
        };
        let mut second = fixtures::opened();
        second.alert.updates = 3;
        let b = Pending {
            seq: 2,
            event: second.into(),
        };
        let ab = idempotency_key(&[a.clone(), b.clone()]);
        assert_eq!(ab, idempotency_key(&[a.clone(), b.clone()]));
        assert_ne!(ab, idempotency_key(&[b, a.clone()]));
        assert_ne!(ab, idempotency_key(&[a]));
    }
}
